"""`manage.py setup`: write .env, migrate, create the admin, check the machine.

Steps:
1. Choose each setting. An invalid value of a setting setup does not ask for
   stops it first, naming the variable: no answer could fix it. On a terminal,
   ask (webui.setup_wizard), each answer checked before the next. Otherwise
   (`--noinput`, or standard input is not a terminal) never prompt: take the
   environment, then the existing .env, then the defaults; an invalid value
   stops here, naming the variable.
2. Write .env atomically with mode 0600, keeping secrets and unknown keys;
   `--reset` backs it up and starts from the defaults.
3. Apply it in a fresh `setup --apply` process, since this process loaded its
   settings before .env was written: create DATA_DIR, migrate, create or
   update the admin (its password arrives hashed on standard input), and run
   the checks of `--check` but the worker heartbeat (the worker starts later).

`setup --check` only prints the prerequisites table and exits non-zero if one fails.
"""

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from webui import envfile, setup_admin, setup_checks
from webui.setup_wizard import Prompter, Wizard

logger = logging.getLogger(__name__)

INTERRUPTED = 130


class Command(BaseCommand):
    help = "Write .env (asking on a terminal), migrate, create the admin, check."
    # Setup is what repairs a broken configuration, so nothing may stop it early.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--noinput",
            "--no-input",
            action="store_true",
            help="Never prompt: take the environment, then .env, then defaults.",
        )
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Back up .env and start over from the environment and defaults.",
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="Only check the prerequisites; exit non-zero if one fails.",
        )
        parser.add_argument("--apply", action="store_true", help=argparse.SUPPRESS)

    def handle(self, *args, **options) -> None:
        if options["apply"]:
            return self.apply_env()
        if options["check"]:
            return self.check_prerequisites()

        path = Path(settings.ENV_FILE)
        environment = real_environment()
        existing = {} if options["reset"] else envfile.read(path)
        unasked = envfile.unasked_problems(
            getattr(settings, "INVALID_SETTINGS", []), {**existing, **environment}
        )
        if options["noinput"] or not sys.stdin.isatty():
            reason = (
                "--noinput" if options["noinput"] else "no terminal on standard input"
            )
            values, admin = self.decide(path, existing, environment, reason, unasked)
        else:
            self.stop_for(path, unasked)
            values, admin = self.ask(path, existing, environment)
        self.write(path, values, existing, options["reset"])
        self.run_apply(path, admin)

    def decide(
        self,
        path: Path,
        existing: Mapping[str, str],
        environment: Mapping[str, str],
        reason: str,
        unasked: list[str],
    ) -> tuple[dict[str, str], setup_admin.Admin]:
        logger.info(
            "Running setup non-interactively (%s): values come from the environment, "
            "then %s, then defaults",
            reason,
            path,
        )
        chosen, problems = envfile.resolve(existing, environment)
        admin, admin_problems = setup_admin.from_values(environment, existing)
        self.stop_for(path, [*unasked, *problems, *admin_problems])
        self.stdout.write(f"Settings for {path}:")
        width = max(len(name) for name in chosen)
        for name, (value, origin) in chosen.items():
            shown = "(hidden)" if envfile.KEYS_BY_NAME[name].secret else value
            shown = envfile.masked_url(shown) if "://" in shown else shown or "(empty)"
            self.stdout.write(f"  {name:<{width}}  {shown}  [{origin}]")
        return {name: choice.value for name, choice in chosen.items()}, admin

    def stop_for(self, path: Path, problems: list[str | envfile.InvalidValue]) -> None:
        """Print each problem on its own line and stop, when there is one."""
        for problem in problems:
            self.stderr.write(str(problem))
        if problems:
            values = "values" if len(problems) > 1 else "value"
            raise CommandError(
                f"Setup stopped, {path} is unchanged: fix the {values} above."
            )

    def ask(
        self, path: Path, existing: Mapping[str, str], environment: Mapping[str, str]
    ) -> tuple[dict[str, str], setup_admin.Admin]:
        current, problems = envfile.resolve(existing, environment)
        prompter = Prompter(sys.stdout, self.style.ERROR)
        notes = [f"{problem}; the default is offered instead" for problem in problems]
        wizard = Wizard(prompter, current, existing, environment, path, notes)
        try:
            return wizard.run()
        except (KeyboardInterrupt, EOFError) as exc:
            wizard.undo()
            self.stderr.write(f"\nSetup cancelled; {path} is unchanged.")
            sys.exit(INTERRUPTED if isinstance(exc, KeyboardInterrupt) else 1)

    def write(
        self,
        path: Path,
        values: Mapping[str, str],
        existing: Mapping[str, str],
        reset: bool,
    ) -> None:
        if reset:
            saved = envfile.backup(path)
            if saved:
                self.stdout.write(f"Backed up the previous settings to {saved}")
        extra = {name: value for name, value in existing.items() if name not in values}
        try:
            envfile.write(path, values, extra)
        except envfile.InvalidValue as exc:
            raise CommandError(f"{exc}; {path} is unchanged") from None
        except OSError as exc:
            raise CommandError(f"Cannot write {path}: {exc.strerror}") from None
        self.stdout.write(f"Wrote {path} (mode 0600).")

    def run_apply(self, path: Path, admin: setup_admin.Admin) -> None:
        """Run `setup --apply` on the new .env; exit with its status if it fails."""
        environment = {
            name: value
            for name, value in real_environment().items()
            if name not in envfile.ADMIN_KEYS
        }
        environment["QUARRY_ENV_FILE"] = str(path)
        sys.stdout.flush()
        process = subprocess.Popen(
            [
                sys.executable,
                str(Path(settings.BASE_DIR) / "manage.py"),
                "setup",
                "--apply",
            ],
            stdin=subprocess.PIPE,
            env=environment,
            text=True,
        )
        try:
            process.communicate(admin.to_json())
        except KeyboardInterrupt:
            process.wait()
            self.stderr.write(
                f"\nInterrupted after writing {path}: run setup again to finish."
            )
            sys.exit(INTERRUPTED)
        if process.returncode:
            # A child killed by a signal reports -signal; a shell would say 128+signal.
            code = process.returncode
            sys.exit(128 - code if code < 0 else code)

    def apply_env(self) -> None:
        admin = setup_admin.Admin()
        if not sys.stdin.isatty():
            admin = setup_admin.Admin.from_json(sys.stdin.read())
        try:
            if self.prepare_database():
                self.stdout.write(setup_admin.apply(admin))
            outcomes = setup_checks.run(worker=False)
        except KeyboardInterrupt:
            # The parent process reports the interruption.
            sys.exit(INTERRUPTED)
        self.print_table(outcomes)
        failed = [outcome for outcome in outcomes if not outcome.ok]
        if failed:
            self.stderr.write(
                f"Setup wrote .env but {len(failed)} prerequisite(s) failed: fix them, "
                "then run `python manage.py setup --check`."
            )
            sys.exit(1)
        done = "Setup complete."
        # Under make, setup is the .env rule of `make run`, which starts Quarry next.
        if "MAKELEVEL" not in os.environ:
            done += " Start Quarry with `make run`."
        self.stdout.write(self.style.SUCCESS(done))

    def prepare_database(self) -> bool:
        data_dir = Path(settings.DATA_DIR)
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.stderr.write(
                f"Setting DATA_DIR: cannot create {data_dir}: {exc.strerror}"
            )
            return False
        try:
            pending = pending_migrations()
            call_command("migrate", interactive=False, verbosity=0)
        except Exception as exc:  # noqa: BLE001 - reported with its fix, then checked
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self.stderr.write(
                f"Cannot migrate the database (DATABASE_URL): {first_line}"
            )
            return False
        if pending:
            self.stdout.write(f"Database migrated: {pending} migrations applied.")
        else:
            self.stdout.write("Database is up to date.")
        return True

    def check_prerequisites(self) -> None:
        outcomes = setup_checks.run(worker=True)
        self.print_table(outcomes)
        failed = [outcome for outcome in outcomes if not outcome.ok]
        if failed:
            self.stderr.write(f"{len(failed)} of {len(outcomes)} prerequisites failed.")
            sys.exit(1)
        self.stdout.write(
            self.style.SUCCESS(f"All {len(outcomes)} prerequisites are met.")
        )

    def print_table(self, outcomes: list[setup_checks.Outcome]) -> None:
        self.stdout.write("")
        for line in setup_checks.table(outcomes):
            self.stdout.write(line)
        self.stdout.write("")


def real_environment() -> dict[str, str]:
    """The process environment without what the settings copied in from .env."""
    names = getattr(settings, "ENVIRONMENT_NAMES", None)
    if names is None:
        return dict(os.environ)
    return {name: value for name, value in os.environ.items() if name in names}


def pending_migrations() -> int:
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    return len(executor.migration_plan(executor.loader.graph.leaf_nodes()))
