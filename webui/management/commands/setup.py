"""`manage.py setup`: write .env, migrate, create the admin, check the machine.

Steps:
1. Choose each setting: environment first, then the existing .env, then the
   default; generate secrets once. Never prompts: values come from the
   environment and .env (interactive questions are not built yet).
2. Write .env (mode 0600), keeping existing values; `--reset` backs it up
   and starts over.
3. Create the data directory and migrate the database.
4. Create or update the admin from QUARRY_ADMIN_USERNAME / _PASSWORD / _EMAIL.
5. Check what the embedded default needs and print the outcome.
"""

import logging
import os
import sys
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from webui import envfile

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Write .env, migrate, create the admin user and check the environment."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--noinput", "--no-input", action="store_true", help="Never prompt."
        )
        parser.add_argument(
            "--reset", action="store_true", help="Back up .env and start from defaults."
        )
        parser.add_argument(
            "--env-file", default=str(settings.ENV_FILE), help="Where .env lives."
        )

    def handle(self, *args, **options) -> None:
        path = Path(options["env_file"])
        logger.info(
            "Running setup non-interactively: values come from the environment, "
            "then %s, then defaults",
            path,
        )
        values = self._write_env(path, options["reset"])
        self._prepare_database()
        self._ensure_admin()
        self._report(path, values)

    def _write_env(self, path: Path, reset: bool) -> dict[str, tuple[str, str]]:
        if reset:
            saved = envfile.backup(path)
            if saved:
                self.stdout.write(f"Backed up {path} to {saved}")
            existing: dict[str, str] = {}
        else:
            existing = envfile.read(path)
        try:
            chosen = envfile.resolve(existing)
        except envfile.InvalidValue as exc:
            raise CommandError(f"Setting {exc.key} is invalid: {exc.message}") from None
        extra = {k: v for k, v in existing.items() if k not in envfile.KEYS_BY_NAME}
        envfile.write(path, {k: v for k, (v, _) in chosen.items()}, extra)
        return chosen

    def _prepare_database(self) -> None:
        Path(settings.DATA_DIR).mkdir(parents=True, exist_ok=True)
        call_command("migrate", interactive=False, verbosity=0)

    def _ensure_admin(self) -> None:
        username = os.environ.get("QUARRY_ADMIN_USERNAME", "").strip()
        password = os.environ.get("QUARRY_ADMIN_PASSWORD", "")
        email = os.environ.get("QUARRY_ADMIN_EMAIL", "").strip()
        if not username or not password:
            if not get_user_model().objects.filter(is_superuser=True).exists():
                self.stdout.write(
                    "No admin user created: set QUARRY_ADMIN_USERNAME and "
                    "QUARRY_ADMIN_PASSWORD and run setup again, or run "
                    "`python manage.py createsuperuser`."
                )
            return
        user, created = get_user_model().objects.get_or_create(
            username=username, defaults={"email": email}
        )
        user.is_staff = user.is_superuser = True
        if email:
            user.email = email
        user.set_password(password)
        user.save()
        self.stdout.write(f"Admin user {username!r} {'created' if created else 'updated'}.")

    def _report(self, path: Path, chosen: dict[str, tuple[str, str]]) -> None:
        self.stdout.write(f"Wrote {path}:")
        for name, (value, origin) in chosen.items():
            shown = "(hidden)" if envfile.KEYS_BY_NAME[name].secret else value or "(empty)"
            self.stdout.write(f"  {name} = {shown}  [{origin}]")
        problems = list(check_environment())
        for problem in problems:
            self.stderr.write(f"Problem: {problem}")
        if problems:
            sys.exit(1)
        self.stdout.write("Setup complete. Start Quarry with `make run`.")


def check_environment():
    """Yield one line per prerequisite that is not met."""
    data_dir = Path(settings.DATA_DIR)
    if not os.access(data_dir, os.W_OK):
        yield f"DATA_DIR {data_dir} is not writable"
    for root in settings.DOCUMENT_ROOTS:
        if not Path(root).is_dir() or not os.access(root, os.R_OK | os.X_OK):
            yield f"DOCUMENT_ROOTS entry {root} is not a readable folder"
    try:
        connection.ensure_connection()
    except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
        yield f"Database is not reachable: {exc}"
