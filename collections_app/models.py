"""Collections and what they hold: sources, documents and their chunks."""

import uuid

import numpy as np
from django.conf import settings
from django.db import models
from django.urls import reverse


class Collection(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        READY = "ready"
        PROCESSING = "processing"
        ERROR = "error"
        DEGRADED = "degraded"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="collections"
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    status = models.CharField(max_length=20, choices=Status, default=Status.PENDING)
    status_message = models.TextField(blank=True)
    embedding_model = models.CharField(max_length=100, default="minilm-l6-int8")
    chunk_size = models.PositiveIntegerField(default=800)
    chunk_overlap = models.PositiveIntegerField(default=100)
    document_count = models.PositiveIntegerField(default=0)
    chunk_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "name"], name="collection_name_per_owner"
            )
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("collections:detail", args=[self.id])

    def refresh_counters(self) -> None:
        docs = self.documents.all()
        self.document_count = docs.filter(status=Document.Status.INDEXED).count()
        self.failed_count = docs.filter(status=Document.Status.FAILED).count()
        self.chunk_count = self.chunks.count()
        self.save(
            update_fields=[
                "document_count",
                "failed_count",
                "chunk_count",
                "updated_at",
            ]
        )


class Source(models.Model):
    """A directory inside one of DOCUMENT_ROOTS whose files feed a collection."""

    collection = models.ForeignKey(
        Collection, on_delete=models.CASCADE, related_name="sources"
    )
    path = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["path"]
        constraints = [
            models.UniqueConstraint(
                fields=["collection", "path"], name="source_path_per_collection"
            )
        ]

    def __str__(self) -> str:
        return self.path


class Document(models.Model):
    class Status(models.TextChoices):
        INDEXED = "indexed"
        FAILED = "failed"
        SKIPPED = "skipped"

    collection = models.ForeignKey(
        Collection, on_delete=models.CASCADE, related_name="documents"
    )
    source = models.ForeignKey(
        Source, on_delete=models.CASCADE, related_name="documents"
    )
    path = models.TextField(help_text="Path relative to the source directory")
    size = models.BigIntegerField(default=0)
    mtime = models.FloatField(default=0)
    content_hash = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=10, choices=Status)
    error_reason = models.CharField(max_length=40, blank=True)
    error = models.TextField(blank=True)
    chunk_count = models.PositiveIntegerField(default=0)
    indexed_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["path"]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "path"], name="document_path_per_source"
            ),
            models.UniqueConstraint(
                fields=["collection", "content_hash"],
                condition=models.Q(status="indexed"),
                name="document_hash_per_collection",
            ),
        ]

    def __str__(self) -> str:
        return self.path


class Chunk(models.Model):
    """A passage of a document with its embedding (float32, L2-normalised)."""

    collection = models.ForeignKey(
        Collection, on_delete=models.CASCADE, related_name="chunks"
    )
    document = models.ForeignKey(
        Document, on_delete=models.CASCADE, related_name="chunks"
    )
    ordinal = models.PositiveIntegerField()
    text = models.TextField()
    start = models.PositiveIntegerField()
    end = models.PositiveIntegerField()
    vector = models.BinaryField()

    class Meta:
        ordering = ["document_id", "ordinal"]
        constraints = [
            models.UniqueConstraint(
                fields=["document", "ordinal"], name="chunk_ordinal_per_document"
            )
        ]

    def embedding(self) -> np.ndarray:
        return np.frombuffer(bytes(self.vector), dtype=np.float32)
