"""What Quarry's management commands share: the owner they act for, JSON
output, ending with one line and an exit code, and following an operation.
"""

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.management.base import BaseCommand, CommandParser, OutputWrapper

from collections_app.models import Collection
from collections_app.services import Request, ServiceError
from operations.models import Operation

POLL_SECONDS = 0.5
PLAIN_LINE_SECONDS = 1.0
PLAIN_LINE_PERCENT = 10
BAR_WIDTH = 30
FOLLOW_HINT = "follow it with `manage.py operations list --active`"


class Exit(Exception):
    """End the command: `message` (one line) on stderr, then exit with `code`."""

    def __init__(self, code: int, message: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message


class QuarryCommand(BaseCommand):
    """A command whose parser names its handler with `set_defaults(handler=...)`.

    Every command takes --owner; the handler gets that user and the options
    and returns the exit code. A refusal (ServiceError, Exit) ends the command
    with one line on stderr and a non-zero exit, never a traceback.
    """

    def handle(self, *args: Any, **options: Any) -> None:
        # Django colours stderr red on a terminal; progress and summaries are
        # not errors.
        self.stderr.style_func = None
        try:
            owner = resolve_owner(options["owner"])
            code = options["handler"](owner, options)
        except ServiceError as exc:
            code = self.refuse(1, exc.message)
        except Exit as exc:
            code = self.refuse(exc.code, exc.message)
        except BrokenPipeError:
            code = _reader_left()
        if code:
            sys.exit(code)

    def refuse(self, code: int, message: str) -> int:
        if message:
            self.stderr.write(" ".join(message.splitlines()))
        return code

    def print_json(self, data: Any) -> None:
        self.stdout.write(json.dumps(data, ensure_ascii=False, indent=2))

    def request(self, owner: AbstractBaseUser) -> Request:
        return Request(user=owner, remote_addr=None)

    def report(self, operation: Operation, options: dict) -> int:
        """Print a just-requested operation, following it first with --wait."""
        if options["wait"]:
            operation = follow(operation.id, self.stderr)
            if options["json"]:
                self.print_json(operation.to_dict())
                self.stderr.write(summary(operation))
            else:
                self.stdout.write(summary(operation))
            return exit_code(operation)
        operation.refresh_from_db()
        if options["json"]:
            self.print_json(operation.to_dict())
        elif operation.awaits_queue:
            self.stdout.write(
                f"Operation {describe(operation)} is pending: the task queue did not "
                f"answer, it is queued again once it does; {FOLLOW_HINT}"
            )
        elif operation.is_active:
            self.stdout.write(
                f"Operation {describe(operation)} is {operation.status}: queued; "
                f"{FOLLOW_HINT}"
            )
        else:
            self.stdout.write(summary(operation))
        return 0


def _reader_left() -> int:
    """The reader of stdout (`| head`) has gone: exit quietly, not with a traceback."""
    # Python flushes stdout again at exit and would report the broken pipe.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1


def add_owner_option(parser: CommandParser) -> None:
    parser.add_argument(
        "--owner",
        metavar="USER",
        help="act as this user (default: the oldest active superuser)",
    )


def add_json_option(parser: CommandParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print only JSON on standard output"
    )


def add_wait_option(parser: CommandParser) -> None:
    parser.add_argument(
        "--wait",
        action="store_true",
        help="follow the operation until it ends; exit 1 unless it completes",
    )


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not at least 1")
    return value


def resolve_owner(username: str | None) -> AbstractBaseUser:
    """The user named by --owner, or the oldest active superuser."""
    users = get_user_model().objects.filter(is_active=True)
    if username is None:
        admin = users.filter(is_superuser=True).order_by("id").first()
        if admin is None:
            raise Exit(
                2,
                "No admin user exists: pass --owner USER, or create the admin "
                "with `manage.py setup` or `manage.py createsuperuser`.",
            )
        return admin
    user = users.filter(**{get_user_model().USERNAME_FIELD: username}).first()
    if user is None:
        raise Exit(1, f"No active user named '{username}'.")
    return user


def find_collection(owner: AbstractBaseUser, name: str) -> Collection:
    collection = Collection.objects.filter(owner=owner, name=name).first()
    if collection is None:
        raise Exit(1, f"No collection named '{name}' for user '{owner.get_username()}'")
    return collection


def describe(operation: Operation) -> str:
    return f"{operation.id} ({operation.type} of {operation.collection_name})"


def summary(operation: Operation) -> str:
    counts = ", ".join(f"{name} {value}" for name, value in operation.counts().items())
    line = f"Operation {describe(operation)} {operation.status}: {counts}"
    if operation.error:
        line += f"; error: {operation.error}"
    return line


def exit_code(operation: Operation) -> int:
    return 0 if operation.status == Operation.Status.COMPLETED else 1


class PlainProgress:
    """A line per noticeable change, at most one a second: for logs and pipes."""

    def __init__(
        self, stream: OutputWrapper, clock: Callable[[], float] = time.monotonic
    ):
        self.stream = stream
        self.clock = clock
        self.shown: tuple[str, int] | None = None
        self.shown_at = 0.0

    def show(self, operation: Operation) -> None:
        now = self.clock()
        if self.shown is not None:
            step, percent = self.shown
            changed = operation.step != step or (
                abs(operation.percent - percent) >= PLAIN_LINE_PERCENT
            )
            if not changed or now - self.shown_at < PLAIN_LINE_SECONDS:
                return
        self.stream.write(
            f"{operation.id}: {operation.status}, {operation.step} "
            f"{operation.percent}% ({operation.done}/{operation.total})"
        )
        self.shown = (operation.step, operation.percent)
        self.shown_at = now

    def close(self, operation: Operation | None) -> None:
        pass


class BarProgress:
    """One line redrawn in place: for a person watching a terminal."""

    def __init__(self, stream: OutputWrapper):
        self.stream = stream
        self.line = ""

    def show(self, operation: Operation) -> None:
        filled = BAR_WIDTH * operation.percent // 100
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        line = (
            f"[{bar}] {operation.percent:3d}% "
            f"{operation.done}/{operation.total} {operation.step}"
        )
        remaining = operation.remaining_seconds()
        if remaining is not None and remaining >= 1:
            line += f", about {_duration(remaining)} left"
        if line == self.line:
            return
        # Pad to the previous width so a shorter line leaves no leftovers.
        self.stream.write("\r" + line.ljust(len(self.line)), ending="")
        self.stream.flush()
        self.line = line

    def close(self, operation: Operation | None) -> None:
        if not self.line:
            return
        if operation is not None:
            self.show(operation)
        self.stream.write("")


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def follow(operation_id: uuid.UUID, stderr: OutputWrapper) -> Operation:
    """Re-read the operation until it ends, showing progress on stderr.

    Ctrl-C stops the waiting only (the operation is left running) and ends
    the command with exit code 130.
    """
    display = BarProgress(stderr) if stderr.isatty() else PlainProgress(stderr)
    try:
        while True:
            operation = Operation.objects.select_related("requested_by").get(
                id=operation_id
            )
            if not operation.is_active:
                display.close(operation)
                return operation
            display.show(operation)
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        display.close(None)
        raise Exit(
            130,
            f"Stopped waiting; operation {operation_id} keeps running: "
            f"{FOLLOW_HINT}, or stop it with `manage.py operations cancel "
            f"{operation_id}`.",
        ) from None
