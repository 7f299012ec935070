"""`manage.py operations`: see queued and finished operations, cancel one."""

import argparse

from django.contrib.auth.models import AbstractBaseUser
from django.core.management.base import CommandParser

from collections_app.cli import Exit, QuarryCommand, add_json_option, add_owner_option
from operations.models import Operation
from operations.services import cancel_operation

MIN_PREFIX = 8
_HEX_DIGITS = frozenset("0123456789abcdef")
# The lengths of a UUID's hyphen-separated groups.
_GROUPS = (8, 4, 4, 4, 12)


class Command(QuarryCommand):
    help = "List operations, or cancel one."

    def add_arguments(self, parser: CommandParser) -> None:
        subcommands = parser.add_subparsers(
            title="subcommands", dest="subcommand", required=True, metavar="SUBCOMMAND"
        )
        listing = subcommands.add_parser("list", help="list operations, newest first")
        listing.add_argument(
            "--active", action="store_true", help="only pending and processing ones"
        )
        cancel = subcommands.add_parser(
            "cancel", help="cancel a pending or running one"
        )
        cancel.add_argument(
            "id",
            type=operation_id,
            metavar="ID",
            help=f"an operation id, or a unique prefix of {MIN_PREFIX}+ hex digits",
        )
        for sub, handler in ((listing, self.list_operations), (cancel, self.cancel)):
            add_owner_option(sub)
            add_json_option(sub)
            sub.set_defaults(handler=handler)

    def list_operations(self, owner: AbstractBaseUser, options: dict) -> int:
        operations = Operation.objects.visible_to(owner).select_related("requested_by")
        if options["active"]:
            operations = operations.active()
        operations = list(operations)
        if options["json"]:
            self.print_json([operation.to_dict() for operation in operations])
            return 0
        if not operations:
            self.stdout.write(
                "No active operations." if options["active"] else "No operations."
            )
        for operation in operations:
            self.stdout.write(operation_line(operation))
        return 0

    def cancel(self, owner: AbstractBaseUser, options: dict) -> int:
        operation = find_operation(owner, options["id"])
        operation = cancel_operation(self.request(owner), operation)
        if options["json"]:
            self.print_json(operation.to_dict())
        elif operation.status == Operation.Status.CANCELLED:
            self.stdout.write(f"Operation {operation.id} cancelled.")
        else:
            self.stdout.write(
                f"Operation {operation.id}: cancel requested; it stops after its "
                "current file."
            )
        return 0


def operation_line(operation: Operation) -> str:
    created = operation.created_at.strftime("%Y-%m-%d %H:%M:%S")
    return (
        f"{operation.id}  {created}  {operation.status:<10}  {operation.type:<13}  "
        f"{operation.percent:>3}% {operation.done}/{operation.total} {operation.step}  "
        f"{operation.collection_name}"
    )


def operation_id(text: str) -> str:
    """The hex digits of an id or id prefix, refused when too short or not hex."""
    digits = text.strip().lower().replace("-", "")
    if not (MIN_PREFIX <= len(digits) <= 32 and set(digits) <= _HEX_DIGITS):
        raise argparse.ArgumentTypeError(
            f"'{text}' is not an operation id or a prefix of at least "
            f"{MIN_PREFIX} hex digits"
        )
    return digits


def find_operation(owner: AbstractBaseUser, digits: str) -> Operation:
    operations = Operation.objects.visible_to(owner)
    # Hyphens as in the UUID's text: PostgreSQL matches the prefix against
    # that; SQLite stores bare hex and Django strips them for it.
    matches = list(operations.filter(id__startswith=_hyphenated(digits))[:2])
    if not matches:
        user = owner.get_username()
        raise Exit(1, f"No operation with an id starting {digits} for user '{user}'")
    if len(matches) > 1:
        raise Exit(1, f"More than one operation has an id starting {digits}")
    return matches[0]


def _hyphenated(digits: str) -> str:
    groups, start = [], 0
    for size in _GROUPS:
        groups.append(digits[start : start + size])
        start += size
    return "-".join(group for group in groups if group)
