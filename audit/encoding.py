"""Make any details JSON-storable on every backend, and read them back exactly.

Rule: a string (value or key) that holds NUL or a lone surrogate, which
PostgreSQL's jsonb refuses, or that starts with the marker below, is stored as
the marker followed by the base64 of its UTF-8 bytes (surrogates passed
through). `decode` reverses it, so every string round-trips. Strings longer
than MAX_STRING are cut and end with a note saying how much was cut; values
under keys that look secret are replaced by REDACTED.
"""

import base64
import re
from typing import Any

MARKER = "\ufdd0b64:"
MAX_STRING = 8192
MAX_DEPTH = 20
REDACTED = "[redacted]"
_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|api[_\- ]?key|credential", re.I)
_SURROGATE = re.compile("[\ud800-\udfff]")


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def _needs_encoding(text: str) -> bool:
    return "\x00" in text or text.startswith(MARKER) or bool(_SURROGATE.search(text))


def encode_string(text: str) -> str:
    if len(text) > MAX_STRING:
        cut = len(text) - MAX_STRING
        text = f"{text[:MAX_STRING]}… [truncated {cut} characters]"
    if not _needs_encoding(text):
        return text
    raw = text.encode("utf-8", "surrogatepass")
    return MARKER + base64.b64encode(raw).decode("ascii")


def decode_string(text: str) -> str:
    if not text.startswith(MARKER):
        return text
    raw = base64.b64decode(text[len(MARKER) :])
    return raw.decode("utf-8", "surrogatepass")


def encode(value: Any, depth: int = 0) -> Any:
    """Details as stored: strings made safe, secrets redacted, depth bounded."""
    if depth > MAX_DEPTH:
        return "[too deep]"
    if isinstance(value, str):
        return encode_string(value)
    if isinstance(value, dict):
        return {
            encode_string(str(k)): REDACTED
            if is_secret_key(str(k))
            else encode(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [encode(v, depth + 1) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return encode_string(str(value))


def decode(value: Any) -> Any:
    if isinstance(value, str):
        return decode_string(value)
    if isinstance(value, dict):
        return {decode_string(k): decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value
