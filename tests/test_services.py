"""The rules of collections_app.services: what is written, what is refused."""

import pytest

from audit.models import AuditLog
from collections_app import services
from collections_app.models import Collection, Source
from collections_app.services import Conflict, ServiceError
from operations.models import Operation, OperationEvent
from operations.services import cancel_operation


@pytest.fixture
def pending_collection(db, as_owner, docs, django_capture_on_commit_callbacks):
    """A collection whose index operation is written but not yet run."""
    with django_capture_on_commit_callbacks(execute=False):
        operation = services.create_collection(as_owner, name="Notes", source=str(docs))
    return operation.collection


def test_creating_a_collection_writes_a_pending_operation_before_any_worker_runs(
    pending_collection, docs
):
    operation = Operation.objects.get()
    assert operation.status == Operation.Status.PENDING
    assert operation.type == Operation.Type.INDEX
    assert operation.collection == pending_collection
    assert list(operation.events.values_list("kind", flat=True)) == ["requested"]
    assert Source.objects.get().path == str(docs.resolve())
    actions = set(AuditLog.objects.values_list("action", flat=True))
    assert {"collection.created", "operation.requested"} <= actions


def test_the_enqueue_waits_for_the_commit(
    db, as_owner, docs, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.create_collection(as_owner, name="Notes", source=str(docs))
    enqueues = [cb for cb in callbacks if "create_pending" in cb.__qualname__]
    assert len(enqueues) == 1


def test_it_refuses_a_second_operation_while_one_is_active(
    pending_collection, as_owner
):
    with pytest.raises(Conflict, match="already has an active index operation"):
        services.reindex(as_owner, pending_collection)
    assert Operation.objects.count() == 1


def test_it_refuses_a_duplicate_name_for_the_same_owner(
    pending_collection, as_owner, docs
):
    with pytest.raises(ServiceError) as caught:
        services.create_collection(as_owner, name="Notes", source=str(docs))
    assert caught.value.field == "name"


def test_another_owner_may_reuse_a_name(pending_collection, teammate, docs):
    request = services.Request(user=teammate)
    services.create_collection(request, name="Notes", source=str(docs))
    assert Collection.objects.filter(name="Notes").count() == 2


def test_it_refuses_a_folder_outside_the_document_roots(
    db, as_owner, tmp_path, settings
):
    inside = tmp_path / "allowed"
    outside = tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    settings.DOCUMENT_ROOTS = [inside]
    with pytest.raises(ServiceError, match="outside the document roots") as caught:
        services.create_collection(as_owner, name="X", source=str(outside))
    assert caught.value.field == "source"
    with pytest.raises(ServiceError, match="outside the document roots"):
        services.create_collection(as_owner, name="X", source=f"{inside}/../elsewhere")
    assert not Collection.objects.exists()


def test_it_refuses_a_symlink_that_leads_outside_the_roots(
    db, as_owner, tmp_path, settings
):
    inside = tmp_path / "allowed"
    outside = tmp_path / "secret"
    inside.mkdir()
    outside.mkdir()
    (inside / "link").symlink_to(outside)
    settings.DOCUMENT_ROOTS = [inside]
    with pytest.raises(ServiceError, match="outside the document roots"):
        services.create_collection(as_owner, name="X", source=str(inside / "link"))


def test_it_refuses_a_missing_folder_and_a_relative_path(db, as_owner, tmp_path):
    with pytest.raises(ServiceError, match="does not exist"):
        services.create_collection(as_owner, name="X", source=str(tmp_path / "nope"))
    with pytest.raises(ServiceError, match="absolute path"):
        services.create_collection(as_owner, name="X", source="relative/dir")


@pytest.mark.parametrize(
    ("size", "overlap", "field"),
    [(50, 0, "chunk_size"), (100000, 0, "chunk_size"), (400, 200, "chunk_overlap")],
)
def test_it_refuses_chunk_settings_out_of_range(
    db, as_owner, docs, size, overlap, field
):
    with pytest.raises(ServiceError) as caught:
        services.create_collection(
            as_owner, name="X", source=str(docs), chunk_size=size, chunk_overlap=overlap
        )
    assert caught.value.field == field


def test_cancelling_a_pending_operation_ends_it_at_once(pending_collection, as_owner):
    operation = Operation.objects.get()
    cancel_operation(as_owner, operation)
    operation.refresh_from_db()
    assert operation.status == Operation.Status.CANCELLED
    assert operation.finished_at is not None
    assert (
        OperationEvent.objects.filter(operation=operation, kind="cancelled").count()
        == 1
    )
    with pytest.raises(Conflict, match="already ended"):
        cancel_operation(as_owner, operation)


def test_a_second_delivery_of_the_same_task_does_nothing(pending_collection):
    from operations.tasks import run_operation

    operation = Operation.objects.get()
    assert run_operation(str(operation.id)) == Operation.Status.COMPLETED
    chunks = pending_collection.chunks.count()
    assert run_operation(str(operation.id)) == "skipped"
    assert pending_collection.chunks.count() == chunks
    started = AuditLog.objects.filter(action="operation.started", operation=operation)
    assert started.count() == 1
