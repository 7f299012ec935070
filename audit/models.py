"""The audit trail: one immutable row per change and per operation transition."""

from django.conf import settings
from django.db import models
from django.utils import timezone


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

    action = models.CharField(max_length=40, choices=Action, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    actor_name = models.CharField(max_length=150, help_text="'system' for the worker")
    collection = models.ForeignKey(
        "collections_app.Collection", null=True, blank=True, on_delete=models.SET_NULL
    )
    collection_name = models.CharField(max_length=200, blank=True)
    operation = models.ForeignKey(
        "operations.Operation", null=True, blank=True, on_delete=models.SET_NULL
    )
    details = models.JSONField(default=dict, blank=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action}"
