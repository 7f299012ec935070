"""The audit trail in the admin: entries can be read, never added, changed, deleted."""

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from audit.models import AuditLog


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "action",
        "actor_name",
        "collection_name",
        "operation_type",
        "remote_addr",
    )
    list_filter = ("action", "created_at")
    search_fields = ("collection_name", "actor_name")
    date_hierarchy = "created_at"
    # The stored details are shown decoded; the raw column is not editable anyway.
    fields = (
        "created_at",
        "action",
        "actor_name",
        "actor",
        "remote_addr",
        "collection_name",
        "collection_uuid",
        "operation_type",
        "operation_uuid",
        "details_pretty",
    )
    readonly_fields = fields

    @admin.display(description="Details")
    def details_pretty(self, entry: AuditLog) -> str:
        return format_html("<pre>{}</pre>", entry.details_json())

    def has_add_permission(
        self, request: HttpRequest, obj: AuditLog | None = None
    ) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: AuditLog | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: AuditLog | None = None
    ) -> bool:
        return False
