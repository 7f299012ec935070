"""Hostile folders: escapes from the roots, symlinks, cycles, vanished roots."""

import io
import os
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse

from collections_app import services
from collections_app.models import Chunk, Collection, Document, Source
from collections_app.services import ServiceError
from operations.models import Operation
from tests.conftest import write_files
from tests.hostile.conftest import assert_counts_add_up, deadline, index, outcomes

ESCAPES = ["dot-dot", "symlink", "chain of symlinks", "sibling sharing the prefix"]
REFUSAL = "outside the document roots"


@pytest.fixture
def roots(tmp_path, settings) -> Path:
    """The only document root; everything else in tmp_path is outside it."""
    root = tmp_path / "roots"
    root.mkdir()
    settings.DOCUMENT_ROOTS = [root]
    return root


@pytest.fixture
def outside(tmp_path) -> Path:
    return write_files(tmp_path / "outside", {"secret.txt": "the vault code is 4711"})


def escaping_path(kind: str, roots: Path, outside: Path) -> str:
    """A folder path that looks as if it were inside `roots` but is not."""
    if kind == "dot-dot":
        return f"{roots}/../outside"
    if kind == "symlink":
        (roots / "link").symlink_to(outside)
        return str(roots / "link")
    if kind == "chain of symlinks":
        (roots / "second").symlink_to(outside)
        (roots / "first").symlink_to(roots / "second")
        return str(roots / "first")
    sibling = roots.with_name(roots.name + "-evil")
    sibling.mkdir()
    return str(sibling)


def run_command(*args: str) -> tuple[int, str]:
    """Run a management command as a shell would: (exit code, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(*args, stdout=out, stderr=err)
    except SystemExit as exc:
        return exc.code, err.getvalue()
    return 0, err.getvalue()


def create_form(source: str) -> dict[str, str]:
    return {
        "name": "Escape",
        "description": "",
        "source": source,
        "chunk_size": "800",
        "chunk_overlap": "100",
    }


# --- refused when asked: service, web form, command line ---------------------


@pytest.mark.parametrize("kind", ESCAPES)
def test_the_service_refuses_a_folder_that_escapes_the_roots(
    db, as_owner, roots, outside, kind
):
    path = escaping_path(kind, roots, outside)

    with pytest.raises(ServiceError, match=REFUSAL) as caught:
        services.create_collection(as_owner, name="Escape", source=path)

    assert caught.value.field == "source"
    assert not Collection.objects.exists() and not Operation.objects.exists()


@pytest.mark.parametrize("kind", ESCAPES)
def test_the_web_form_refuses_a_folder_that_escapes_the_roots_with_the_reason(
    client, owner, roots, outside, kind
):
    client.force_login(owner)

    response = client.post(
        reverse("collections:create"), create_form(escaping_path(kind, roots, outside))
    )

    assert response.status_code == 200
    assert REFUSAL in response.content.decode()
    assert not Collection.objects.exists()


@pytest.mark.parametrize("kind", ESCAPES)
def test_the_command_line_refuses_a_folder_that_escapes_the_roots_with_the_reason(
    db, owner, roots, outside, kind
):
    path = escaping_path(kind, roots, outside)

    code, err = run_command(
        "collections", "create", "Escape", "--source", path, "--owner", "olivia"
    )

    assert code == 1
    assert REFUSAL in err and "Traceback" not in err
    assert not Collection.objects.exists()


def test_adding_a_symlinked_folder_that_leads_outside_is_refused_by_form_and_command(
    db, client, owner, as_owner, roots, outside
):
    inside = write_files(roots / "inside", {"a.txt": "allowed words"})
    collection = services.create_collection(
        as_owner, name="Docs", source=str(inside)
    ).collection
    path = escaping_path("symlink", roots, outside)
    client.force_login(owner)

    response = client.post(
        reverse("collections:add_source", args=[collection.id]), {"source": path}
    )
    code, err = run_command(
        "collections", "add-source", "Docs", path, "--owner", "olivia"
    )

    assert response.status_code == 200 and REFUSAL in response.content.decode()
    assert code == 1 and REFUSAL in err
    assert list(Source.objects.values_list("path", flat=True)) == [str(inside)]


def test_a_source_folder_whose_name_is_not_utf8_is_refused_with_a_clear_message(
    db, as_owner, roots
):
    folder = os.fsdecode(os.fsencode(roots) + b"/caf\xe9")
    os.mkdir(folder)

    with pytest.raises(ServiceError, match="UTF-8") as caught:
        services.create_collection(as_owner, name="Latin", source=folder)

    assert caught.value.field == "source"
    assert not Collection.objects.exists()


# --- checked again while indexing, file by file ------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_symlink_inside_the_source_that_leads_outside_fails_alone_as_outside_roots(
    as_owner, roots, outside
):
    source = write_files(
        roots / "docs",
        {"plain.txt": "ordinary notes about herons", "sub/deep.md": "about egrets"},
    )
    shared = write_files(roots / "shared", {"common.txt": "shared notes on owls"})
    (source / "leak.txt").symlink_to(outside / "secret.txt")
    (source / "leaked-folder").symlink_to(outside)
    (source / "within.txt").symlink_to(shared / "common.txt")

    operation = index(as_owner, source)

    assert operation.status == Operation.Status.COMPLETED
    assert outcomes(operation) == {
        "plain.txt": ("indexed", ""),
        "sub/deep.md": ("indexed", ""),
        "within.txt": ("indexed", ""),
        "leak.txt": ("failed", "outside_roots"),
        "leaked-folder": ("failed", "outside_roots"),
    }
    assert_counts_add_up(operation)
    assert not Chunk.objects.filter(text__contains="vault").exists()


@pytest.mark.django_db(transaction=True)
def test_symlink_cycles_are_cut_and_every_file_is_indexed_once(as_owner, roots):
    source = write_files(
        roots / "cyclic",
        {"top.txt": "the top file about larks", "dir/inner.txt": "inner about wrens"},
    )
    (source / "dir" / "up").symlink_to("..")
    (source / "dir" / "home").symlink_to(source)
    (source / "dir" / "self").symlink_to(source / "dir")
    (source / "itself.txt").symlink_to("itself.txt")

    with deadline(120):
        operation = index(as_owner, source)

    assert operation.status == Operation.Status.COMPLETED
    assert outcomes(operation) == {
        "top.txt": ("indexed", ""),
        "dir/inner.txt": ("indexed", ""),
        "itself.txt": ("failed", "unreadable"),
    }
    assert Chunk.objects.count() == 2
    assert_counts_add_up(operation)


def move_away(folder: Path, outside: Path) -> None:
    folder.rename(folder.with_name("moved"))


def replace_with_a_file(folder: Path, outside: Path) -> None:
    folder.rename(folder.with_name("moved"))
    folder.write_text("not a folder any more")


def replace_with_a_symlink_outside(folder: Path, outside: Path) -> None:
    folder.rename(folder.with_name("moved"))
    folder.symlink_to(outside)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (move_away, "missing"),
        (replace_with_a_file, "not a folder"),
        (replace_with_a_symlink_outside, "no longer inside DOCUMENT_ROOTS"),
    ],
)
def test_a_source_root_gone_when_the_operation_runs_fails_it_and_deletes_nothing(
    as_owner, roots, outside, change, reason
):
    folder = write_files(
        roots / "docs", {"keep.txt": "precious words", "also.md": "more words"}
    )
    index(as_owner, folder)
    collection = Collection.objects.get()
    change(folder, outside)

    operation = services.reindex(as_owner, collection)
    operation.refresh_from_db()

    assert operation.status == Operation.Status.FAILED
    assert reason in operation.error and "nothing was deleted" in operation.error
    assert set(Document.objects.values_list("path", "status")) == {
        ("keep.txt", "indexed"),
        ("also.md", "indexed"),
    }
    assert Chunk.objects.count() == 2
    collection.refresh_from_db()
    assert collection.status == Collection.Status.ERROR
    assert not Chunk.objects.filter(text__contains="vault").exists()


@pytest.mark.django_db
def test_a_path_outside_the_roots_gets_one_answer_whether_or_not_it_exists(
    as_owner, roots, outside, tmp_path
):
    sealed = tmp_path / "sealed"
    sealed.mkdir(mode=0)
    answers = set()
    for path in [outside, tmp_path / "nowhere", sealed / "inner", Path("/proc/1/root")]:
        with pytest.raises(ServiceError) as refused:
            services.create_collection(as_owner, name="Probe", source=str(path))
        answers.add(refused.value.message.replace(str(path), "PATH"))
    sealed.chmod(0o700)

    assert len(answers) == 1 and REFUSAL in answers.pop()
