"""The audit trail: one immutable row per collection change and operation transition.

Which entries an operation leaves, oldest first (actor in brackets; "user"
is whoever asked, with their remote address when the request came from the
web; "system" is the worker):

| operation     | ends      | entries                                                  |
|---------------|-----------|----------------------------------------------------------|
| index         | completed | collection.created, operation.requested (user),          |
|               |           | operation.started, operation.completed (system)          |
| append        | completed | source.added, operation.requested (user),                |
|               |           | operation.started, operation.completed (system)          |
| reindex       | completed | collection.reindex_requested, operation.requested (user),|
|               |           | operation.started, operation.completed (system)          |
| remove_source | completed | source.remove_requested, operation.requested (user),     |
|               |           | operation.started, source.removed,                       |
|               |           | operation.completed (system)                             |
| delete        | completed | collection.delete_requested, operation.requested (user), |
|               |           | operation.started, collection.deleted,                   |
|               |           | operation.completed (system)                             |
| any           | failed    | the two request entries, operation.started,              |
|               |           | operation.failed (system); no source.removed or          |
|               |           | collection.deleted                                       |
| any           | cancelled | the two request entries, operation.cancelled (user)      |
|               | (pending) |                                                          |
| index,        | cancelled | the two request entries, operation.started,              |
| append,       | (running) | operation.cancel_requested (user),                       |
| reindex       |           | operation.cancelled (system)                             |

A rename writes one collection.renamed entry and starts no operation. An
operation whose worker died is ended by the sweeper: operation.failed
(system). A second delivery of the same task writes nothing. A remove_source
whose source is already gone completes without source.removed. A delete or
remove_source that is running cannot be cancelled, because removal does not
stop half-way: the request is refused and writes no entry.

Entries for what a user asks (the first two of each operation, renames,
cancel requests) are written in the transaction of the change, so the change
cannot exist without them. Entries the worker writes are written in the
transaction of the transition they describe, but guarded: if the entry cannot
be written, the transition still commits, the entry's content is logged and
`quarry_audit_write_failures_total` counts it (see `audit.services`).

`details` holds the stored form of the details (`audit.encoding`); read it
through `details_decoded()`. Collection and operation ids and names are kept
as snapshots, so entries still name what they were about after deletion.
"""

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from audit import encoding


class AuditLogQuerySet(models.QuerySet):
    def for_collection(self, collection_id: uuid.UUID) -> "AuditLogQuerySet":
        """Entries about one collection, also after it was deleted."""
        return self.filter(collection_uuid=collection_id)

    def for_collection_named_by_id(self, text: str) -> "AuditLogQuerySet | None":
        """`for_collection` when `text` is a collection's id; None when it is not
        an id at all (then it is a name, for the caller to look up)."""
        try:
            return self.for_collection(uuid.UUID(text))
        except ValueError:
            return None

    def oldest_first(self) -> "AuditLogQuerySet":
        return self.order_by("created_at", "id")


class AuditLog(models.Model):
    class Action(models.TextChoices):
        COLLECTION_CREATED = "collection.created"
        COLLECTION_RENAMED = "collection.renamed"
        COLLECTION_DELETE_REQUESTED = "collection.delete_requested"
        COLLECTION_DELETED = "collection.deleted"
        SOURCE_ADDED = "source.added"
        SOURCE_REMOVE_REQUESTED = "source.remove_requested"
        SOURCE_REMOVED = "source.removed"
        REINDEX_REQUESTED = "collection.reindex_requested"
        OPERATION_REQUESTED = "operation.requested"
        OPERATION_STARTED = "operation.started"
        OPERATION_COMPLETED = "operation.completed"
        OPERATION_FAILED = "operation.failed"
        OPERATION_CANCELLED = "operation.cancelled"
        OPERATION_CANCEL_REQUESTED = "operation.cancel_requested"

    SYSTEM = "system"

    action = models.CharField(max_length=40, choices=Action, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    actor_name = models.CharField(max_length=150, help_text="'system' for the worker")
    collection = models.ForeignKey(
        "collections_app.Collection", null=True, blank=True, on_delete=models.SET_NULL
    )
    collection_uuid = models.UUIDField(
        null=True, blank=True, db_index=True, help_text="Kept after deletion"
    )
    collection_name = models.CharField(max_length=200, blank=True)
    operation = models.ForeignKey(
        "operations.Operation", null=True, blank=True, on_delete=models.SET_NULL
    )
    operation_uuid = models.UUIDField(
        null=True, blank=True, db_index=True, help_text="Kept after deletion"
    )
    operation_type = models.CharField(max_length=20, blank=True)
    details = models.JSONField(default=dict, blank=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = AuditLogQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action}"

    def details_decoded(self) -> Any:
        """The details as they were written (see `audit.encoding`)."""
        return encoding.decode(self.details)

    def details_json(self) -> str:
        """The decoded details as indented JSON, safe to put on any page."""
        return encoding.display_json(self.details_decoded())

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat(),
            "action": self.action,
            "actor": self.actor_name,
            "remote_addr": self.remote_addr,
            "collection": self.collection_name,
            "collection_id": str(self.collection_uuid)
            if self.collection_uuid
            else None,
            "operation_id": str(self.operation_uuid) if self.operation_uuid else None,
            "operation_type": self.operation_type or None,
            "details": self.details_decoded(),
        }
