"""Writing audit entries: inside the caller's transaction, or guarded for workers."""

import json
import logging

from django.db import DatabaseError, transaction

from audit.encoding import encode
from audit.models import AuditLog

logger = logging.getLogger(__name__)


def record(
    action: str,
    *,
    actor=None,
    collection=None,
    operation=None,
    details: dict | None = None,
    remote_addr: str | None = None,
) -> AuditLog:
    """Write one entry in the current transaction; a failure fails the change."""
    collection_name = ""
    if collection is not None:
        collection_name = collection.name
    elif operation is not None:
        collection_name = operation.collection_name
    return AuditLog.objects.create(
        action=action,
        actor=actor if actor is not None and actor.is_authenticated else None,
        actor_name=actor.get_username() if actor is not None else "system",
        collection=collection,
        collection_name=collection_name,
        operation=operation,
        details=encode(details or {}),
        remote_addr=remote_addr or None,
    )


def record_guarded(action: str, **kwargs) -> AuditLog | None:
    """Write an entry for work that must stand even if the audit write fails.

    The entry's content is logged once so it is not silently lost.
    """
    try:
        with transaction.atomic():
            return record(action, **kwargs)
    except DatabaseError as exc:
        from operations import metrics

        metrics.AUDIT_WRITE_FAILURES.inc()
        content = {
            "action": action,
            "collection": getattr(kwargs.get("collection"), "name", None),
            "operation": str(getattr(kwargs.get("operation"), "id", "")),
            "details": encode(kwargs.get("details") or {}),
        }
        logger.error(
            "Audit entry could not be written (%s); its content: %s",
            exc,
            json.dumps(content, ensure_ascii=True),
        )
        return None
