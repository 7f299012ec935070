"""Every change and every operation transition leaves exactly its audit entries."""

import json
import logging
import shutil
from pathlib import Path

import pytest
from django.db import OperationalError
from django.db.models import Max

from audit.models import AuditLog
from collections_app import services
from collections_app.models import Collection, Source
from collections_app.services import Request
from operations import lifecycle, metrics
from operations.models import Operation
from operations.services import cancel_operation
from operations.tasks import run_operation
from tests.conftest import write_files

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """Users are made in every test; the production hasher is slow on purpose."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


A = AuditLog.Action
FIRST_ENTRY = {
    Operation.Type.INDEX: A.COLLECTION_CREATED,
    Operation.Type.APPEND: A.SOURCE_ADDED,
    Operation.Type.REINDEX: A.REINDEX_REQUESTED,
    Operation.Type.REMOVE_SOURCE: A.SOURCE_REMOVE_REQUESTED,
    Operation.Type.DELETE: A.COLLECTION_DELETE_REQUESTED,
}
WORK_ENTRIES = {
    Operation.Type.REMOVE_SOURCE: [A.SOURCE_REMOVED],
    Operation.Type.DELETE: [A.COLLECTION_DELETED],
}


def expected_entries(type: str, ending: str) -> list[str]:
    """The table in audit/models.py's docstring, as code."""
    requested = [FIRST_ENTRY[type], A.OPERATION_REQUESTED]
    return {
        "completed": [
            *requested,
            A.OPERATION_STARTED,
            *WORK_ENTRIES.get(type, []),
            A.OPERATION_COMPLETED,
        ],
        "failed": [*requested, A.OPERATION_STARTED, A.OPERATION_FAILED],
        "cancelled while pending": [*requested, A.OPERATION_CANCELLED],
        "cancelled while running": [
            *requested,
            A.OPERATION_STARTED,
            A.OPERATION_CANCEL_REQUESTED,
            A.OPERATION_CANCELLED,
        ],
    }[ending]


def last_entry_id() -> int:
    return AuditLog.objects.aggregate(last=Max("id"))["last"] or 0


def entries_since(entry_id: int, collection_id) -> list[AuditLog]:
    return list(
        AuditLog.objects.for_collection(collection_id)
        .filter(id__gt=entry_id)
        .order_by("id")
    )


@pytest.fixture
def run_on_commit(django_capture_on_commit_callbacks):
    """Make a request, hold its enqueue, and return a way to deliver it later."""

    def request(make_request):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            operation = make_request()

        def deliver() -> Operation:
            for callback in callbacks:
                callback()
            operation.refresh_from_db()
            return operation

        return operation, deliver

    return request


@pytest.fixture
def indexed(db, as_owner, docs, django_capture_on_commit_callbacks) -> Collection:
    with django_capture_on_commit_callbacks(execute=True):
        operation = services.create_collection(as_owner, name="Notes", source=str(docs))
    operation.refresh_from_db()
    assert operation.status == Operation.Status.COMPLETED
    return operation.collection


def request_for(type: str, as_owner: Request, tmp_path: Path, indexed_factory):
    """A function that asks for an operation of `type`, and the folder it reads."""
    if type == Operation.Type.INDEX:
        folder = write_files(tmp_path / "new", {"a.txt": "alpha beta gamma"})
        return (
            lambda: services.create_collection(
                as_owner, name="Fresh", source=str(folder)
            ),
            folder,
        )
    collection = indexed_factory()
    if type == Operation.Type.APPEND:
        folder = write_files(tmp_path / "more", {"b.txt": "delta epsilon"})
        return lambda: services.add_source(as_owner, collection, str(folder)), folder
    if type == Operation.Type.REINDEX:
        folder = Path(collection.sources.get().path)
        return lambda: services.reindex(as_owner, collection), folder
    if type == Operation.Type.REMOVE_SOURCE:
        source = collection.sources.get()
        return lambda: services.remove_source(as_owner, collection, source), None
    return lambda: services.delete_collection(as_owner, collection), None


def break_it(operation: Operation, folder: Path | None) -> None:
    """Make the operation fail when it runs, without touching the code."""
    if folder is not None:
        # The source folder disappears before the worker gets to it.
        shutil.rmtree(folder)
    else:
        # Someone deletes the collection behind the services' back.
        Collection.objects.filter(id=operation.collection_id).delete()


ALL_TYPES = list(Operation.Type.values)
CASES = [
    *[(type, "completed") for type in ALL_TYPES],
    *[(type, "failed") for type in ALL_TYPES],
    *[(type, "cancelled while pending") for type in ALL_TYPES],
    *[
        (type, "cancelled while running")
        for type in (
            Operation.Type.INDEX,
            Operation.Type.APPEND,
            Operation.Type.REINDEX,
        )
    ],
]


@pytest.mark.parametrize("type,ending", CASES)
def test_each_operation_leaves_exactly_its_entries_in_order(
    type, ending, as_owner, tmp_path, run_on_commit, request, monkeypatch
):
    make_request, folder = request_for(
        type, as_owner, tmp_path, lambda: request.getfixturevalue("indexed")
    )
    before = last_entry_id()
    operation, deliver = run_on_commit(make_request)
    collection_id = operation.collection_id

    if ending == "failed":
        break_it(operation, folder)
    elif ending == "cancelled while pending":
        cancel_operation(as_owner, operation)
    elif ending == "cancelled while running":
        original = lifecycle.Progress.cancel_requested

        def user_cancels_during_the_run(progress) -> bool:
            running = Operation.objects.get(id=progress.operation.id)
            if not running.cancel_requested:
                cancel_operation(as_owner, running)
            return original(progress)

        monkeypatch.setattr(
            lifecycle.Progress, "cancel_requested", user_cancels_during_the_run
        )
    operation = deliver()

    assert operation.status == ending.split()[0]
    entries = entries_since(before, collection_id)
    assert [entry.action for entry in entries] == expected_entries(type, ending)
    for entry in entries:
        assert entry.collection_uuid == collection_id
        assert entry.collection_name == operation.collection_name
        by_user = entry.actor_name == "olivia"
        assert entry.remote_addr == ("127.0.0.1" if by_user else None)
    operation_entries = [entry for entry in entries if entry.operation_uuid]
    assert {entry.operation_uuid for entry in operation_entries} == {operation.id}
    assert {entry.operation_type for entry in operation_entries} == {type}
    assert run_operation(str(operation.id)) == "skipped"
    assert len(entries_since(before, collection_id)) == len(entries)


def test_who_is_named_for_each_entry(indexed, as_owner, run_on_commit):
    before = last_entry_id()
    operation, deliver = run_on_commit(lambda: services.reindex(as_owner, indexed))
    deliver()

    actors = [
        (entry.action, entry.actor_name, entry.actor_id)
        for entry in entries_since(before, indexed.id)
    ]

    owner = as_owner.user
    assert actors == [
        (A.REINDEX_REQUESTED, "olivia", owner.id),
        (A.OPERATION_REQUESTED, "olivia", owner.id),
        (A.OPERATION_STARTED, "system", None),
        (A.OPERATION_COMPLETED, "system", None),
    ]


def test_a_pending_cancel_names_the_user_and_their_address(
    indexed, as_owner, run_on_commit
):
    operation, _ = run_on_commit(lambda: services.reindex(as_owner, indexed))

    cancel_operation(Request(user=as_owner.user, remote_addr="2001:db8::7"), operation)

    entry = AuditLog.objects.get(action=A.OPERATION_CANCELLED)
    assert (entry.actor_name, entry.remote_addr) == ("olivia", "2001:db8::7")
    assert entry.details_decoded()["error"] == "Cancelled before it started"


def test_a_rename_writes_one_entry_with_both_names(indexed, as_owner):
    before = last_entry_id()

    services.update_collection(as_owner, indexed, name="Notes 2", description="")
    services.update_collection(as_owner, indexed, name="Notes 2", description="new")

    (entry,) = entries_since(before, indexed.id)
    assert entry.action == A.COLLECTION_RENAMED
    assert entry.details_decoded() == {"old_name": "Notes", "new_name": "Notes 2"}
    assert entry.collection_name == "Notes 2"


def test_the_entries_of_a_deleted_collection_keep_its_id_and_name(
    indexed, as_owner, run_on_commit
):
    collection_id = indexed.id
    _, deliver = run_on_commit(lambda: services.delete_collection(as_owner, indexed))
    deliver()

    entries = AuditLog.objects.for_collection(collection_id)

    assert not Collection.objects.filter(id=collection_id).exists()
    assert entries.count() == 9
    assert set(entries.values_list("collection_name", flat=True)) == {"Notes"}
    assert not entries.exclude(collection=None).exists()


def test_an_invalid_remote_address_is_dropped_not_fatal(db, owner, docs):
    services.create_collection(
        Request(user=owner, remote_addr="unknown, proxy"), name="Ok", source=str(docs)
    )

    assert set(AuditLog.objects.values_list("remote_addr", flat=True)) == {None}


# The source path of failure reports 11 and 12: backslashes, CJK, quotes, newline.
AWKWARD_FOLDERS = [
    "C:\\Users\\Public\\Docs\\日本",
    'D:\\data\\"q"\n\\notes',
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", AWKWARD_FOLDERS)
def test_a_source_with_a_windows_style_path_has_all_its_entries_with_the_path_exact(
    name, as_owner, tmp_path
):
    folder = write_files(tmp_path / name, {"メモ.txt": "富士山の写真"})
    second = write_files(tmp_path / (name + "\\2"), {"x.txt": "second folder"})
    path, second_path = str(folder.resolve()), str(second.resolve())

    operation = services.create_collection(as_owner, name="日本", source=str(folder))
    collection = Collection.objects.get(id=operation.collection_id)
    services.add_source(as_owner, collection, str(second))
    services.remove_source(as_owner, collection, collection.sources.get(path=path))
    services.reindex(as_owner, collection)
    services.delete_collection(as_owner, collection)

    entries = list(AuditLog.objects.for_collection(collection.id).oldest_first())
    assert [entry.action for entry in entries] == [
        *expected_entries(Operation.Type.INDEX, "completed"),
        *expected_entries(Operation.Type.APPEND, "completed"),
        *expected_entries(Operation.Type.REMOVE_SOURCE, "completed"),
        *expected_entries(Operation.Type.REINDEX, "completed"),
        *expected_entries(Operation.Type.DELETE, "completed"),
    ]
    details = {entry.action: entry.details_decoded() for entry in entries}
    assert details[A.COLLECTION_CREATED]["source"] == path
    assert details[A.COLLECTION_CREATED]["requested_path"] == str(folder)
    assert details[A.SOURCE_ADDED]["source"] == second_path
    assert details[A.SOURCE_REMOVE_REQUESTED]["source"] == path
    assert details[A.SOURCE_REMOVED]["source"] == path
    assert details[A.REINDEX_REQUESTED]["sources"] == [second_path]
    assert details[A.COLLECTION_DELETED]["sources"] == [second_path]
    assert not Collection.objects.exists() and not Source.objects.exists()


def failing_create(monkeypatch, action: str) -> None:
    """The audit table refuses exactly the writes of one action."""
    original = AuditLog.objects.create

    def create(**fields):
        if fields.get("action") == action:
            raise OperationalError("database is locked")
        return original(**fields)

    monkeypatch.setattr(AuditLog.objects, "create", create)


def audit_failures() -> float:
    (family,) = metrics.AUDIT_WRITE_FAILURES.collect()
    return sum(s.value for s in family.samples if s.name.endswith("_total"))


def lost_entries(caplog) -> list[dict]:
    lines = [
        record.getMessage()
        for record in caplog.records
        if record.name == "audit.services" and record.levelno == logging.ERROR
    ]
    return [json.loads(line.split("entry: ", 1)[1]) for line in lines]


def test_an_operation_completes_when_its_completed_entry_cannot_be_written(
    indexed, as_owner, run_on_commit, monkeypatch, caplog
):
    failing_create(monkeypatch, A.OPERATION_COMPLETED)
    failures = audit_failures()
    operation, deliver = run_on_commit(lambda: services.reindex(as_owner, indexed))

    operation = deliver()

    assert operation.status == Operation.Status.COMPLETED
    assert operation.events.filter(kind="completed").exists()
    indexed.refresh_from_db()
    assert indexed.status == Collection.Status.READY
    assert not AuditLog.objects.filter(
        action=A.OPERATION_COMPLETED, operation=operation
    )
    assert audit_failures() == failures + 1
    (lost,) = lost_entries(caplog)
    assert lost["action"] == A.OPERATION_COMPLETED
    assert lost["operation_id"] == str(operation.id)
    assert lost["collection_id"] == str(indexed.id)
    assert lost["actor"] == "system"
    assert lost["details"]["counts"]["found"] == 3
    assert "OperationalError" in lost["error"]


def test_a_lost_entry_is_logged_as_json_that_gives_back_the_exact_path(
    as_owner,
    tmp_path,
    run_on_commit,
    django_capture_on_commit_callbacks,
    monkeypatch,
    caplog,
):
    folder = write_files(tmp_path / 'D:\\data\\"q"\n\\notes', {"n.txt": "notes"})
    with django_capture_on_commit_callbacks(execute=True):
        services.create_collection(as_owner, name="Odd", source=str(folder))
    collection = Collection.objects.get()
    failing_create(monkeypatch, A.SOURCE_REMOVED)
    source = collection.sources.get()
    operation, deliver = run_on_commit(
        lambda: services.remove_source(as_owner, collection, source)
    )

    operation = deliver()

    assert operation.status == Operation.Status.COMPLETED
    assert not Source.objects.exists()
    (lost,) = lost_entries(caplog)
    from audit.encoding import decode

    assert decode(lost["details"]) == {"source": str(folder.resolve())}
    message = next(r.getMessage() for r in caplog.records if r.name == "audit.services")
    assert "\n" not in message


def test_a_requested_change_without_its_entry_does_not_happen(
    db, as_owner, docs, monkeypatch
):
    failing_create(monkeypatch, A.COLLECTION_CREATED)

    with pytest.raises(OperationalError):
        services.create_collection(as_owner, name="Never", source=str(docs))

    assert not Collection.objects.exists()
    assert not Operation.objects.exists()


@pytest.mark.parametrize(
    "type,cancel_entries",
    [
        (Operation.Type.REMOVE_SOURCE, []),
        (Operation.Type.DELETE, []),
    ],
)
def test_removals_asked_to_cancel_while_running_still_complete(
    type, cancel_entries, indexed, as_owner, tmp_path, run_on_commit, monkeypatch
):
    from collections_app.services import Conflict

    make_request, _ = request_for(type, as_owner, tmp_path, lambda: indexed)
    before = last_entry_id()
    operation, deliver = run_on_commit(make_request)
    original = lifecycle.Progress.update
    refusals = []

    def user_cancels_during_the_run(progress, *args, **kwargs) -> None:
        if not refusals and not progress.operation.cancel_requested:
            refusals.append(None)
            try:
                cancel_operation(as_owner, Operation.objects.get(id=operation.id))
            except Conflict as exc:
                refusals[0] = exc
        original(progress, *args, **kwargs)

    monkeypatch.setattr(lifecycle.Progress, "update", user_cancels_during_the_run)
    operation = deliver()

    assert operation.status == Operation.Status.COMPLETED
    assert refusals[0] is not None  # a removal that has started is not interruptible
    completed = expected_entries(type, "completed")
    assert [e.action for e in entries_since(before, indexed.id)] == [
        *completed[:3],
        *cancel_entries,
        *completed[3:],
    ]
