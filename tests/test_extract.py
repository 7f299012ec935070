"""Text extraction from files built at test time: text, HTML, PDF and DOCX."""

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import docx
import pytest
from pypdf import PageObject, PdfReader, PdfWriter
from pypdf.errors import DependencyError

from collections_app import extract
from collections_app.extract import ExtractionError, extract_text, is_supported

REPO = Path(__file__).resolve().parent.parent
LIMIT = 1_000_000

FRENCH = (
    "Le café « crème » coûte 3 € — “très” cher, n’est-ce pas ? Voilà l’été. "
    "Où est la bibliothèque ? À côté de l’église, près du marché. "
)
GERMAN = "Größe und Übermaß: die naïve Façade des Schlosses, señor. Grüße! "
JAPANESE = "日本語のテキストです。これはテストの文章です。東京は大きな都市です。"


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def reason_for(path: Path, max_bytes: int = LIMIT) -> str:
    with pytest.raises(ExtractionError) as caught:
        extract_text(path, max_bytes)
    assert caught.value.message
    assert "\n" not in caught.value.message
    return caught.value.reason


# --- PDF builders ------------------------------------------------------------


def pdf_bytes(*page_texts: str, broken_pages: tuple[int, ...] = ()) -> bytes:
    """A minimal PDF with one Helvetica text line per page.

    Pages listed in `broken_pages` declare a stream filter that does not
    exist, so reading their content fails.
    """
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"",  # the page tree, filled in once the pages are numbered
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    kids = []
    for index, text in enumerate(page_texts):
        stream = b"BT /F1 12 Tf 72 720 Td (%s) Tj ET" % text.encode("latin-1")
        bogus = b" /Filter /NoSuchDecode" if index in broken_pages else b""
        objects.append(
            b"<< /Length %d%s >>\nstream\n%s\nendstream" % (len(stream), bogus, stream)
        )
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % len(objects)
        )
        kids.append(b"%d 0 R" % len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(kids),
        len(kids),
    )
    return _assemble_pdf(objects)


def _assemble_pdf(objects: list[bytes]) -> bytes:
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def encrypted_pdf(plain: bytes, user_password: str, algorithm: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(plain)))
    writer.encrypt(user_password=user_password, owner_password="o", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


# --- support and limits ------------------------------------------------------


def test_it_supports_the_documented_suffixes_in_any_case():
    for name in ("a.txt", "b.MD", "c.markdown", "d.rst", "e.Html", "f.htm"):
        assert is_supported(Path(name))
    assert is_supported(Path("g.PDF"))
    assert is_supported(Path("h.docx"))
    documented = ".txt .md .markdown .rst .html .htm .pdf .docx".split()
    assert frozenset(documented) == extract.SUPPORTED_SUFFIXES


def test_it_does_not_support_other_suffixes():
    for name in ("a.doc", "b.xlsx", "c.png", "README", "archive.tar.gz"):
        assert not is_supported(Path(name))


def test_it_refuses_an_unsupported_file_as_unsupported(tmp_path):
    path = write(tmp_path, "sheet.xlsx", b"PK\x03\x04")
    assert reason_for(path) == "unsupported"


def test_it_refuses_a_file_over_the_limit_as_too_large(tmp_path):
    path = write(tmp_path, "big.txt", "x" * 101)
    assert reason_for(path, max_bytes=100) == "too_large"


def test_it_reads_a_file_of_exactly_the_limit(tmp_path):
    path = write(tmp_path, "edge.txt", "y" * 100)
    assert extract_text(path, 100) == "y" * 100


def test_it_refuses_an_unreadable_file_as_permission_denied(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    path = write(tmp_path, "secret.txt", "classified")
    path.chmod(0)
    try:
        assert reason_for(path) == "permission_denied"
    finally:
        path.chmod(0o600)


def test_it_maps_a_permission_error_on_open_to_permission_denied(tmp_path, monkeypatch):
    path = write(tmp_path, "secret.txt", "classified")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)
    assert reason_for(path) == "permission_denied"


def test_it_reports_a_missing_file_as_unreadable(tmp_path):
    assert reason_for(tmp_path / "gone.txt") == "unreadable"


def test_it_reports_a_directory_with_a_text_suffix_as_unreadable(tmp_path):
    (tmp_path / "folder.txt").mkdir()
    assert reason_for(tmp_path / "folder.txt") == "unreadable"


# --- plain text --------------------------------------------------------------


def test_it_returns_an_empty_string_for_an_empty_file(tmp_path):
    assert extract_text(write(tmp_path, "empty.txt", b""), LIMIT) == ""


def test_it_reads_utf8_text_unchanged(tmp_path):
    text = "Naïve café — ünïcödé ✓ and emoji 🚀\nsecond line"
    assert extract_text(write(tmp_path, "u.txt", text), LIMIT) == text


def test_it_drops_a_utf8_byte_order_mark(tmp_path):
    path = write(tmp_path, "bom.txt", b"\xef\xbb\xbfHello with BOM")
    assert extract_text(path, LIMIT) == "Hello with BOM"


def test_it_reads_utf16_text_that_carries_a_byte_order_mark(tmp_path):
    path = write(tmp_path, "wide.txt", "Notepad Unicode: Grüße".encode("utf-16"))
    assert extract_text(path, LIMIT) == "Notepad Unicode: Grüße"


@pytest.mark.parametrize(
    ("encoding", "text"),
    [
        ("cp1252", FRENCH * 3),
        ("latin-1", GERMAN * 3),
        ("shift_jis", JAPANESE * 3),
    ],
)
def test_it_decodes_legacy_encodings(tmp_path, encoding, text):
    path = write(tmp_path, f"{encoding}.txt", text.encode(encoding))
    assert extract_text(path, LIMIT) == text


def test_it_reads_markdown_and_restructuredtext_as_plain_text(tmp_path):
    markdown = "# Title\n\nSome *emphasis* and a [link](http://example.com)."
    rst = "Title\n=====\n\n.. note:: Keep this.\n"
    assert extract_text(write(tmp_path, "a.md", markdown), LIMIT) == markdown
    assert extract_text(write(tmp_path, "b.markdown", markdown), LIMIT) == markdown
    assert extract_text(write(tmp_path, "c.rst", rst), LIMIT) == rst


def test_it_refuses_a_binary_file_named_txt_as_binary(tmp_path):
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
    assert reason_for(write(tmp_path, "image.txt", png)) == "binary"


def test_it_refuses_noise_without_nul_bytes_as_binary(tmp_path):
    noise = bytes((i * 97 + 13) % 255 + 1 for i in range(4000))
    assert reason_for(write(tmp_path, "noise.txt", noise)) == "binary"


def test_it_strips_nul_characters_past_the_sniffed_prefix(tmp_path):
    path = write(tmp_path, "late-nul.txt", "a" * 9000 + "\x00b\x00c")
    assert extract_text(path, LIMIT) == "a" * 9000 + "bc"


def test_it_normalises_line_endings_to_newlines(tmp_path):
    path = write(tmp_path, "dos.txt", b"one\r\ntwo\rthree\nfour")
    assert extract_text(path, LIMIT) == "one\ntwo\nthree\nfour"


def test_it_collapses_three_or_more_blank_lines_to_two(tmp_path):
    path = write(tmp_path, "gappy.txt", "a\n\n\n\n\n\nb\n\n\nc\n \n\t\n \n\nd")
    assert extract_text(path, LIMIT) == "a\n\n\nb\n\n\nc\n\n\nd"


def test_it_keeps_other_whitespace_untouched(tmp_path):
    text = "  indented\n\ttabbed  \ntrailing   "
    assert extract_text(write(tmp_path, "ws.txt", text), LIMIT) == text


# --- HTML --------------------------------------------------------------------


PAGE = """<!DOCTYPE html>
<html><head><title>Sourdough &amp; Rye</title>
<style>body { color: red; }</style>
<script>var secret = "do not index";</script></head>
<body>
<nav><a href="/">Home</a> <a href="/about">About us</a></nav>
<h1>Baking   bread</h1>
<p>Feed the <b>starter</b>
   every day.</p>
<!-- an editor's comment -->
<p>Knead, then rest.<br>Bake at 230 °C.</p>
<ul><li>Flour</li><li>Water</li></ul>
<table><tr><th>Step</th><th>Time</th></tr><tr><td>Proof</td><td>12 h</td></tr></table>
<script>document.write("late script");</script>
</body></html>
"""


def test_it_extracts_readable_html_text_with_its_title(tmp_path):
    text = extract_text(write(tmp_path, "bread.html", PAGE), LIMIT)
    assert text == (
        "Sourdough & Rye\n\n"
        "Baking bread\n\n"
        "Feed the starter every day.\n\n"
        "Knead, then rest.\nBake at 230 °C.\n\n"
        "Flour\n\nWater\n\n"
        "Step\tTime\n\nProof\t12 h"
    )


def test_it_drops_scripts_styles_navigation_and_comments_from_html(tmp_path):
    text = extract_text(write(tmp_path, "bread.htm", PAGE), LIMIT)
    for hidden in ("secret", "late script", "color", "About us", "editor"):
        assert hidden not in text


def test_it_drops_the_menus_a_site_marks_as_navigation(tmp_path):
    page = (
        '<html><body><div class="related" role="navigation"><a>index</a> '
        '<a>modules</a> | <a>next</a></div><div class="body"><h1>Sorting</h1>'
        '<p>Use a key function.</p></div><div role="search"><form>Quick search'
        "</form></div></body></html>"
    )

    text = extract_text(write(tmp_path, "sorting.html", page), LIMIT)

    assert text == "Sorting\n\nUse a key function."


def test_it_honours_the_charset_an_html_page_declares(tmp_path):
    page = (
        '<html><head><meta charset="windows-1252"><title>Café</title></head>'
        f"<body><p>{FRENCH}</p></body></html>"
    )
    text = extract_text(write(tmp_path, "fr.html", page.encode("cp1252")), LIMIT)
    assert text == f"Café\n\n{FRENCH.strip()}"


def test_it_guesses_the_encoding_of_an_html_page_that_declares_none(tmp_path):
    page = f"<html><body><p>{GERMAN}</p><p>{FRENCH}</p></body></html>"
    text = extract_text(write(tmp_path, "de.html", page.encode("cp1252")), LIMIT)
    assert text == f"{GERMAN.strip()}\n\n{FRENCH.strip()}"


def test_it_keeps_line_breaks_inside_preformatted_html(tmp_path):
    page = "<body><p>Run:</p><pre>make test\nmake run</pre></body>"
    text = extract_text(write(tmp_path, "code.html", page), LIMIT)
    assert text == "Run:\n\nmake test\nmake run"


def test_it_survives_deeply_nested_html(tmp_path):
    page = "<div>" * 5000 + "deep text" + "</div>" * 5000
    assert "deep text" in extract_text(write(tmp_path, "deep.html", page), LIMIT)


def test_it_refuses_binary_content_named_html_as_binary(tmp_path):
    assert reason_for(write(tmp_path, "x.html", b"\x00\x01\x02<p>hi")) == "binary"


# --- PDF ---------------------------------------------------------------------


def test_it_extracts_text_from_every_page_of_a_pdf(tmp_path):
    path = write(tmp_path, "two.pdf", pdf_bytes("Hello PDF world", "Second page"))
    assert extract_text(path, LIMIT) == "Hello PDF world\n\nSecond page"


def test_it_extracts_text_from_an_owner_password_only_pdf(tmp_path):
    data = encrypted_pdf(pdf_bytes("Owner locked only"), "", "RC4-128")
    assert PdfReader(io.BytesIO(data)).is_encrypted
    assert extract_text(write(tmp_path, "owner.pdf", data), LIMIT) == (
        "Owner locked only"
    )


def test_it_refuses_a_pdf_with_a_user_password_as_encrypted(tmp_path):
    data = encrypted_pdf(pdf_bytes("Top secret"), "u", "RC4-128")
    path = write(tmp_path, "user.pdf", data)
    with pytest.raises(ExtractionError) as caught:
        extract_text(path, LIMIT)
    assert caught.value.reason == "encrypted"
    assert caught.value.message == "PDF is encrypted with a user password"


def test_it_extracts_an_aes_owner_password_only_pdf(tmp_path):
    pytest.importorskip("cryptography")
    data = encrypted_pdf(pdf_bytes("AES but open"), "", "AES-256")
    assert extract_text(write(tmp_path, "aes.pdf", data), LIMIT) == "AES but open"


@pytest.mark.parametrize("algorithm", ["AES-128", "AES-256"])
def test_it_reports_aes_as_encrypted_when_no_crypto_library_is_installed(
    tmp_path, algorithm
):
    pytest.importorskip("cryptography")
    data = encrypted_pdf(pdf_bytes("AES but open"), "", algorithm)
    path = write(tmp_path, "aes.pdf", data)
    # A fresh interpreter in which both AES providers pypdf knows fail to import.
    program = (
        "import sys\n"
        "sys.modules['cryptography'] = None\n"
        "sys.modules['Crypto'] = None\n"
        "from collections_app.extract import ExtractionError, extract_text\n"
        "try:\n"
        f"    extract_text(__import__('pathlib').Path({str(path)!r}), {LIMIT})\n"
        "except ExtractionError as exc:\n"
        "    print(exc.reason)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "encrypted"


def test_it_treats_a_missing_crypto_dependency_on_open_as_encrypted(
    tmp_path, monkeypatch
):
    def needs_aes(*args, **kwargs):
        raise DependencyError("cryptography is required for AES algorithm")

    monkeypatch.setattr(extract, "PdfReader", needs_aes)
    path = write(tmp_path, "aes.pdf", pdf_bytes("unused"))
    with pytest.raises(ExtractionError) as caught:
        extract_text(path, LIMIT)
    assert caught.value.reason == "encrypted"
    assert "cryptography is required" in caught.value.message


def test_it_treats_a_missing_crypto_dependency_on_a_page_as_encrypted(
    tmp_path, monkeypatch
):
    def needs_aes(self, *args, **kwargs):
        raise DependencyError("cryptography is required for AES algorithm")

    monkeypatch.setattr(PageObject, "extract_text", needs_aes)
    data = encrypted_pdf(pdf_bytes("Owner locked only"), "", "RC4-128")
    assert reason_for(write(tmp_path, "aes128.pdf", data)) == "encrypted"


def test_it_skips_a_broken_pdf_page_when_others_can_be_read(tmp_path):
    data = pdf_bytes("First page", "Broken page", "Third page", broken_pages=(1,))
    path = write(tmp_path, "partly.pdf", data)
    assert extract_text(path, LIMIT) == "First page\n\nThird page"


def test_it_refuses_a_pdf_whose_every_page_is_broken_as_corrupt(tmp_path):
    data = pdf_bytes("One", "Two", broken_pages=(0, 1))
    assert reason_for(write(tmp_path, "broken.pdf", data)) == "corrupt"


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.05])
def test_it_refuses_a_truncated_pdf_as_corrupt(tmp_path, keep):
    data = pdf_bytes("Hello PDF world", "Second page")
    path = write(tmp_path, "cut.pdf", data[: int(len(data) * keep)])
    assert reason_for(path) == "corrupt"


def test_it_refuses_an_empty_or_garbage_pdf_as_corrupt(tmp_path):
    assert reason_for(write(tmp_path, "empty.pdf", b"")) == "corrupt"
    assert reason_for(write(tmp_path, "junk.pdf", b"not a pdf at all")) == "corrupt"


def test_it_returns_an_empty_string_for_a_pdf_without_text(tmp_path):
    assert extract_text(write(tmp_path, "blank.pdf", pdf_bytes("")), LIMIT) == ""


# --- DOCX --------------------------------------------------------------------


def make_docx(path: Path) -> Path:
    document = docx.Document()
    document.add_heading("Quarterly report", level=1)
    document.add_paragraph("Revenue grew in every region.")
    table = document.add_table(rows=2, cols=3)
    table.cell(0, 0).text = "Region"
    table.cell(0, 1).merge(table.cell(0, 2)).text = "Result"
    table.cell(1, 0).text = "North"
    table.cell(1, 1).text = "Up"
    table.cell(1, 2).text = "12%"
    document.add_paragraph("Closing remarks.")
    document.save(str(path))
    return path


def test_it_extracts_docx_paragraphs_and_table_cells_in_order(tmp_path):
    text = extract_text(make_docx(tmp_path / "report.docx"), LIMIT)
    assert text == (
        "Quarterly report\n\n"
        "Revenue grew in every region.\n\n"
        "Region\tResult\nNorth\tUp\t12%\n\n"
        "Closing remarks."
    )


def test_it_refuses_a_truncated_docx_as_corrupt(tmp_path):
    data = make_docx(tmp_path / "whole.docx").read_bytes()
    path = write(tmp_path, "cut.docx", data[: len(data) // 2])
    assert reason_for(path) == "corrupt"


def test_it_refuses_a_zip_that_is_not_a_word_file_as_corrupt(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "just a zip")
    assert reason_for(write(tmp_path, "fake.docx", buffer.getvalue())) == "corrupt"


def test_it_refuses_garbage_named_docx_as_corrupt(tmp_path):
    assert reason_for(write(tmp_path, "junk.docx", b"plain words")) == "corrupt"


def test_it_refuses_a_docx_that_expands_enormously_as_too_large(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b" " * 3_000_000)
    path = write(tmp_path, "bomb.docx", buffer.getvalue())
    assert reason_for(path, max_bytes=100_000) == "too_large"
