"""Start daphne on WEB_HOST:WEB_PORT from the settings, as the Procfile's web process."""

import os

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve HTTP and WebSockets with daphne on WEB_HOST:WEB_PORT."

    def handle(self, *args, **options) -> None:
        self.stdout.write(
            f"Quarry web on http://{settings.WEB_HOST}:{settings.WEB_PORT}/",
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
