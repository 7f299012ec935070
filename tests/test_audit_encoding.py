"""Audit details round-trip any text through the real database, bounded and redacted."""

import json
import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import encoding
from audit.models import AuditLog
from audit.services import record

pytestmark = pytest.mark.django_db

# Lone surrogates, NUL and the encoding's own tag are rare in st.characters();
# mixing them in makes every run meet them.
TRICKY_CHARACTERS = st.sampled_from(
    [
        "\x00",
        "\\",
        '"',
        "'",
        "\n",
        "\r",
        "\t",
        "U",
        "N",
        "x",
        "0",
        "{",
        "\ud800",
        "\udcff",
        "\udfff",
        "\ufdd0",
        "\u202e",
        "\u0301",
        "\u05d0",
        "日",
        "😀",
        "$",
    ]
)
CHARACTERS = st.one_of(
    st.characters(codec=None, exclude_categories=()),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    TRICKY_CHARACTERS,
)
TEXT = st.text(alphabet=CHARACTERS, max_size=30)
KEYS = TEXT.filter(lambda key: not encoding.is_secret_key(key))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=4)
    ),
    max_leaves=12,
)
DETAILS = st.dictionaries(KEYS, VALUES, max_size=5)


def stored_strings(value):
    """Every key and string in a stored details value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from stored_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from stored_strings(item)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(details=DETAILS)
def test_any_details_come_back_exactly_from_the_database(details):
    entry = record(AuditLog.Action.COLLECTION_RENAMED, details=details)

    fresh = AuditLog.objects.get(pk=entry.pk)

    assert fresh.details_decoded() == details
    assert json.loads(fresh.details_json()) == details


@settings(max_examples=100, deadline=None)
@given(details=DETAILS)
def test_stored_details_hold_nothing_postgresql_refuses(details):
    for text in stored_strings(encoding.encode(details)):
        assert "\x00" not in text
        assert not any(0xD800 <= ord(char) < 0xE000 for char in text)
        text.encode("utf-8")


@pytest.mark.parametrize(
    "text",
    [
        "C:\\Users\\Public\\Docs\\日本",
        "C:\\Users\\x\\N\\x41\\1\\g<0>",
        'D:\\data\\"q"\n\\notes.txt',
        "tab\there",
        "abc\x00def",
        "\ufdd0b64:AAAA",
        "\ufdd0float:nan",
        "שלום עולם",
        "e\u0301\u0327",
        "😀👍🏽",
    ],
)
def test_paths_and_awkward_text_are_stored_readable_or_tagged(text):
    entry = record(AuditLog.Action.SOURCE_ADDED, details={"source": text, text: 1})

    fresh = AuditLog.objects.get(pk=entry.pk)

    assert fresh.details_decoded() == {"source": text, text: 1}
    if not encoding.needs_encoding(text):
        assert fresh.details["source"] == text


def test_an_undecodable_file_name_round_trips_as_its_bytes(tmp_path):
    name = os.fsdecode(b"report-\xff\xfe.txt")
    entry = record(AuditLog.Action.SOURCE_ADDED, details={"file": name})

    decoded = AuditLog.objects.get(pk=entry.pk).details_decoded()

    assert os.fsencode(decoded["file"]) == b"report-\xff\xfe.txt"


def test_floats_jsonb_would_change_come_back_as_the_same_float():
    values = [float("inf"), float("-inf"), -0.0, 1e300, 1.5e-300, 0.1]
    entry = record(AuditLog.Action.COLLECTION_RENAMED, details={"values": values})

    decoded = AuditLog.objects.get(pk=entry.pk).details_decoded()["values"]

    assert decoded == values
    assert [type(value) for value in decoded] == [float] * len(values)
    assert math.copysign(1.0, decoded[2]) == -1.0


def test_nan_is_stored_and_read_back_as_nan():
    entry = record(AuditLog.Action.COLLECTION_RENAMED, details={"ratio": float("nan")})

    ratio = AuditLog.objects.get(pk=entry.pk).details_decoded()["ratio"]

    assert math.isnan(ratio)


def test_other_values_are_stored_as_text():
    import datetime
    import uuid
    from pathlib import Path

    when = datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC)
    key = uuid.uuid4()
    details = {
        "when": when,
        "id": key,
        "path": Path("/srv/docs"),
        "tuple": (1, 2),
        7: "seven",
    }

    entry = record(AuditLog.Action.COLLECTION_RENAMED, details=details)

    assert AuditLog.objects.get(pk=entry.pk).details_decoded() == {
        "when": when.isoformat(),
        "id": str(key),
        "path": "/srv/docs",
        "tuple": [1, 2],
        "7": "seven",
    }


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "db_password",
        "dbPassword",
        "PASSWD",
        "secret",
        "client_secret",
        "token",
        "AUTH_TOKEN",
        "api_key",
        "api-key",
        "apiKey",
        "APIKey",
        "X-Api-Key",
        "credentials",
        "Authorization",
        "DBPassword",
        "SMTPPassword",
        "HTTPAuthorization",
        "adminpassword",
        "sslkey",
        "ssl_key",
        "X-Api-Token",
        "csrftoken",
    ],
)
def test_values_under_secret_looking_keys_are_redacted(key):
    details = {"settings": {key: {"nested": "hunter2"}, "chunk_size": 800}}

    entry = record(AuditLog.Action.COLLECTION_RENAMED, details=details)

    stored = AuditLog.objects.get(pk=entry.pk)
    assert stored.details_decoded() == {
        "settings": {key: encoding.REDACTED, "chunk_size": 800}
    }
    assert "hunter2" not in json.dumps(stored.details)


@pytest.mark.parametrize("key", ["passage", "compass", "bypass_count", "tokenizer"])
def test_ordinary_keys_that_contain_a_secret_word_are_kept(key):
    assert encoding.encode({key: "kept"}) == {key: "kept"}


@pytest.mark.parametrize(
    "key",
    [
        "counts",
        "config",
        "source",
        "sources",
        "source_id",
        "requested_path",
        "error",
        "type",
        "chunk_size",
        "chunk_overlap",
        "embedding_model",
        "description",
        "old_name",
        "new_name",
        "documents",
        "chunks",
        "max_tokens",
        "PDFParser",
    ],
)
def test_the_keys_quarry_itself_records_are_kept(key):
    entry = record(AuditLog.Action.COLLECTION_RENAMED, details={key: "kept"})

    assert AuditLog.objects.get(pk=entry.pk).details_decoded() == {key: "kept"}


def test_a_long_value_is_cut_with_a_note_saying_how_much():
    text = "x" * (encoding.MAX_STRING + 500)

    entry = record(AuditLog.Action.COLLECTION_RENAMED, details={"error": text})

    stored = AuditLog.objects.get(pk=entry.pk).details_decoded()["error"]
    assert stored.startswith("x" * encoding.MAX_STRING)
    assert stored.endswith(f"[cut 500 of {len(text)} characters]")


def test_a_long_value_with_nul_is_cut_and_still_round_trips_its_kept_part():
    text = "\x00" * (encoding.MAX_STRING + 1)

    entry = record(AuditLog.Action.COLLECTION_RENAMED, details={"error": text})

    stored = AuditLog.objects.get(pk=entry.pk).details_decoded()["error"]
    assert stored.startswith("\x00" * encoding.MAX_STRING)
    assert stored.endswith(f"[cut 1 of {len(text)} characters]")


def test_long_lists_deep_nesting_and_huge_entries_are_bounded():
    deep: dict = {}
    node = deep
    for _ in range(encoding.MAX_DEPTH + 5):
        node["child"] = {}
        node = node["child"]
    details = {
        "many": list(range(encoding.MAX_ITEMS + 3)),
        "deep": deep,
        "huge": ["y" * encoding.MAX_STRING] * 100,
    }

    stored = encoding.encode(details)

    assert stored["many"][-1] == "[cut: 3 more items]"
    assert len(stored["many"]) == encoding.MAX_ITEMS + 1
    assert encoding.TOO_DEEP in json.dumps(stored)
    assert len(json.dumps(stored)) < encoding.MAX_TOTAL + 100_000
    assert stored["huge"][-1].startswith("[cut: ")


def test_keys_cut_to_the_same_text_keep_both_values():
    prefix = "k" * encoding.MAX_KEY
    details = {prefix + "a": 1, prefix + "b": 2}

    decoded = encoding.decode(encoding.encode(details))

    assert sorted(decoded.values()) == [1, 2]


def test_a_stored_string_with_the_tag_but_no_valid_payload_reads_as_stored():
    broken = encoding.STRING_TAG + "not base64!"

    assert encoding.decode({"x": broken}) == {"x": broken}


def test_display_json_escapes_what_a_page_cannot_show_and_parses_back():
    details = {"name": "a\udcffb\u202ec", "nul": "\x00", "cjk": "日本"}

    text = encoding.display_json(details)

    text.encode("utf-8")
    assert "日本" in text
    assert "\\udcff" in text and "\\u202e" in text
    assert json.loads(text) == details
