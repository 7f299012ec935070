"""WebSocket routes, wrapped in the origin check and session authentication.

Channels' `AllowedHostsOriginValidator` refuses a missing or foreign Origin
without a word, which leaves an operator behind a proxy guessing. The
validator here applies the same rule and logs each refusal once, with the
client, the origin and the reason.
"""

import logging
from urllib.parse import ParseResult, urlparse

from channels.auth import AuthMiddlewareStack
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.routing import URLRouter
from channels.security.websocket import OriginValidator, WebsocketDenier
from django.conf import settings
from django.urls import path, re_path

logger = logging.getLogger(__name__)


def client_address(scope: dict) -> str:
    client = scope.get("client")
    if not client:
        return "an unknown address"
    host, port = client[0], client[1] if len(client) > 1 else None
    return f"{host}:{port}" if port else str(host)


def _origin_header(scope: dict) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"origin":
            return value.decode("latin1")
    return None


class LoggedOriginValidator(OriginValidator):
    """Refuse sockets whose Origin is missing or not in ALLOWED_HOSTS, and say why."""

    async def __call__(self, scope, receive, send):
        origin = _origin_header(scope)
        if self.valid_origin(self._parse(origin)):
            return await self.application(scope, receive, send)
        self._log_refusal(scope, origin)
        return await WebsocketDenier()(scope, receive, send)

    @staticmethod
    def _parse(origin: str | None) -> ParseResult | None:
        if origin is None:
            return None
        try:
            parsed = urlparse(origin)
            parsed.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            return urlparse("")
        return parsed

    def _log_refusal(self, scope: dict, origin: str | None) -> None:
        allowed = ", ".join(self.allowed_origins) or "nothing"
        if origin is None:
            logger.info(
                "Refused live events socket from %s to %s: no Origin header (browsers "
                "send one; a proxy may be stripping it)",
                client_address(scope),
                scope.get("path", ""),
            )
            return
        logger.warning(
            "Refused live events socket from %s to %s: origin %r is not in "
            "ALLOWED_HOSTS (%s); if this is Quarry's own address, add its host to "
            "ALLOWED_HOSTS",
            client_address(scope),
            scope.get("path", ""),
            origin,
            allowed,
        )


class UnknownSocket(AsyncWebsocketConsumer):
    """Any other WebSocket path: refused with a log line instead of a traceback."""

    async def connect(self) -> None:
        logger.info(
            "Refused WebSocket from %s: no socket at %s",
            client_address(self.scope),
            self.scope.get("path", ""),
        )
        await self.close()


def allowed_origins() -> list[str]:
    # Django's own rule: with DEBUG and no ALLOWED_HOSTS, local names are allowed.
    if settings.DEBUG and not settings.ALLOWED_HOSTS:
        return ["localhost", "127.0.0.1", "[::1]"]
    return list(settings.ALLOWED_HOSTS)


def websocket_application():
    from operations.consumers import OperationsConsumer

    routes = [
        path("ws/operations/", OperationsConsumer.as_asgi()),
        re_path(r"", UnknownSocket.as_asgi()),
    ]
    return LoggedOriginValidator(
        AuthMiddlewareStack(URLRouter(routes)), allowed_origins()
    )
