"""Split extracted text into overlapping pieces sized for embedding.

Cuts prefer paragraph breaks, then sentence ends, then whitespace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIN_SIZE = 100

# Cuts are looked for only in this final share of each window, so a piece is
# never much shorter than `size`.
_SEARCH_SHARE = 0.2
# Cut tiers, best first. Each pattern's match ends at the latest cut in the
# searched span (the greedy prefix backtracks from the end); the number is how
# far past the cut its lookahead needs to see.
_CUT_TIERS = (
    # Before a blank line.
    (re.compile(r".*(?=\n\n)", re.S), 2),
    # After a sentence-ending mark: Latin ones need whitespace next; the CJK
    # full stop, exclamation and question marks need none.
    (
        re.compile(r".*(?:(?<=[.!?])(?=\s)|(?<=[\u3002\uff01\uff1f])(?=.))", re.S),
        1,
    ),
    # Before any whitespace.
    (re.compile(r".*(?=\s)", re.S), 1),
)
_NON_SPACE = re.compile(r"\S")
_SPACE = re.compile(r"\s")


@dataclass(frozen=True, slots=True)
class Piece:
    """A stretch of the source text; `text == source[start:end]`."""

    text: str
    start: int
    end: int


def chunk_text(text: str, size: int, overlap: int) -> list[Piece]:
    """Split `text` into pieces of at most `size` characters.

    Consecutive pieces share about `overlap` characters. Pieces carry no
    leading or trailing whitespace, and none is empty.
    """
    _validate(size, overlap)
    pieces: list[Piece] = []
    start = _next_non_space(text, 0)
    while start is not None:
        piece = _piece(text, start, _cut(text, start, size))
        pieces.append(piece)
        start = _next_start(text, piece.end, size, overlap)
    return pieces


def _validate(size: int, overlap: int) -> None:
    if not isinstance(size, int) or not isinstance(overlap, int):
        raise TypeError("size and overlap must be integers")
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE}, got {size}")
    if overlap < 0 or overlap * 2 >= size:
        raise ValueError(f"overlap must be in [0, size/2), got {overlap}")


def _next_non_space(text: str, pos: int) -> int | None:
    match = _NON_SPACE.search(text, pos)
    return match.start() if match else None


def _cut(text: str, start: int, size: int) -> int:
    """Where the piece starting at `start` should end (exclusive)."""
    limit = start + size
    if limit >= len(text):
        return len(text)
    floor = limit - int(size * _SEARCH_SHARE)
    for pattern, lookahead in _CUT_TIERS:
        match = pattern.match(text, floor, limit + lookahead)
        if match:
            return match.end()
    return limit


def _piece(text: str, start: int, end: int) -> Piece:
    stripped = text[start:end].rstrip()
    return Piece(stripped, start, start + len(stripped))


def _next_start(text: str, end: int, size: int, overlap: int) -> int | None:
    """Where the piece after one ending at `end` starts; None when done."""
    resume = _next_non_space(text, end)
    if resume is None:
        return None
    start = end - overlap
    # Across a wide whitespace gap the window from `start` might not reach
    # new text, and would only repeat the previous piece.
    if overlap == 0 or resume - start > size // 2:
        return resume
    return _next_non_space(text, _word_start(text, start, end))


def _word_start(text: str, pos: int, end: int) -> int:
    """`pos`, or the next word boundary if one is near, so the overlap does
    not begin mid-word."""
    if text[pos - 1].isspace():
        return pos
    space = _SPACE.search(text, pos, pos + (end - pos) // 2)
    return space.start() if space else pos
