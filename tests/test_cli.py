"""The command line: `collections`, `search` and `operations` over the services."""

import io
import json
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.core.management.base import OutputWrapper

from collections_app import services
from collections_app.cli import BarProgress, PlainProgress
from collections_app.models import Collection, Document
from collections_app.services import Request
from operations import lifecycle
from operations.models import Operation
from tests.conftest import BASE_DIR, child_env, write_files

pytestmark = pytest.mark.django_db(transaction=True)

RESULT_KEYS = {"collection", "document", "source", "passage", "score"}


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


def run(*args: str) -> Outcome:
    """Run a command in this process as a shell would, keeping its exit code."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(*args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return Outcome(code, out.getvalue(), err.getvalue())


def olivia(*args: str) -> Outcome:
    return run(*args, "--owner", "olivia")


def create(name: str, source: Path, *extra: str) -> Outcome:
    return olivia("collections", "create", name, "--source", str(source), *extra)


def in_subprocess(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=child_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Tests started in the background by a shell inherit SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.fixture
def notes(owner, docs) -> Collection:
    outcome = create("notes", docs, "--wait")
    assert outcome.code == 0, outcome.err
    return Collection.objects.get(owner=owner, name="notes")


@pytest.fixture
def extra(tmp_path) -> Path:
    return write_files(tmp_path / "extra", {"bees.txt": "Bees pollinate flowers."})


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_create_with_wait_prints_the_completed_operation_as_json(owner, docs):
    outcome = create("notes", docs, "--wait", "--json")

    assert outcome.code == 0
    operation = outcome.json()
    assert (operation["type"], operation["status"]) == ("index", "completed")
    assert operation["collection"] == "notes"
    assert operation["counts"]["found"] == 3
    assert operation["counts"]["indexed"] == 3
    assert operation["counts"]["chunks"] >= 3
    assert "completed: found 3, indexed 3" in outcome.err


def test_create_with_wait_prints_one_summary_line(owner, docs):
    outcome = create("notes", docs, "--wait")

    assert outcome.code == 0
    assert outcome.out.count("\n") == 1
    assert "(index of notes) completed: found 3, indexed 3, unchanged 0" in outcome.out


@pytest.mark.parametrize(
    "extra",
    [("bad\udcffname",), ("fine", "--description", "d\udcffesc")],
    ids=["name", "description"],
)
def test_create_refuses_bytes_that_are_not_utf8_in_one_line(owner, docs, extra):
    """A terminal in another encoding hands such bytes on as lone surrogates."""
    name, *more = extra

    outcome = create(name, docs, *more)

    assert outcome.code == 1
    assert len(outcome.err.splitlines()) == 1 and "Traceback" not in outcome.err
    assert not Collection.objects.exists()


def test_create_passes_description_and_chunking_on(owner, docs):
    create("notes", docs, "--description", "Home", "--chunk-size", "400")

    collection = Collection.objects.get(owner=owner, name="notes")
    assert (collection.description, collection.chunk_size) == ("Home", 400)


def test_create_without_wait_says_the_operation_is_queued(owner, docs, monkeypatch):
    def queued_but_not_run(operation_id) -> bool:
        Operation.objects.filter(id=operation_id).update(task_id="task-1")
        return True

    monkeypatch.setattr(lifecycle, "enqueue", queued_but_not_run)
    outcome = create("notes", docs)

    operation = Operation.objects.get()
    assert outcome.code == 0
    assert outcome.out == (
        f"Operation {operation.id} (index of notes) is pending: queued; "
        "follow it with `manage.py operations list --active`\n"
    )


def test_list_prints_only_the_owners_collections_as_json(owner, teammate, docs, notes):
    services.create_collection(Request(user=teammate), name="theirs", source=str(docs))

    outcome = olivia("collections", "list", "--json")

    assert outcome.code == 0
    [listed] = outcome.json()
    assert (listed["name"], listed["status"]) == ("notes", "ready")
    assert listed["documents"] == 3
    assert listed["sources"] == [str(docs.resolve())]


def test_list_shows_paths_exactly_as_stored(owner, tmp_path):
    folder = write_files(tmp_path / "C:\\Users\\x" / "日本", {"a.txt": "Kyoto temples"})
    create("notes", folder, "--wait")

    outcome = olivia("collections", "list")

    assert outcome.out.splitlines() == [
        "notes  ready  1 documents, 1 chunks, 0 failed",
        f"  {folder.resolve()}",
    ]


def test_search_json_puts_the_matching_document_first(owner, notes):
    outcome = olivia("search", "how do I make sourdough rise", "--json")

    assert outcome.code == 0
    results = outcome.json()
    assert results[0]["document"] == "recipes/bread.html"
    assert results[0]["collection"] == "notes"
    assert all(RESULT_KEYS <= result.keys() for result in results)


def test_search_returns_at_most_limit_results(owner, notes):
    outcome = olivia("search", "light", "--limit", "1", "--json")

    assert len(outcome.json()) == 1


def test_search_numbers_results_with_document_collection_and_score(owner, tmp_path):
    folder = write_files(
        tmp_path / "C:\\Users\\x",
        {"日本/telescope.txt": "A reflector uses mirrors to gather starlight."},
    )
    create("notes", folder, "--wait")

    outcome = olivia("search", "mirrors", "--collection", "notes")

    first, source, passage = outcome.out.splitlines()[:3]
    assert first.startswith("1. 日本/telescope.txt  (collection notes, score ")
    assert source == f"   in {folder.resolve()}"
    assert passage == "   A reflector uses mirrors to gather starlight."


@pytest.mark.parametrize("query", ["", "   ", "\x00\t"])
def test_search_without_words_is_bad_usage(owner, notes, query):
    outcome = olivia("search", query)

    assert outcome.code == 2
    assert outcome.err == "Enter a query: words or a question to look for.\n"


def test_search_in_an_unknown_collection_exits_1(owner, notes):
    outcome = olivia("search", "tomatoes", "--collection", "nope")

    assert outcome.code == 1
    assert outcome.err == "No collection named 'nope' for user 'olivia'\n"


def test_add_source_indexes_the_new_folder(owner, notes, extra):
    outcome = olivia(
        "collections", "add-source", "notes", str(extra), "--wait", "--json"
    )

    assert outcome.code == 0
    assert outcome.json()["type"] == "append"
    assert outcome.json()["counts"]["indexed"] == 1
    assert notes.documents.filter(path="bees.txt").exists()


def test_remove_source_forgets_the_folders_documents(owner, notes, docs, extra):
    olivia("collections", "add-source", "notes", str(extra), "--wait")

    outcome = olivia(
        "collections", "remove-source", "notes", str(extra), "--wait", "--json"
    )

    assert outcome.code == 0
    assert outcome.json()["status"] == "completed"
    assert [source.path for source in notes.sources.all()] == [str(docs.resolve())]
    assert not Document.objects.filter(path="bees.txt").exists()


def test_remove_source_of_a_folder_that_is_no_source_exits_1(owner, notes, extra):
    outcome = olivia("collections", "remove-source", "notes", str(extra))

    assert outcome.code == 1
    assert outcome.err == f"{extra} is not a source of collection “notes”.\n"


def test_reindex_with_wait_indexes_every_file_again(owner, notes):
    outcome = olivia("collections", "reindex", "notes", "--wait", "--json")

    assert outcome.code == 0
    assert outcome.json()["type"] == "reindex"
    assert outcome.json()["counts"]["indexed"] == 3


def test_delete_removes_the_collection(owner, notes):
    outcome = olivia("collections", "delete", "notes", "--wait", "--json")

    assert outcome.code == 0
    assert outcome.json()["status"] == "completed"
    assert not Collection.objects.filter(id=notes.id).exists()


def test_an_unknown_collection_exits_1_with_one_line(owner):
    outcome = olivia("collections", "reindex", "nope")

    assert outcome.code == 1
    assert outcome.out == ""
    assert outcome.err == "No collection named 'nope' for user 'olivia'\n"


def test_another_users_collection_is_unknown_to_the_owner(owner, teammate, notes):
    outcome = run("collections", "delete", "notes", "--owner", "theo")

    assert outcome.code == 1
    assert outcome.err == "No collection named 'notes' for user 'theo'\n"
    assert Collection.objects.filter(id=notes.id).exists()


def test_an_unknown_owner_exits_1(owner):
    outcome = run("collections", "list", "--owner", "nobody")

    assert outcome.code == 1
    assert outcome.err == "No active user named 'nobody'.\n"


def test_without_an_admin_the_owner_must_be_given(owner):
    outcome = run("collections", "list")

    assert outcome.code == 2
    assert outcome.err.count("\n") == 1
    assert "pass --owner USER" in outcome.err


def test_the_owner_defaults_to_the_oldest_active_superuser(django_user_model, docs):
    django_user_model.objects.create_superuser("retired", is_active=False)
    django_user_model.objects.create_superuser("admin")
    django_user_model.objects.create_superuser("later")

    outcome = run("collections", "create", "notes", "--source", str(docs))

    assert outcome.code == 0
    assert Collection.objects.get(name="notes").owner.username == "admin"


def test_a_failed_operation_makes_wait_exit_1(owner, notes, docs):
    shutil.rmtree(docs)

    outcome = olivia("collections", "reindex", "notes", "--wait", "--json")

    assert outcome.code == 1
    assert outcome.json()["status"] == "failed"
    assert "is missing or not a folder" in outcome.json()["error"]
    assert "(reindex of notes) failed: found 0" in outcome.err


def test_a_folder_outside_the_document_roots_is_refused(
    owner, docs, tmp_path, settings
):
    settings.DOCUMENT_ROOTS = [tmp_path / "elsewhere"]

    outcome = create("notes", docs, "--wait", "--json")

    assert outcome.code == 1
    assert outcome.out == ""
    assert "is outside the document roots" in outcome.err
    assert not Collection.objects.exists()


@pytest.mark.django_db(transaction=False)
def test_a_busy_collection_is_refused(
    owner, as_owner, docs, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        services.create_collection(as_owner, name="notes", source=str(docs))

    outcome = olivia("collections", "reindex", "notes")

    assert outcome.code == 1
    assert "already has an active index operation (pending)" in outcome.err


@pytest.mark.django_db(transaction=False)
def test_cancel_ends_a_pending_operation_named_by_a_prefix(
    owner, as_owner, docs, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        operation = services.create_collection(as_owner, name="notes", source=str(docs))

    outcome = olivia("operations", "cancel", str(operation.id)[:13])

    assert outcome.code == 0
    assert outcome.out == f"Operation {operation.id} cancelled.\n"
    operation.refresh_from_db()
    assert operation.status == Operation.Status.CANCELLED


def test_cancel_of_an_ended_operation_exits_1(owner, notes):
    operation = notes.operations.get()

    outcome = olivia("operations", "cancel", str(operation.id))

    assert outcome.code == 1
    assert outcome.err == f"Operation {operation.id} has already ended (completed).\n"


def test_cancel_refuses_a_prefix_shorter_than_eight_hex_digits(owner):
    # In a shell argparse exits 2; call_command turns that into CommandError.
    with pytest.raises(CommandError, match="at least 8 hex digits"):
        olivia("operations", "cancel", "abc1234")


def test_cancel_of_someone_elses_operation_finds_nothing(owner, teammate, notes):
    operation = notes.operations.get()

    outcome = run("operations", "cancel", str(operation.id), "--owner", "theo")

    assert outcome.code == 1
    assert outcome.err.startswith("No operation with an id starting")


@pytest.mark.django_db(transaction=False)
def test_operations_list_active_shows_only_unfinished_operations(
    owner, as_owner, docs, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        done = services.create_collection(as_owner, name="done", source=str(docs))
        waiting = services.create_collection(as_owner, name="waiting", source=str(docs))
    Operation.objects.filter(id=done.id).update(status=Operation.Status.COMPLETED)

    active = olivia("operations", "list", "--active", "--json")
    everything = olivia("operations", "list")

    assert [operation["id"] for operation in active.json()] == [str(waiting.id)]
    assert len(everything.out.splitlines()) == 2
    assert str(done.id) in everything.out


def test_a_terminal_sees_one_progress_line_redrawn_in_place():
    stream = Terminal()
    bar = BarProgress(OutputWrapper(stream))

    bar.show(Operation(step="indexing", total=10, done=5, status="processing"))
    bar.close(Operation(step="completed", total=10, done=10, status="completed"))

    assert stream.getvalue() == (
        "\r[###############---------------]  50% 5/10 indexing"
        "\r[##############################] 100% 10/10 completed\n"
    )


def test_a_pipe_sees_a_line_per_step_or_ten_points_at_most_once_a_second():
    stream, now = io.StringIO(), [0.0]
    plain = PlainProgress(OutputWrapper(stream), clock=lambda: now[0])
    ticks = [
        (0.0, 0, "scanning"),
        (1.5, 5, "scanning"),
        (3.0, 10, "indexing"),
        (3.5, 90, "indexing"),
        (5.0, 95, "indexing"),
        (6.0, 100, "indexing"),
    ]

    for at, done, step in ticks:
        now[0] = at
        plain.show(Operation(step=step, total=100, done=done, status="processing"))

    assert [line.split(": ", 1)[1] for line in stream.getvalue().splitlines()] == [
        "processing, scanning 0% (0/100)",
        "processing, indexing 10% (10/100)",
        "processing, indexing 95% (95/100)",
    ]


def test_search_in_a_subprocess_prints_only_json_on_stdout(owner, notes):
    child = in_subprocess(
        "search", "telescope mirrors", "--owner", "olivia", "--json", QUEUE_SYNC="true"
    )
    out, err = child.communicate(timeout=120)

    assert child.returncode == 0, err
    assert json.loads(out)[0]["document"] == "notes/astronomy.md"


def test_ctrl_c_while_waiting_stops_waiting_but_not_the_operation(owner, notes):
    # No worker runs, so the queued reindex stays pending while we wait on it.
    child = in_subprocess(
        "collections", "reindex", "notes", "--owner", "olivia", "--wait"
    )
    waiting = next(line for line in child.stderr if ": pending, queued 0%" in line)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)

    reindex = notes.operations.get(type=Operation.Type.REINDEX)
    assert waiting.startswith(str(reindex.id))
    assert child.returncode == 130
    assert out == ""
    assert err.startswith(f"Stopped waiting; operation {reindex.id} keeps running")
    assert err.count("\n") == 1
    assert reindex.status == Operation.Status.PENDING
