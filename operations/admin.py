"""Admin views of operations and their event history, read-only.

Status changes belong to `operations.lifecycle`; the admin may only cancel,
through the same service as the web page.
"""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from collections_app.services import Request, ServiceError
from operations import services
from operations.models import Operation, OperationEvent


class OperationEventInline(admin.TabularInline):
    model = OperationEvent
    fields = ("seq", "kind", "created_at", "payload")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("seq",)

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Operation)
class OperationAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "type",
        "collection_name",
        "status",
        "step",
        "done",
        "total",
        "requested_by",
        "finished_at",
    )
    list_filter = ("status", "type", "dismissed")
    list_select_related = ("requested_by",)
    search_fields = ("collection_name", "id", "error", "requested_by__username")
    date_hierarchy = "created_at"
    readonly_fields = (
        "id",
        "collection",
        "collection_name",
        "owner",
        "type",
        "status",
        "config",
        "step",
        "total",
        "done",
        "found",
        "indexed",
        "unchanged",
        "failed",
        "skipped",
        "chunks",
        "error",
        "cancel_requested",
        "dismissed",
        "requested_by",
        "task_id",
        "created_at",
        "started_at",
        "finished_at",
        "heartbeat_at",
    )
    inlines = (OperationEventInline,)
    actions = ("cancel",)

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.is_staff

    @admin.action(description="Cancel selected operations", permissions=["cancel"])
    def cancel(self, request: HttpRequest, queryset: QuerySet) -> None:
        asker = Request(request.user, request.META.get("REMOTE_ADDR"))
        for operation in queryset:
            try:
                services.cancel_operation(asker, operation)
            except ServiceError as exc:
                self.message_user(request, exc.message, messages.WARNING)
            else:
                self.message_user(request, f"Cancelled or cancelling: {operation}.")


@admin.register(OperationEvent)
class OperationEventAdmin(admin.ModelAdmin):
    list_display = ("id", "operation", "seq", "kind", "created_at")
    list_filter = ("kind",)
    list_select_related = ("operation",)
    search_fields = ("operation__id", "operation__collection_name", "kind")
    date_hierarchy = "created_at"
    raw_id_fields = ("operation",)
    readonly_fields = ("operation", "seq", "kind", "payload", "created_at")

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
