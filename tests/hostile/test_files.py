"""Hostile files: encrypted, broken, binary, empty, legacy, oddly named, huge."""

import html
import io
import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import docx
import pytest
from django.urls import reverse

from collections_app import indexing, search
from collections_app.models import Chunk, Collection, Document
from operations import lifecycle
from operations.models import Operation
from tests.conftest import write_files
from tests.hostile.conftest import assert_counts_add_up, deadline, index, outcomes
from tests.test_extract import JAPANESE, encrypted_pdf, pdf_bytes

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 256 * 1024

LEGACY = {
    "latin1.txt": (
        "latin-1",
        "Die Käsefondue aus Zürich schmeckt großartig, sagte der Bäcker. " * 4,
        "Käsefondue",
    ),
    "cp1252.txt": (
        "cp1252",
        "Le café « crème » coûte 3 € — “très” cher ; où est la bibliothèque ? " * 4,
        "bibliothèque",
    ),
    "shift-jis.txt": (
        "shift_jis",
        ("今日は 富士山 に登りました。" + JAPANESE) * 3,
        "富士山",
    ),
}

ODD_NAMES = {
    "backslashes": "C:\\Users\\Public\\notes.txt",
    "quotes": "say \"cheese\" and 'bye'.txt",
    "newline": "first line\nsecond line.txt",
    "emoji": "party 🎉 plans.txt",
    "cjk": "会議メモ.txt",
    "decomposed": "cafe\u0301 menu.txt",
}
NOT_UTF8_NAME = b"caf\xe9 latin-1.txt"
NOT_UTF8_STORED = "caf\\xe9 latin-1.txt"


def docx_bytes(text: str) -> bytes:
    document = docx.Document()
    document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def zip_without_a_document() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("readme.txt", "this zip holds no Word document")
    return out.getvalue()


def hostile_files() -> dict[str, tuple[bytes, tuple[str, str]]]:
    """Every kind of file the issue names: content and expected (status, reason)."""
    report = pdf_bytes("Quarterly report on lighthouse maintenance")
    letter = docx_bytes("A letter about the ferry timetable")
    files = {
        "plain.txt": (b"Plain notes about tidal pools and limpets.", ("indexed", "")),
        "report.pdf": (report, ("indexed", "")),
        "owner-only.pdf": (
            encrypted_pdf(
                pdf_bytes("Owner locked minutes of the rowing club"), "", "RC4-128"
            ),
            ("indexed", ""),
        ),
        "user-password.pdf": (
            encrypted_pdf(pdf_bytes("Sealed salary table"), "hunter2", "RC4-128"),
            ("failed", "encrypted"),
        ),
        "truncated.pdf": (report[: len(report) // 2], ("failed", "corrupt")),
        "garbage.pdf": (os.urandom(2048), ("failed", "corrupt")),
        "nul-text.pdf": (pdf_bytes("abc\x00def beacon keepers"), ("indexed", "")),
        "nul-text.txt": (b"ghi\x00jkl lantern keepers", ("indexed", "")),
        "nul-page.html": (b"<p>mno\x00pqr harbour keepers</p>", ("indexed", "")),
        "letter.docx": (letter, ("indexed", "")),
        "truncated.docx": (letter[: len(letter) // 2], ("failed", "corrupt")),
        "not-word.docx": (zip_without_a_document(), ("failed", "corrupt")),
        "binary.txt": (bytes(range(256)) * 16, ("failed", "binary")),
        "empty.txt": (b"", ("skipped", "empty")),
        "blank.md": (b"  \n\n\t \n", ("skipped", "empty")),
        "too-large.txt": (
            b"large but harmless text. " * 12_000,
            ("failed", "too_large"),
        ),
    }
    for name, (encoding, text, _) in LEGACY.items():
        files[name] = (text.encode(encoding), ("indexed", ""))
    return files


def spy(function: Callable, calls: list[Path]) -> Callable:
    def recorded(path: Path, *args, **kwargs):
        calls.append(Path(path))
        return function(path, *args, **kwargs)

    return recorded


def test_one_operation_over_every_kind_of_hostile_file_completes_and_its_counts_add_up(
    as_owner, tmp_path, settings
):
    settings.MAX_FILE_BYTES = LIMIT
    files = hostile_files()
    folder = write_files(
        tmp_path / "hostile", {n: data for n, (data, _) in files.items()}
    )

    operation = index(as_owner, folder)

    assert operation.status == Operation.Status.COMPLETED, operation.error
    assert outcomes(operation) == {name: want for name, (_, want) in files.items()}
    assert operation.found == len(files)
    assert_counts_add_up(operation)
    assert not Document.objects.exclude(status="indexed").filter(error="").exists()
    texts = " ".join(Chunk.objects.values_list("text", flat=True))
    assert "rowing club" in texts and "ferry timetable" in texts
    assert "abcdef beacon" in texts and "\x00" not in texts
    assert "ghijkl lantern" in texts and "mnopqr harbour" in texts
    assert "salary" not in texts
    assert Collection.objects.get().status == Collection.Status.DEGRADED


def test_empty_and_blank_files_are_skipped_as_empty_not_indexed_without_chunks(
    as_owner, tmp_path
):
    folder = write_files(
        tmp_path / "empties",
        {
            "empty.txt": b"",
            "blank.md": b"\n \n",
            "also-empty.rst": b"",
            "real.txt": b"x y",
        },
    )

    operation = index(as_owner, folder)

    assert outcomes(operation) == {
        "empty.txt": ("skipped", "empty"),
        "blank.md": ("skipped", "empty"),
        "also-empty.rst": ("skipped", "empty"),
        "real.txt": ("indexed", ""),
    }
    assert (operation.indexed, operation.skipped, operation.failed) == (1, 3, 0)
    assert not Document.objects.filter(status="indexed", chunk_count=0).exists()
    assert Collection.objects.get().status == Collection.Status.READY


def test_text_in_latin1_windows1252_and_shift_jis_is_indexed_and_found_by_a_word_in_it(
    as_owner, owner, tmp_path
):
    folder = write_files(
        tmp_path / "legacy",
        {name: text.encode(encoding) for name, (encoding, text, _) in LEGACY.items()},
    )

    operation = index(as_owner, folder)

    assert operation.indexed == len(LEGACY)
    for name, (_, text, word) in LEGACY.items():
        stored = " ".join(
            Chunk.objects.filter(document__path=name).values_list("text", flat=True)
        )
        assert text.split("。")[0].strip() in stored
        results = search.search(owner, word)
        assert results and results[0].document == name, (word, results[:3])


def test_odd_file_names_are_indexed_and_stored_exactly_or_with_byte_escapes(
    as_owner, owner, client, tmp_path
):
    folder = write_files(
        tmp_path / "names",
        {name: f"A note filed under {key}." for key, name in ODD_NAMES.items()},
    )
    with open(os.path.join(os.fsencode(folder), NOT_UTF8_NAME), "wb") as handle:
        handle.write(b"A note whose name is Latin-1 bytes.")

    operation = index(as_owner, folder)

    expected = {*ODD_NAMES.values(), NOT_UTF8_STORED}
    assert set(Document.objects.values_list("path", flat=True)) == expected
    assert set(Document.objects.values_list("status", flat=True)) == {"indexed"}
    assert_counts_add_up(operation)
    assert Document.objects.filter(path="cafe\u0301 menu.txt").exists()
    assert not Document.objects.filter(path="caf\u00e9 menu.txt").exists()
    client.force_login(owner)
    page = client.get(reverse("collections:detail", args=[operation.collection_id]))
    shown = page.content.decode()
    for name in expected:
        assert html.escape(name) in shown, name


def test_odd_file_names_are_recognised_as_unchanged_when_indexed_again(
    as_owner, owner, tmp_path
):
    folder = write_files(
        tmp_path / "names",
        {name: f"A note filed under {key}." for key, name in ODD_NAMES.items()},
    )
    with open(os.path.join(os.fsencode(folder), NOT_UTF8_NAME), "wb") as handle:
        handle.write(b"A note whose name is Latin-1 bytes.")
    index(as_owner, folder)

    again = lifecycle.create_pending(
        collection=Collection.objects.get(),
        type=Operation.Type.INDEX,
        requested_by=owner,
    )
    again.refresh_from_db()

    assert again.status == Operation.Status.COMPLETED
    assert (again.unchanged, again.indexed, again.failed) == (len(ODD_NAMES) + 1, 0, 0)
    assert Document.objects.count() == len(ODD_NAMES) + 1


def test_a_file_name_with_a_newline_cannot_forge_a_log_line(as_owner, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="collections_app")
    folder = write_files(
        tmp_path / "forged",
        {"report.pdf\nERROR quarry: all documents deleted.pdf": b"not a pdf"},
    )

    index(as_owner, folder)

    lines = [r.getMessage() for r in caplog.records if r.name.startswith("collections")]
    assert any("not indexed (corrupt)" in line for line in lines)
    assert all("\n" not in line for line in lines)


def test_a_200_mb_file_over_the_limit_fails_as_too_large_without_being_read(
    as_owner, tmp_path, monkeypatch
):
    folder = write_files(tmp_path / "big", {"small.txt": "a small note about wrens"})
    huge = folder / "huge.txt"
    with huge.open("wb") as handle:
        # Sparse: 200 MB long, no disk and no memory until someone reads it.
        handle.truncate(200 * 1024 * 1024)
    read: list[Path] = []
    monkeypatch.setattr(indexing, "file_digest", spy(indexing.file_digest, read))
    monkeypatch.setattr(indexing, "extract_text", spy(indexing.extract_text, read))

    operation = index(as_owner, folder)

    assert outcomes(operation) == {
        "small.txt": ("indexed", ""),
        "huge.txt": ("failed", "too_large"),
    }
    assert folder / "small.txt" in read
    assert huge not in read
    assert "MAX_FILE_BYTES" in Document.objects.get(path="huge.txt").error


def test_a_named_pipe_with_a_text_name_is_passed_over_and_never_blocks(
    as_owner, tmp_path
):
    folder = write_files(tmp_path / "pipes", {"note.txt": "a note about gannets"})
    os.mkfifo(folder / "pipe.txt")

    with deadline(120):
        operation = index(as_owner, folder)

    assert operation.status == Operation.Status.COMPLETED
    assert outcomes(operation) == {"note.txt": ("indexed", "")}


def test_an_unexpected_error_whose_text_holds_nul_still_ends_the_operation(
    as_owner, tmp_path, monkeypatch
):
    folder = write_files(tmp_path / "docs", {"a.txt": "a perfectly good file"})

    def explode(*args, **kwargs):
        raise RuntimeError("parser gave up at \x00 offset 12")

    monkeypatch.setattr(indexing, "extract_text", explode)
    operation = index(as_owner, folder)

    assert operation.status == Operation.Status.FAILED
    assert operation.error == "Unexpected error: parser gave up at  offset 12"
    assert operation.events.last().kind == "failed"
    assert Collection.objects.get().status == Collection.Status.ERROR
