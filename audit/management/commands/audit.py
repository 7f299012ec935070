"""`manage.py audit`: list audit entries, or prune old ones."""

import argparse
import uuid
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from audit.encoding import display_json
from audit.models import AuditLog

PRUNE_BATCH = 1000
DEFAULT_LIMIT = 50


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number") from None


class Command(BaseCommand):
    help = "List audit entries, or delete old ones."

    def add_arguments(self, parser: CommandParser) -> None:
        subcommands = parser.add_subparsers(
            title="subcommands", dest="subcommand", required=True, metavar="SUBCOMMAND"
        )
        listing = subcommands.add_parser("list", help="list entries, newest first")
        listing.add_argument(
            "--collection", metavar="NAME", help="a collection's name or id"
        )
        listing.add_argument(
            "--action",
            choices=AuditLog.Action.values,
            metavar="ACTION",
            help="only this action, such as operation.failed",
        )
        listing.add_argument(
            "--limit",
            type=whole_number,
            default=DEFAULT_LIMIT,
            metavar="N",
            help=f"at most N entries (default {DEFAULT_LIMIT}; 0 for all)",
        )
        listing.add_argument(
            "--json", action="store_true", help="print only JSON on standard output"
        )
        listing.set_defaults(handler=self.list_entries)
        prune = subcommands.add_parser("prune", help="delete entries older than DAYS")
        prune.add_argument(
            "--older-than",
            type=whole_number,
            required=True,
            metavar="DAYS",
            dest="days",
            help="age in days, at least 1",
        )
        prune.set_defaults(handler=self.prune)

    def handle(self, *args: Any, **options: Any) -> None:
        options["handler"](options)

    def list_entries(self, options: dict) -> None:
        if options["limit"] < 0:
            raise CommandError("--limit must be 0 or more.", returncode=2)
        entries = AuditLog.objects.order_by("-created_at", "-id")
        if options["collection"]:
            entries = _for_collection(entries, options["collection"])
        if options["action"]:
            entries = entries.filter(action=options["action"])
        if options["limit"]:
            entries = entries[: options["limit"]]
        if options["json"]:
            self.stdout.write(display_json([entry.to_dict() for entry in entries]))
            return
        written = False
        for entry in entries:
            self.stdout.write(entry_line(entry))
            written = True
        if not written:
            self.stdout.write("No audit entries.")

    def prune(self, options: dict) -> None:
        days = options["days"]
        if days < 1:
            raise CommandError(
                f"--older-than must be at least 1 day, not {days}.", returncode=2
            )
        cutoff = timezone.now() - timedelta(days=days)
        deleted = delete_before(cutoff)
        self.stdout.write(
            f"Deleted {deleted} audit entries older than {days} days "
            f"(before {cutoff:%Y-%m-%d %H:%M:%S %Z})."
        )


def _for_collection(entries: QuerySet, name_or_id: str) -> QuerySet:
    try:
        return entries.for_collection(uuid.UUID(name_or_id))
    except ValueError:
        return entries.filter(collection_name=name_or_id)


def delete_before(cutoff) -> int:
    """Delete in batches, each its own transaction, so writers are not held up."""
    total = 0
    old = AuditLog.objects.filter(created_at__lt=cutoff).order_by("id")
    while ids := list(old.values_list("id", flat=True)[:PRUNE_BATCH]):
        with transaction.atomic():
            deleted, _ = AuditLog.objects.filter(id__in=ids).delete()
        total += deleted
    return total


def entry_line(entry: AuditLog) -> str:
    created = timezone.localtime(entry.created_at).strftime("%Y-%m-%d %H:%M:%S")
    actor = entry.actor_name + (f"@{entry.remote_addr}" if entry.remote_addr else "")
    # Names and details as JSON text, so every entry stays on one line.
    collection = display_json(entry.collection_name, indent=None)
    details = display_json(entry.details_decoded(), indent=None)
    return f"{created}  {entry.action:<28}  {actor:<20}  {collection}  {details}"
