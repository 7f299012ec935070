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
from collections_app.cli import Exit, resolve_owner
from collections_app.models import Collection

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
            "--owner",
            metavar="USER",
            help="whose collection NAME is (default: the oldest active superuser)",
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
            entries = _for_collection(entries, options["collection"], options["owner"])
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


def _for_collection(
    entries: QuerySet, name_or_id: str, owner_name: str | None
) -> QuerySet:
    """The whole history of the collection with this id, or of the owner's
    collection with this name; a name no live collection has is looked up in
    the names the entries were written with (a deleted collection's)."""
    by_id = entries.for_collection_named_by_id(name_or_id)
    if by_id is not None:
        return by_id
    if Collection.objects.filter(name=name_or_id).exists():
        return entries.for_collection(_owners_collection(name_or_id, owner_name).id)
    return _by_name_snapshot(entries, name_or_id)


def _owners_collection(name: str, owner_name: str | None) -> Collection:
    """Names are unique per owner only, so a name means one owner's collection."""
    try:
        owner = resolve_owner(owner_name)
    except Exit as exc:
        raise CommandError(exc.message, returncode=exc.code) from None
    named = Collection.objects.filter(name=name).select_related("owner")
    collection = named.filter(owner=owner).first()
    if collection is None:
        owners = ", ".join(sorted(c.owner.get_username() for c in named))
        raise CommandError(
            f"{owner.get_username()} has no collection named '{name}'; "
            f"pass its id, or --owner with one of: {owners}."
        )
    return collection


def _by_name_snapshot(entries: QuerySet, name: str) -> QuerySet:
    """The history of the one collection, deleted or renamed since, that had
    this name; the name alone for entries that never knew the collection's id."""
    named = entries.filter(collection_name=name)
    known = named.exclude(collection_uuid=None).order_by()
    ids = sorted({str(i) for i in known.values_list("collection_uuid", flat=True)})
    if len(ids) > 1:
        raise CommandError(
            f"{len(ids)} collections were named '{name}'; "
            f"pass one's id: {', '.join(ids)}."
        )
    if ids:
        return entries.for_collection(uuid.UUID(ids[0]))
    if not named.exists():
        raise CommandError(
            f"No collection is named '{name}', and no audit entry names one."
        )
    return named


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
