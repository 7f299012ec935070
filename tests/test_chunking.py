"""Splitting text into overlapping pieces with exact source offsets."""

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collections_app.chunking import Piece, chunk_text

SENTENCE = "The quick brown fox jumps over the lazy dog. "


def assert_well_formed(text: str, pieces: list[Piece], size: int) -> None:
    for piece in pieces:
        assert text[piece.start : piece.end] == piece.text
        assert piece.text.strip() == piece.text
        assert piece.text
        assert len(piece.text) <= size
    for before, after in pairwise(pieces):
        assert before.start < after.start
        assert before.end < after.end


def assert_covers_all_text(text: str, pieces: list[Piece]) -> None:
    covered = [False] * len(text)
    for piece in pieces:
        covered[piece.start : piece.end] = [True] * (piece.end - piece.start)
    missed = [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]
    assert missed == []


@pytest.mark.parametrize(
    ("size", "overlap"), [(99, 0), (100, -1), (100, 50), (1000, 600), (0, 0)]
)
def test_it_rejects_sizes_and_overlaps_out_of_range(size, overlap):
    with pytest.raises(ValueError):
        chunk_text("some text", size, overlap)


def test_it_rejects_sizes_that_are_not_integers():
    with pytest.raises(TypeError):
        chunk_text("some text", 500.0, 50)


def test_it_accepts_the_smallest_size_and_largest_overlap():
    text = SENTENCE * 20
    pieces = chunk_text(text, 100, 49)
    assert_well_formed(text, pieces, 100)
    assert_covers_all_text(text, pieces)


@pytest.mark.parametrize("text", ["", " ", "\n\n\t  \n"])
def test_it_returns_no_pieces_for_blank_text(text):
    assert chunk_text(text, 100, 10) == []


def test_it_returns_short_text_as_one_stripped_piece():
    text = "\n\n   A short note.  \n"
    assert chunk_text(text, 100, 10) == [Piece("A short note.", 5, 18)]


def test_it_keeps_every_piece_within_size_with_exact_offsets():
    text = (SENTENCE * 7 + "\n\n") * 40
    pieces = chunk_text(text, 300, 60)
    assert len(pieces) > 10
    assert_well_formed(text, pieces, 300)
    assert_covers_all_text(text, pieces)


def test_it_prefers_a_paragraph_break_over_a_later_sentence_end():
    first = "a" * 84 + " end of paragraph."  # 102 characters
    text = first + "\n\n" + "Next one. More words here. " * 10
    pieces = chunk_text(text, 120, 0)
    assert pieces[0].text == first
    assert pieces[1].start == len(first) + 2


def test_it_prefers_a_sentence_end_over_a_later_space():
    first = "word " * 19 + "stop."  # 100 characters
    text = first + " and then more words without any full stop " * 5
    pieces = chunk_text(text, 120, 0)
    assert pieces[0].text == first


def test_it_breaks_after_a_cjk_full_stop():
    text = ("日本語の文章です" * 12 + "。") * 5
    pieces = chunk_text(text, 110, 0)
    assert pieces[0].text.endswith("。")
    assert len(pieces[0].text) == 97
    assert_covers_all_text(text, pieces)


def test_it_breaks_at_whitespace_rather_than_inside_a_word():
    text = " ".join(f"word{i:03d}" for i in range(200))
    pieces = chunk_text(text, 100, 20)
    for piece in pieces:
        assert piece.text.split(" ")[0].startswith("word")
        assert len(piece.text.split(" ")[-1]) == 7
    assert_well_formed(text, pieces, 100)
    assert_covers_all_text(text, pieces)


def test_it_cuts_text_without_spaces_at_exactly_the_size():
    text = "x" * 1050
    pieces = chunk_text(text, 100, 0)
    assert [len(p.text) for p in pieces] == [100] * 10 + [50]
    assert "".join(p.text for p in pieces) == text


def test_it_overlaps_consecutive_pieces_by_about_the_overlap():
    text = SENTENCE * 200
    pieces = chunk_text(text, 400, 80)
    for before, after in pairwise(pieces):
        shared = before.end - after.start
        assert 40 <= shared <= 80
        assert text[after.start - 1] == " "


def test_it_does_not_overlap_when_the_overlap_is_zero():
    text = SENTENCE * 50
    pieces = chunk_text(text, 200, 0)
    for before, after in pairwise(pieces):
        assert after.start >= before.end
    assert "".join(p.text + " " for p in pieces) == text


def test_it_does_not_repeat_a_piece_across_a_wide_whitespace_gap():
    text = "alpha " * 10 + " " * 500 + "omega " * 10
    pieces = chunk_text(text, 100, 40)
    assert [p.text for p in pieces] == [
        ("alpha " * 10).strip(),
        ("omega " * 10).strip(),
    ]


def test_it_covers_ten_megabytes_to_the_last_character():
    text = (SENTENCE * 30 + "\n\n") * 7500
    assert len(text) > 10_000_000
    pieces = chunk_text(text, 1000, 200)
    assert pieces[-1].end == len(text.rstrip())


def test_it_cuts_text_without_any_break_at_the_chunk_size():
    pieces = chunk_text("x" * 10_000_000, 1000, 200)
    assert len(pieces) == 12_500


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet="ab .!\n\t。", max_size=3000),
    size=st.integers(min_value=100, max_value=400),
    share=st.floats(min_value=0, max_value=0.49),
)
def test_it_keeps_its_guarantees_for_any_text(text, size, share):
    overlap = int(size * share)
    pieces = chunk_text(text, size, overlap)
    assert_well_formed(text, pieces, size)
    assert_covers_all_text(text, pieces)
    assert (pieces == []) == (text.strip() == "")
