"""Admin views of collections and their content, for inspection.

Content changes go through the services, so each one has an operation and an
audit entry; the admin therefore only reads, except for the reindex action,
which calls the same service as the web page.
"""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from collections_app import services
from collections_app.models import Chunk, Collection, Document, Source


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class SourceInline(admin.TabularInline):
    model = Source
    fields = ("path", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Collection)
class CollectionAdmin(ReadOnlyAdmin):
    list_display = (
        "name",
        "owner",
        "status",
        "document_count",
        "chunk_count",
        "failed_count",
        "updated_at",
    )
    list_filter = ("status", "embedding_model")
    list_select_related = ("owner",)
    search_fields = ("name", "description", "owner__username", "id")
    date_hierarchy = "created_at"
    readonly_fields = (
        "id",
        "status",
        "status_message",
        "embedding_model",
        "chunk_size",
        "chunk_overlap",
        "document_count",
        "chunk_count",
        "failed_count",
        "created_at",
        "updated_at",
    )
    inlines = (SourceInline,)
    actions = ("reindex",)

    @admin.action(description="Reindex selected collections", permissions=["reindex"])
    def reindex(self, request: HttpRequest, queryset: QuerySet) -> None:
        asker = services.Request(request.user, request.META.get("REMOTE_ADDR"))
        started = 0
        for collection in queryset:
            try:
                services.reindex(asker, collection)
            except services.ServiceError as exc:
                self.message_user(request, exc.message, messages.WARNING)
            else:
                started += 1
        if started:
            self.message_user(request, f"Reindexing {started} collection(s).")

    def has_reindex_permission(self, request: HttpRequest) -> bool:
        return request.user.is_staff


@admin.register(Source)
class SourceAdmin(ReadOnlyAdmin):
    list_display = ("path", "collection", "created_at")
    list_select_related = ("collection",)
    search_fields = ("path", "collection__name")
    raw_id_fields = ("collection",)


@admin.register(Document)
class DocumentAdmin(ReadOnlyAdmin):
    list_display = (
        "path",
        "collection",
        "status",
        "error_reason",
        "size",
        "chunk_count",
        "indexed_at",
    )
    list_filter = ("status", "error_reason")
    list_select_related = ("collection",)
    search_fields = ("path", "content_hash", "collection__name", "error")
    date_hierarchy = "indexed_at"
    raw_id_fields = ("collection", "source")
    readonly_fields = ("size", "mtime", "content_hash", "chunk_count", "indexed_at")


@admin.register(Chunk)
class ChunkAdmin(ReadOnlyAdmin):
    list_display = ("id", "collection", "document", "ordinal", "short_text")
    list_select_related = ("collection", "document")
    search_fields = ("text", "document__path")
    raw_id_fields = ("collection", "document")
    # The vector is 1.5 kB of float32 bytes: meaningless on screen.
    exclude = ("vector",)
    readonly_fields = ("start", "end", "dimensions")

    @admin.display(description="Text")
    def short_text(self, chunk: Chunk) -> str:
        text = " ".join(chunk.text.split())
        return text if len(text) <= 80 else text[:79] + "…"

    @admin.display(description="Vector dimensions")
    def dimensions(self, chunk: Chunk) -> int:
        return len(chunk.embedding())
