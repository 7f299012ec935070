"""The audit trail app: who changed which collection, when, and how it ended."""

from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit trail"
