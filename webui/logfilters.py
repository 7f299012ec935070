"""Log filters that keep the console readable for operators."""

import logging


class QuietSecurityEvents(logging.Filter):
    """Django's security events (a forged Host header, a bad CSRF token) as one
    WARNING line: they are refusals of bad requests, not failures of Quarry,
    and a client could otherwise fill the log with tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("django.security"):
            record.exc_info = None
            record.exc_text = None
            if record.levelno > logging.WARNING:
                record.levelno = logging.WARNING
                record.levelname = "WARNING"
        return True
