"""Turn a document on disk into plain text for indexing.

Handles plain text, Markdown, reStructuredText, HTML, PDF and DOCX files.
"""

from __future__ import annotations

import codecs
import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import charset_normalizer
import docx
from bs4 import (
    BeautifulSoup,
    Comment,
    Declaration,
    Doctype,
    NavigableString,
    ProcessingInstruction,
    Tag,
)
from bs4.dammit import EncodingDetector
from charset_normalizer.models import CharsetMatch
from docx.table import Table
from docx.text.paragraph import Paragraph
from pypdf import PageObject, PasswordType, PdfReader
from pypdf.errors import DependencyError

from webui.text import storable_text

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(
    {".txt", ".md", ".markdown", ".rst", ".html", ".htm", ".pdf", ".docx"}
)

_TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown", ".rst"})
_HTML_SUFFIXES = frozenset({".html", ".htm"})

_SNIFF_BYTES = 8192
# A zip's members can expand far beyond the file's own size; past this ratio
# of max_bytes a DOCX is treated as too large rather than loaded into memory.
_DOCX_MAX_EXPANSION = 20
# Share of decoded characters that may be control characters before a "text"
# file is judged binary; real text in any encoding stays far below this.
_MAX_CONTROL_SHARE = 0.05
# Above this share of NUL bytes a file is binary (or UTF-16 without a BOM),
# not text with a stray NUL; `abc\0def` is 1 in 7.
_MAX_NUL_SHARE = 0.25

# charset-normalizer breaks ties between single-byte code pages by name, so
# French or German text comes out as Central European cp1250; the far more
# common Western cp1252 wins whenever it scores as well (margins as in its
# own ranking).
_TIE_PREFERENCE = "cp1252"
_TIE_CHAOS = 0.005
_TIE_COHERENCE = 0.02

_UNICODE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

_EXCESS_BLANK_LINES = re.compile(r"\n(?:[ \t\f\v]*\n){3,}")
_INLINE_SPACE = re.compile(r"\s+")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")

_HTML_DROPPED = frozenset({"script", "style", "nav", "noscript", "template"})
_HTML_DROPPED_ROLES = frozenset({"navigation", "search"})
_HTML_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "caption", "dd", "details",
        "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure",
        "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
        "li", "main", "ol", "p", "pre", "section", "summary", "table",
        "title", "tr", "ul",
    }
)  # fmt: skip
_HTML_CELLS = frozenset({"td", "th"})
_HTML_SKIPPED_STRINGS = (Comment, Declaration, Doctype, ProcessingInstruction)
_PARAGRAPH_BREAK = object()


class ExtractionError(Exception):
    """A file that cannot be turned into text; `reason` is a short machine key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def is_supported(path: Path) -> bool:
    """Whether `path` has a suffix this module can extract text from."""
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def extract_text(path: Path, max_bytes: int) -> str:
    """Return the readable text of `path`, or raise ExtractionError."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ExtractionError(
            "unsupported", f"Files ending in {suffix!r} are not indexed"
        )
    data = _read_bounded(path, max_bytes)
    if suffix in _TEXT_SUFFIXES:
        text = _decode_text(data)
    elif suffix in _HTML_SUFFIXES:
        text = _html_to_text(data)
    elif suffix == ".pdf":
        text = _pdf_to_text(data)
    else:
        text = _docx_to_text(data, max_bytes)
    return _tidy(text)


def _read_bounded(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise _too_large(size, max_bytes)
        with path.open("rb") as handle:
            # The file may have grown since stat; never read past the limit.
            data = handle.read(max_bytes + 1)
    except PermissionError as exc:
        raise ExtractionError("permission_denied", "Permission denied") from exc
    except OSError as exc:
        raise ExtractionError(
            "unreadable", f"Cannot read file: {exc.strerror or type(exc).__name__}"
        ) from exc
    if len(data) > max_bytes:
        raise _too_large(len(data), max_bytes)
    return data


def _too_large(size: int, max_bytes: int) -> ExtractionError:
    return ExtractionError(
        "too_large", f"File is {size} bytes, over the {max_bytes}-byte limit"
    )


def _tidy(text: str) -> str:
    # pypdf can produce NUL and lone surrogates; see webui.text for the rule.
    text = storable_text(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _EXCESS_BLANK_LINES.sub("\n\n\n", text)


# --- plain text -------------------------------------------------------------


def _unicode_bom(data: bytes) -> str | None:
    for bom, encoding in _UNICODE_BOMS:
        if data.startswith(bom):
            return encoding
    return None


def _decode_text(data: bytes) -> str:
    bom_encoding = _unicode_bom(data)
    if bom_encoding is not None:
        try:
            return data.decode(bom_encoding)
        except UnicodeDecodeError as exc:
            raise _binary() from exc
    data = _without_stray_nuls(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        guess = _guess_encoding(data)
        if guess is None:
            raise _binary() from None
        text = str(guess)
    if _looks_binary(text):
        raise _binary()
    return text


def _without_stray_nuls(data: bytes) -> bytes:
    """Text with a few NUL bytes loses them (webui.text); many mean binary data.

    What remains still has to pass as text: a binary file has other control
    bytes and invalid sequences besides its NULs.
    """
    if data[:_SNIFF_BYTES].count(0) > len(data[:_SNIFF_BYTES]) * _MAX_NUL_SHARE:
        raise _binary()
    return data.replace(b"\x00", b"")


def _guess_encoding(data: bytes) -> CharsetMatch | None:
    matches = charset_normalizer.from_bytes(data)
    best = matches.best()
    if best is None:
        return None
    for match in matches:
        if _TIE_PREFERENCE in match.could_be_from_charset and _scores_like(match, best):
            return match
    return best


def _scores_like(match: CharsetMatch, best: CharsetMatch) -> bool:
    return (
        abs(match.chaos - best.chaos) < _TIE_CHAOS
        and abs(match.coherence - best.coherence) <= _TIE_COHERENCE
    )


def _looks_binary(text: str) -> bool:
    sample = text[:_SNIFF_BYTES]
    controls = len(_CONTROL_CHARS.findall(sample))
    return controls > len(sample) * _MAX_CONTROL_SHARE


def _binary() -> ExtractionError:
    return ExtractionError("binary", "File does not look like text in any encoding")


# --- HTML -------------------------------------------------------------------


def _html_to_text(data: bytes) -> str:
    soup = BeautifulSoup(_html_markup(data), "lxml")
    paragraphs: list[str] = []
    current: list[str] = []
    for item in _walk_html(soup):
        if item is _PARAGRAPH_BREAK:
            paragraphs.append(_finish_paragraph(current))
            current = []
        else:
            current.append(item)
    paragraphs.append(_finish_paragraph(current))
    return "\n\n".join(p for p in paragraphs if p)


def _html_markup(data: bytes) -> bytes | str:
    """Bytes when the page states its encoding, so BeautifulSoup obeys it;
    otherwise text decoded as for a plain-text file, since BeautifulSoup's
    own guess has the same cp1250-for-cp1252 weakness."""
    if _unicode_bom(data) is not None:
        return data
    data = _without_stray_nuls(data)
    if EncodingDetector.find_declared_encoding(data, is_html=True):
        return data
    return _decode_text(data)


def _finish_paragraph(parts: list[str]) -> str:
    lines = "".join(parts).split("\n")
    return "\n".join(line.strip() for line in lines).strip("\n")


def _walk_html(root: Tag) -> Iterator[str | object]:
    """Yield strings and paragraph breaks in document order.

    Iterative rather than recursive so deeply nested markup cannot exhaust
    the Python stack.
    """
    stack: list[tuple[Tag, Iterator[object]]] = [(root, iter(root.children))]
    inside_pre = 0
    while stack:
        tag, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            if tag.name == "pre":
                inside_pre -= 1
            if tag.name in _HTML_BLOCKS:
                yield _PARAGRAPH_BREAK
        elif isinstance(child, Tag):
            if not _dropped(child):
                yield from _html_opening(child)
                if child.name == "pre":
                    inside_pre += 1
                stack.append((child, iter(child.children)))
        elif isinstance(child, NavigableString) and not isinstance(
            child, _HTML_SKIPPED_STRINGS
        ):
            # Line breaks inside <pre> are content; elsewhere they are layout.
            yield str(child) if inside_pre else _INLINE_SPACE.sub(" ", child)


def _dropped(tag: Tag) -> bool:
    """Scripts, and the menus every page of a site repeats (Sphinx marks its
    related-pages bar and sidebar with role="navigation"), which would make
    every page match every query about the site."""
    return tag.name in _HTML_DROPPED or tag.get("role") in _HTML_DROPPED_ROLES


def _html_opening(tag: Tag) -> Iterator[str | object]:
    if tag.name == "br":
        yield "\n"
    elif tag.name in _HTML_CELLS:
        yield "\t"
    elif tag.name in _HTML_BLOCKS:
        yield _PARAGRAPH_BREAK


# --- PDF --------------------------------------------------------------------


def _pdf_to_text(data: bytes) -> str:
    reader = _open_pdf(data)
    texts: list[str] = []
    failed = 0
    for page in _pdf_pages(reader):
        try:
            texts.append(page.extract_text() or "")
        except DependencyError as exc:
            if reader.is_encrypted:
                raise _missing_crypto(exc) from exc
            failed += 1
        # pypdf reports malformed content with many unrelated exception types;
        # one bad page should not cost the rest of the document.
        except Exception:
            failed += 1
    if failed and not texts:
        raise ExtractionError("corrupt", "No page of the PDF could be read")
    return "\n\n".join(text for text in texts if text)


def _open_pdf(data: bytes) -> PdfReader:
    try:
        reader = PdfReader(io.BytesIO(data))
        # Owner-password-only PDFs open with the empty user password.
        locked = (
            reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED
        )
    except DependencyError as exc:
        raise _missing_crypto(exc) from exc
    # Same reason as in _pdf_to_text: pypdf's failure types are not enumerable.
    except Exception as exc:
        raise ExtractionError("corrupt", "PDF is damaged or truncated") from exc
    if locked:
        raise ExtractionError("encrypted", "PDF is encrypted with a user password")
    return reader


def _pdf_pages(reader: PdfReader) -> list[PageObject]:
    try:
        return list(reader.pages)
    except DependencyError as exc:
        raise _missing_crypto(exc) from exc
    except Exception as exc:
        raise ExtractionError("corrupt", "PDF page tree is damaged") from exc


def _missing_crypto(exc: DependencyError) -> ExtractionError:
    return ExtractionError(
        "encrypted", f"PDF uses encryption this server cannot open ({exc})"
    )


# --- DOCX -------------------------------------------------------------------


def _docx_to_text(data: bytes, max_bytes: int) -> str:
    _check_docx_expansion(data, max_bytes)
    try:
        document = docx.Document(io.BytesIO(data))
        blocks = [_docx_block_text(block) for block in document.iter_inner_content()]
    # python-docx passes through zip, XML and lookup errors from damaged
    # packages; all of them mean the same thing here.
    except Exception as exc:
        raise ExtractionError("corrupt", "DOCX is damaged or not a Word file") from exc
    return "\n\n".join(block for block in blocks if block)


def _check_docx_expansion(data: bytes, max_bytes: int) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            expanded = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise ExtractionError("corrupt", "DOCX is not a valid zip archive") from exc
    limit = max_bytes * _DOCX_MAX_EXPANSION
    if expanded > limit:
        raise ExtractionError(
            "too_large",
            f"DOCX expands to {expanded} bytes, over the {limit}-byte limit",
        )


def _docx_block_text(block: Paragraph | Table) -> str:
    if isinstance(block, Paragraph):
        return block.text
    return _docx_table_text(block)


def _docx_table_text(table: Table) -> str:
    rows: list[str] = []
    # Merged cells come back once per grid column and row they span; holding
    # the elements themselves keeps their identity stable while comparing.
    seen: set[object] = set()
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            if cell._tc in seen:
                continue
            seen.add(cell._tc)
            parts = (_docx_block_text(block) for block in cell.iter_inner_content())
            cells.append("\n".join(part for part in parts if part))
        rows.append("\t".join(cell for cell in cells if cell))
    return "\n".join(row for row in rows if row)
