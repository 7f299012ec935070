"""`manage.py metrics_exporter`: serve this host's metrics where no web process runs.

Steps:
1. Bind the first free port of METRICS_PORT_RANGE (binding is the test, so
   two exporters starting together never pick the same port); log it once.
2. Serve GET /metrics: every process's metrics from PROMETHEUS_MULTIPROC_DIR,
   to the clients `webui.metrics.client_may_scrape` allows.
3. Stop cleanly on SIGTERM or SIGINT.
If every port is taken it logs one ERROR naming the range and exits 1.

`--clear` instead empties PROMETHEUS_MULTIPROC_DIR and exits: launchers run it
before starting a host's processes (`make run` does).
"""

import errno
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import prometheus_client
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from webui import metrics

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Serve this host's metrics on the first free port of METRICS_PORT_RANGE, "
        "or empty PROMETHEUS_MULTIPROC_DIR with --clear."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--host",
            default="0.0.0.0",
            help="Address to listen on (default: every IPv4 interface; access is "
            "still limited to METRICS_ALLOWED_IPS or METRICS_TOKEN).",
        )
        parser.add_argument(
            "--clear",
            action="store_true",
            help="Empty PROMETHEUS_MULTIPROC_DIR and exit; run it before starting "
            "the host's processes.",
        )

    def handle(self, *args, **options) -> None:
        if options["clear"]:
            self._clear()
            return
        if not metrics.multiprocess_active():
            raise CommandError(
                "prometheus_client is not in multiprocess mode: "
                "PROMETHEUS_MULTIPROC_DIR was not set before it was imported"
            )
        ports = settings.METRICS_PORT_RANGE
        server = bind_first_free(options["host"], ports, metrics_app)
        if server is None:
            logger.error(
                "Metrics exporter not started: every port of METRICS_PORT_RANGE "
                "(%s) is taken on %s; widen the range or stop an exporter",
                _range_text(ports),
                options["host"],
            )
            sys.exit(1)
        port = server.server_address[1]
        logger.info(
            "Serving this host's metrics on http://%s:%d/metrics (from %s)",
            options["host"],
            port,
            metrics.multiprocess_directory(),
        )
        serve_until_signalled(server)
        logger.info("Metrics exporter on port %d stopped", port)

    def _clear(self) -> None:
        directory = metrics.multiprocess_directory()
        try:
            removed = metrics.clear_directory(directory)
        except ValueError as exc:
            raise CommandError(
                f"Not clearing PROMETHEUS_MULTIPROC_DIR: {exc}"
            ) from None
        logger.info("Cleared %d metric file(s) from %s", removed, directory)


def _range_text(ports: range) -> str:
    return str(ports[0]) if len(ports) == 1 else f"{ports[0]}-{ports[-1]}"


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """Scrapes every few seconds would fill the log; refusals are logged apart."""

    def log_message(self, format: str, *args) -> None:
        pass


def bind_first_free(
    host: str, ports: Iterable[int], app: Callable
) -> WSGIServer | None:
    """A server bound to the first port nobody holds, or None when all are held.

    Only "address in use" moves on to the next port; any other failure (an
    address this host does not have, a privileged port) is raised.
    """
    server_class = _IPv6Server if ":" in host else _Server
    for port in ports:
        try:
            return make_server(host, port, app, server_class, _QuietHandler)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise CommandError(
                    f"Metrics exporter cannot listen on {host}:{port}: {exc.strerror}"
                ) from None
    return None


def metrics_app(environ: dict, start_response: Callable) -> list[bytes]:
    """WSGI: /metrics for allowed clients, 403 for others, 404 elsewhere."""
    if environ.get("PATH_INFO") not in ("/metrics", "/metrics/"):
        return _respond(start_response, "404 Not Found", b"Not found: try /metrics\n")
    if environ.get("REQUEST_METHOD") != "GET":
        return _respond(start_response, "405 Method Not Allowed", b"Use GET\n")
    remote_addr = environ.get("REMOTE_ADDR")
    allowed, reason = metrics.client_may_scrape(
        remote_addr,
        environ.get("HTTP_AUTHORIZATION"),
        forwarded="HTTP_X_FORWARDED_FOR" in environ,
    )
    if not allowed:
        metrics.log_refusal(remote_addr, reason, "the exporter")
        return _respond(
            start_response,
            "403 Forbidden",
            b"Forbidden: metrics answer only to METRICS_ALLOWED_IPS or a bearer "
            b"token.\n",
        )
    body = metrics.exposition(include_queue=False)
    return _respond(
        start_response, "200 OK", body, prometheus_client.CONTENT_TYPE_LATEST
    )


def _respond(
    start_response: Callable,
    status: str,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
) -> list[bytes]:
    start_response(
        status, [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    )
    return [body]


def serve_until_signalled(server: WSGIServer) -> None:
    """Serve in a thread; SIGTERM or SIGINT shuts the server down cleanly."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    thread = threading.Thread(
        target=server.serve_forever, name="metrics-exporter", daemon=True
    )
    thread.start()
    try:
        while not stop.wait(1.0):
            if not thread.is_alive():
                break
    finally:
        server.shutdown()
        server.server_close()
