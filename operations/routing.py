"""WebSocket routes, wrapped in the origin check and session authentication."""

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path


def websocket_application():
    from operations.consumers import OperationsConsumer

    routes = [path("ws/operations/", OperationsConsumer.as_asgi())]
    return AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(routes)))
