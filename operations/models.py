"""Operations: every change to a collection's content, as a queued record."""

import uuid

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone


class OperationQuerySet(models.QuerySet):
    def visible_to(self, user) -> "OperationQuerySet":
        """Operations on the user's collections; staff see all."""
        if user.is_staff:
            return self
        return self.filter(owner=user)

    def active(self) -> "OperationQuerySet":
        return self.filter(status__in=Operation.ACTIVE)


class Operation(models.Model):
    class Type(models.TextChoices):
        INDEX = "index"
        APPEND = "append"
        REINDEX = "reindex"
        REMOVE_SOURCE = "remove_source"
        DELETE = "delete"

    class Status(models.TextChoices):
        PENDING = "pending"
        PROCESSING = "processing"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE = (Status.PENDING, Status.PROCESSING)
    TERMINAL = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    collection = models.ForeignKey(
        "collections_app.Collection",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="operations",
    )
    collection_name = models.CharField(max_length=200)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.SET_NULL,
        related_name="owned_operations",
        help_text="Owner of the collection; who may see this operation",
    )
    type = models.CharField(max_length=20, choices=Type)
    status = models.CharField(max_length=20, choices=Status, default=Status.PENDING)
    config = models.JSONField(default=dict, blank=True)
    step = models.CharField(max_length=40, default="queued")
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    found = models.PositiveIntegerField(default=0)
    indexed = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    chunks = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    dismissed = models.BooleanField(default=False)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="requested_operations",
    )
    task_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    objects = OperationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return f"{self.get_type_display()} {self.collection_name} ({self.status})"

    def get_absolute_url(self) -> str:
        return reverse("operations:detail", args=[self.id])

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def awaits_queue(self) -> bool:
        """Pending without a task: the broker refused it; the sweeper retries."""
        return self.status == self.Status.PENDING and not self.task_id

    @property
    def percent(self) -> int:
        if self.status == self.Status.COMPLETED:
            return 100
        if not self.total:
            return 0
        return min(100, int(100 * self.done / self.total))

    def elapsed_seconds(self) -> float | None:
        if not self.started_at:
            return None
        end = self.finished_at or timezone.now()
        return max(0.0, (end - self.started_at).total_seconds())

    def remaining_seconds(self) -> float | None:
        elapsed = self.elapsed_seconds()
        if not self.is_active or not elapsed or not self.done or not self.total:
            return None
        return elapsed * (self.total - self.done) / self.done

    def counts(self) -> dict[str, int]:
        return {
            "found": self.found,
            "indexed": self.indexed,
            "unchanged": self.unchanged,
            "failed": self.failed,
            "skipped": self.skipped,
            "chunks": self.chunks,
        }

    def to_dict(self) -> dict:
        return {
            "id": str(self.id),
            "type": self.type,
            "status": self.status,
            "step": self.step,
            "collection": self.collection_name,
            "collection_id": str(self.collection_id) if self.collection_id else None,
            "progress": {
                "done": self.done,
                "total": self.total,
                "percent": self.percent,
            },
            "counts": self.counts(),
            "error": self.error,
            "requested_by": self.requested_by.get_username()
            if self.requested_by
            else None,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


class OperationEvent(models.Model):
    """One step in an operation's history; `id` orders all events globally."""

    operation = models.ForeignKey(
        Operation, on_delete=models.CASCADE, related_name="events"
    )
    seq = models.PositiveIntegerField(help_text="Position within the operation")
    kind = models.CharField(max_length=40)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["operation", "seq"], name="event_seq_per_operation"
            )
        ]

    def __str__(self) -> str:
        return f"{self.operation_id} #{self.seq} {self.kind}"
