"""Indexing real folders: counts, unchanged files, failures that stay alone."""

import os
from pathlib import Path

import docx
import pytest

from collections_app import services
from collections_app.models import Chunk, Collection, Document
from operations.models import Operation
from tests.conftest import write_files

pytestmark = pytest.mark.django_db(transaction=True)


def index(request, folder: Path, name: str = "Docs", **options) -> Operation:
    operation = services.create_collection(
        request, name=name, source=str(folder), **options
    )
    operation.refresh_from_db()
    return operation


def make_docx(path: Path, text: str) -> None:
    document = docx.Document()
    document.add_paragraph(text)
    document.save(path)


def test_it_indexes_every_supported_format(as_owner, tmp_path):
    folder = write_files(
        tmp_path / "mixed",
        {
            "a.txt": "plain text about herons",
            "b.md": "# Markdown\n\nabout kingfishers",
            "c.rst": "Title\n=====\n\nabout cormorants",
            "d.html": "<html><body><p>about pelicans</p><script>x()</script></body></html>",
            "e.htm": "<p>about egrets</p>",
            "ignored.png": b"\x89PNG\r\n",
        },
    )
    make_docx(folder / "f.docx", "about puffins")
    operation = index(as_owner, folder)
    assert operation.status == Operation.Status.COMPLETED
    assert operation.counts() == {
        "found": 6,
        "indexed": 6,
        "unchanged": 0,
        "failed": 0,
        "skipped": 0,
        "chunks": 6,
    }
    texts = " ".join(Chunk.objects.values_list("text", flat=True))
    for bird in (
        "herons",
        "kingfishers",
        "cormorants",
        "pelicans",
        "egrets",
        "puffins",
    ):
        assert bird in texts
    assert "x()" not in texts


def test_chunks_follow_the_collection_settings(as_owner, tmp_path):
    sentence = "The quick brown fox jumps over the lazy dog. "
    folder = write_files(tmp_path / "long", {"long.txt": sentence * 200})
    operation = index(as_owner, folder, chunk_size=500, chunk_overlap=50)
    chunks = list(Chunk.objects.order_by("ordinal"))
    assert operation.chunks == len(chunks) > 10
    assert all(len(c.text) <= 500 for c in chunks)
    assert chunks[1].start < chunks[0].end
    assert all(len(c.embedding()) == 384 for c in chunks)


def test_a_broken_file_fails_alone_with_its_reason(as_owner, tmp_path):
    folder = write_files(
        tmp_path / "some-broken",
        {
            "good.txt": "a healthy document about lighthouses",
            "broken.pdf": b"%PDF-1.4\n1 0 obj << /Type /Catalog",
            "broken.docx": b"PK\x03\x04 not really a zip",
        },
    )
    operation = index(as_owner, folder)
    assert operation.status == Operation.Status.COMPLETED
    assert (operation.indexed, operation.failed) == (1, 2)
    failed = Document.objects.filter(status=Document.Status.FAILED)
    assert {d.path for d in failed} == {"broken.pdf", "broken.docx"}
    assert all(d.error_reason == "corrupt" and d.error for d in failed)
    collection = Collection.objects.get()
    assert collection.status == Collection.Status.DEGRADED


def test_reindex_embeds_every_file_again_and_picks_up_new_ones(as_owner, tmp_path):
    folder = write_files(tmp_path / "stable", {"one.txt": "first", "two.txt": "second"})
    index(as_owner, folder)
    collection = Collection.objects.get()
    before = set(Chunk.objects.values_list("id", flat=True))
    (folder / "three.txt").write_text("third")
    operation = services.reindex(as_owner, collection)
    operation.refresh_from_db()
    assert (operation.status, operation.indexed, operation.unchanged) == (
        "completed",
        3,
        0,
    )
    assert before.isdisjoint(Chunk.objects.values_list("id", flat=True))


def test_running_the_index_again_embeds_only_what_changed(as_owner, tmp_path):
    from operations import lifecycle
    from operations.tasks import run_operation

    folder = write_files(tmp_path / "again", {"one.txt": "first", "two.txt": "second"})
    index(as_owner, folder)
    collection = Collection.objects.get()
    one = Chunk.objects.get(document__path="one.txt").id
    (folder / "two.txt").write_text("second, edited")
    rerun = lifecycle.create_pending(
        collection=collection, type=Operation.Type.INDEX, requested_by=as_owner.user
    )
    run_operation(str(rerun.id))
    rerun.refresh_from_db()
    assert (rerun.indexed, rerun.unchanged) == (1, 1)
    assert Chunk.objects.get(document__path="one.txt").id == one
    assert Document.objects.count() == 2
    assert Chunk.objects.count() == 2


def test_deleted_files_are_forgotten_and_duplicates_are_skipped(as_owner, tmp_path):
    folder = write_files(
        tmp_path / "dups",
        {"a.txt": "same words", "b.txt": "same words", "c.txt": "other"},
    )
    operation = index(as_owner, folder)
    assert (operation.indexed, operation.skipped) == (2, 1)
    skipped = Document.objects.get(status=Document.Status.SKIPPED)
    assert skipped.error_reason == "duplicate"
    (folder / "c.txt").unlink()
    collection = Collection.objects.get()
    services.reindex(as_owner, collection)
    assert not Document.objects.filter(path="c.txt").exists()


def test_a_missing_source_folder_fails_the_operation_and_deletes_nothing(
    as_owner, tmp_path
):
    folder = write_files(tmp_path / "vanishing", {"keep.txt": "precious words"})
    index(as_owner, folder)
    collection = Collection.objects.get()
    os.rename(folder, tmp_path / "moved")
    operation = services.reindex(as_owner, collection)
    operation.refresh_from_db()
    assert operation.status == Operation.Status.FAILED
    assert "missing" in operation.error and "nothing was deleted" in operation.error
    assert Document.objects.filter(path="keep.txt").exists()
    assert Chunk.objects.count() == 1
    collection.refresh_from_db()
    assert collection.status == Collection.Status.ERROR


def test_remove_source_and_delete_take_their_chunks_with_them(as_owner, tmp_path):
    first = write_files(tmp_path / "first", {"a.txt": "alpha"})
    second = write_files(tmp_path / "second", {"b.txt": "beta", "c.txt": "gamma"})
    index(as_owner, first)
    collection = Collection.objects.get()
    services.add_source(as_owner, collection, str(second))
    assert Chunk.objects.count() == 3
    source = services.find_source(collection, str(second))
    operation = services.remove_source(as_owner, collection, source)
    operation.refresh_from_db()
    assert operation.status == Operation.Status.COMPLETED
    assert list(Chunk.objects.values_list("text", flat=True)) == ["alpha"]
    collection.refresh_from_db()
    assert (collection.document_count, collection.chunk_count) == (1, 1)
    delete = services.delete_collection(as_owner, collection)
    delete.refresh_from_db()
    assert delete.status == Operation.Status.COMPLETED
    assert delete.collection_name == "Docs"
    assert not Collection.objects.exists()
    assert not Chunk.objects.exists() and not Document.objects.exists()


def test_cancelling_a_running_operation_stops_between_files(
    as_owner, tmp_path, monkeypatch
):
    from operations import lifecycle

    folder = write_files(
        tmp_path / "many", {f"f{i:02}.txt": f"file {i}" for i in range(20)}
    )
    calls = {"n": 0}
    original = lifecycle.Progress.cancel_requested

    def cancel_after_five(self):
        calls["n"] += 1
        if calls["n"] == 5:
            lifecycle.Operation.objects.filter(id=self.operation.id).update(
                cancel_requested=True
            )
        return original(self)

    monkeypatch.setattr(lifecycle.Progress, "cancel_requested", cancel_after_five)
    operation = index(as_owner, folder)
    assert operation.status == Operation.Status.CANCELLED
    assert 0 < Document.objects.count() < 20


def test_a_source_path_with_backslashes_and_cjk_indexes_and_shows_as_given(
    as_owner, tmp_path
):
    folder = write_files(
        tmp_path / "C:\\Users\\Public\\Docs\\日本", {"メモ.txt": "富士山の写真"}
    )
    operation = index(as_owner, folder)
    assert operation.status == Operation.Status.COMPLETED
    collection = Collection.objects.get()
    assert collection.sources.get().path == str(folder.resolve())
    assert Document.objects.get().path == "メモ.txt"


def test_two_files_that_swapped_contents_both_stay_indexed(as_owner, tmp_path):
    folder = write_files(
        tmp_path / "swap",
        {
            "a.txt": "Volcanoes erupt molten rock and ash.",
            "b.txt": "Penguins huddle together in the antarctic winter.",
        },
    )
    index(as_owner, folder)
    (folder / "a.txt").write_text("Penguins huddle together in the antarctic winter.")
    (folder / "b.txt").write_text("Volcanoes erupt molten rock and ash.")

    rerun = services.reindex(as_owner, Collection.objects.get())

    rerun.refresh_from_db()
    assert (rerun.indexed, rerun.skipped) == (2, 0)
    texts = dict(Chunk.objects.values_list("document__path", "text"))
    assert texts == {
        "a.txt": "Penguins huddle together in the antarctic winter.",
        "b.txt": "Volcanoes erupt molten rock and ash.",
    }


def test_removing_a_source_indexes_the_duplicates_another_source_kept_of_it(
    as_owner, tmp_path
):
    """A backup folder: its file duplicates one of the first source."""
    outer = write_files(
        tmp_path / "outer",
        {"top.txt": "Only in the outer folder.", "inner/kept.txt": "Kestrels hover."},
    )
    backup = write_files(tmp_path / "backup", {"kept.txt": "Kestrels hover."})
    index(as_owner, outer)
    collection = Collection.objects.get()
    services.add_source(as_owner, collection, str(backup))
    assert Document.objects.get(path="kept.txt").status == Document.Status.SKIPPED

    outer_source = services.find_source(collection, str(outer))
    removal = services.remove_source(as_owner, collection, outer_source)

    removal.refresh_from_db()
    assert removal.status == Operation.Status.COMPLETED, removal.error
    kept = Document.objects.get()
    assert (kept.path, kept.status) == ("kept.txt", Document.Status.INDEXED)
    assert list(Chunk.objects.values_list("text", flat=True)) == ["Kestrels hover."]
    collection.refresh_from_db()
    assert collection.document_count == 1


def test_three_files_that_rotated_contents_all_stay_indexed(as_owner, tmp_path):
    texts = ["Apples ripen in autumn.", "Bees pollinate clover.", "Cranes fly south."]
    folder = write_files(
        tmp_path / "rot", {f"{n}.txt": t for n, t in zip("abc", texts, strict=True)}
    )
    index(as_owner, folder)
    for name, text in zip("abc", texts[1:] + texts[:1], strict=True):
        (folder / f"{name}.txt").write_text(text)

    rerun = services.reindex(as_owner, Collection.objects.get())

    rerun.refresh_from_db()
    assert rerun.status == Operation.Status.COMPLETED, rerun.error
    assert dict(Chunk.objects.values_list("document__path", "text")) == {
        "a.txt": texts[1],
        "b.txt": texts[2],
        "c.txt": texts[0],
    }


def test_adding_a_backup_of_files_edited_since_indexes_the_old_copies(
    as_owner, tmp_path
):
    folder = write_files(tmp_path / "live", {"a.txt": "first draft", "b.txt": "plan"})
    backup = write_files(tmp_path / "backup", {"a.txt": "first draft", "b.txt": "plan"})
    index(as_owner, folder)
    (folder / "a.txt").write_text("second draft")
    (folder / "b.txt").write_text("revised plan")

    added = services.add_source(as_owner, Collection.objects.get(), str(backup))

    added.refresh_from_db()
    assert added.status == Operation.Status.COMPLETED, added.error
    assert added.indexed == 2


def test_a_stopping_worker_still_finishes_the_duplicates_of_a_removed_source(
    as_owner, tmp_path, monkeypatch
):
    """The source is gone by then: a stopped removal could not be run again."""
    from collections_app import indexing
    from operations import lifecycle

    outer = write_files(tmp_path / "outer", {"inner/kept.txt": "Kestrels hover."})
    backup = write_files(tmp_path / "backup", {"kept.txt": "Kestrels hover."})
    index(as_owner, outer)
    collection = Collection.objects.get()
    services.add_source(as_owner, collection, str(backup))
    monkeypatch.setattr(lifecycle, "enqueue", lambda operation_id: None)
    removal = services.remove_source(
        as_owner, collection, services.find_source(collection, str(outer))
    )
    running = lifecycle.claim(removal.id)
    stop_file = tmp_path / "worker.stop"
    stop_file.touch()
    monkeypatch.setenv("QUARRY_STOP_FILE", str(stop_file))

    assert indexing.run(running) == (Operation.Status.COMPLETED, "")
    assert Document.objects.get().status == Document.Status.INDEXED


@pytest.mark.parametrize("relation", ["inside", "around"])
def test_a_folder_overlapping_a_source_is_refused(as_owner, tmp_path, relation):
    outer = write_files(tmp_path / "outer", {"inner/note.txt": "Plovers nest."})
    first, second = (outer, outer / "inner")
    if relation == "around":
        first, second = second, first
    index(as_owner, first)

    with pytest.raises(services.ServiceError, match="already a source"):
        services.add_source(as_owner, Collection.objects.get(), str(second))

    assert Collection.objects.get().sources.count() == 1
