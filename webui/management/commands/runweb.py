"""Start daphne on WEB_HOST:WEB_PORT from the settings, as the Procfile's web process."""

import os

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connection


class Command(BaseCommand):
    help = "Serve HTTP and WebSockets with daphne on WEB_HOST:WEB_PORT."

    def handle(self, *args, **options) -> None:
        # Connecting runs the live-connection checks (webui.sqlite): database
        # settings that did not take effect stop start-up here, not at the
        # first request. manage.py prints the ImproperlyConfigured in one line.
        connection.ensure_connection()
        connection.close()
        self.stdout.write(
            f"Starting Quarry web on http://{settings.WEB_HOST}:{settings.WEB_PORT}/",
            ending="\n",
        )
        self.stdout.flush()
        daphne = os.path.join(os.path.dirname(os.sys.executable), "daphne")
        os.execv(
            daphne,
            [
                daphne,
                "-b",
                settings.WEB_HOST,
                "-p",
                str(settings.WEB_PORT),
                "--proxy-headers",
                "webui.asgi:application",
            ],
        )
