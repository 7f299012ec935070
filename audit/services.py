"""Writing audit entries: strictly inside a change, or guarded for the worker.

`record` belongs in the transaction of a change a user asked for: if the
entry cannot be written, the change fails with it. `record_guarded` is for
work that must stand on its own (an operation starting or ending): a failed
write is logged once with the entry's content, counted in
`quarry_audit_write_failures_total`, and never raised.
"""

import ipaddress
import json
import logging
import uuid
from typing import Any

from django.db import DatabaseError, transaction

from audit.encoding import encode
from audit.models import AuditLog

logger = logging.getLogger(__name__)


def record(
    action: str,
    *,
    actor: Any = None,
    collection: Any = None,
    operation: Any = None,
    details: dict | None = None,
    remote_addr: str | None = None,
) -> AuditLog:
    """Write one entry in the current transaction; a failure fails the change."""
    fields = entry_fields(
        action,
        actor=actor,
        collection=collection,
        operation=operation,
        details=details,
        remote_addr=remote_addr,
    )
    _inherit_collection(fields)
    return AuditLog.objects.create(**fields)


def record_guarded(action: str, **kwargs: Any) -> AuditLog | None:
    """Write an entry for work that must stand even if the entry cannot be written.

    Inside a transaction the entry gets its own savepoint, so a failed write
    leaves the caller's transaction usable and its change still commits.
    """
    fields: dict[str, Any] = {"action": action}
    try:
        fields = entry_fields(action, **kwargs)
        with transaction.atomic():
            _inherit_collection(fields)
            return AuditLog.objects.create(**fields)
    except DatabaseError as exc:
        _log_lost_entry(action, fields, exc)
    except Exception as exc:  # noqa: BLE001 - bookkeeping must never end the work
        _log_lost_entry(action, fields, exc, unexpected=True)
    return None


def entry_fields(
    action: str,
    *,
    actor: Any = None,
    collection: Any = None,
    operation: Any = None,
    details: dict | None = None,
    remote_addr: str | None = None,
) -> dict[str, Any]:
    """The column values of one entry, snapshots and stored details included."""
    if collection is not None and collection.pk is None:
        # Already deleted: keep its name, but a reference would point nowhere.
        collection_name, collection = collection.name, None
    else:
        collection_name = collection.name if collection is not None else ""
    if operation is not None and not collection_name:
        collection_name = operation.collection_name
    return {
        "action": action,
        "actor": actor if actor is not None and actor.is_authenticated else None,
        "actor_name": _actor_name(actor),
        "collection": collection,
        "collection_uuid": _collection_uuid(collection, operation),
        "collection_name": collection_name[:200],
        "operation": operation,
        "operation_uuid": operation.pk if operation is not None else None,
        "operation_type": operation.type if operation is not None else "",
        "details": encode(details if details is not None else {}),
        "remote_addr": clean_remote_addr(remote_addr),
    }


def _actor_name(actor: Any) -> str:
    if actor is None:
        return AuditLog.SYSTEM
    return actor.get_username() or "anonymous"


def _collection_uuid(collection: Any, operation: Any) -> uuid.UUID | None:
    if collection is not None:
        return collection.pk
    if operation is not None:
        return operation.collection_id
    return None


def _inherit_collection(fields: dict[str, Any]) -> None:
    """An entry about an operation whose collection is gone (a finished delete)
    takes the collection's id from the operation's earlier entries."""
    if fields["collection_uuid"] is not None or fields["operation_uuid"] is None:
        return
    fields["collection_uuid"] = (
        AuditLog.objects.filter(operation_uuid=fields["operation_uuid"])
        .exclude(collection_uuid=None)
        .values_list("collection_uuid", flat=True)
        .first()
    )


def clean_remote_addr(value: str | None) -> str | None:
    """An IP address the column accepts on every database, or None."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    return str(address)


def _log_lost_entry(
    action: str, fields: dict[str, Any], exc: Exception, unexpected: bool = False
) -> None:
    """One log line holding the entry as JSON, so it can be restored by hand."""
    from operations import metrics

    metrics.AUDIT_WRITE_FAILURES.inc()
    content = {
        "action": action,
        "actor": fields.get("actor_name"),
        "remote_addr": fields.get("remote_addr"),
        "collection_id": _text_or_none(fields.get("collection_uuid")),
        "collection": fields.get("collection_name"),
        "operation_id": _text_or_none(fields.get("operation_uuid")),
        "operation_type": fields.get("operation_type"),
        "details": fields.get("details"),
        "error": f"{type(exc).__name__}: {exc}",
    }
    # ensure_ascii keeps the line one line of plain ASCII whatever the text holds.
    line = json.dumps(content, ensure_ascii=True, default=str)
    if unexpected:
        logger.exception("Audit entry not written (unexpected error); entry: %s", line)
    else:
        logger.error("Audit entry not written; entry: %s", line)


def _text_or_none(value: Any) -> str | None:
    return str(value) if value is not None else None
