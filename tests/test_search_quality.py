"""Search quality on documents the test writes: the page that answers comes first."""

import os

import pytest

from collections_app import search, services
from collections_app.models import Document
from tests.conftest import write_files

pytestmark = pytest.mark.django_db(transaction=True)

PAGES = {
    "sorting.html": "<h1>Sorting HOW TO</h1><p>To sort a list of dictionaries by one of "
    "their values, pass a key function: sorted(rows, key=lambda row: row['age']). "
    "The sort is stable.</p>",
    "files.md": "# Reading files\n\nOpen the file with a with statement and iterate over "
    "the file object to read it line by line; each line keeps its newline.",
    "walrus.rst": "Assignment expressions\n======================\n\nThe := operator, "
    "nicknamed the walrus, assigns to a name as part of a larger expression, "
    "for example while (chunk := stream.read(1024)):",
    "threads.txt": "The threading module runs functions concurrently. Use a Lock to "
    "protect shared state and join() to wait for a thread to finish.",
    "dates.txt": "The datetime module gives the current date and time with "
    "datetime.now(); format it with strftime.",
    "venv.txt": "Create an isolated environment with python -m venv and activate it "
    "before installing packages with pip.",
}


@pytest.fixture
def library(as_owner, tmp_path):
    folder = write_files(tmp_path / "library", PAGES)
    return services.create_collection(
        as_owner, name="Library", source=str(folder)
    ).collection


@pytest.mark.parametrize(
    ("query", "answer"),
    [
        ("how do I order a list of dicts by a field", "sorting.html"),
        ("read a text file one line at a time", "files.md"),
        ("what does := do", "walrus.rst"),
        ("walrus operator", "walrus.rst"),
        ("wait for a background thread", "threads.txt"),
        ("what time is it now", "dates.txt"),
        ("isolated package installation", "venv.txt"),
    ],
)
def test_the_page_that_answers_is_ranked_first(library, owner, query, answer):
    results = search.search(owner, query, collection=library, limit=3)
    assert results[0].document == answer, [r.document for r in results]


def test_meaning_finds_a_page_that_shares_no_word_with_the_query(library, owner):
    results = search.search(
        owner, "concurrency primitives for mutual exclusion", limit=3
    )
    assert results[0].document == "threads.txt"


def test_words_find_an_exact_identifier(library, owner):
    results = search.search(owner, "strftime", limit=3)
    assert results[0].document == "dates.txt"
    assert ("strftime", True) in results[0].highlighted


def test_results_show_collection_relative_path_passage_and_score(
    library, owner, tmp_path
):
    result = search.search(owner, "walrus", limit=1)[0]
    assert result.collection == "Library"
    assert result.source == str((tmp_path / "library").resolve())
    assert result.document == "walrus.rst"
    assert "walrus" in result.passage and result.score > 0
    assert set(result.to_dict()) >= {
        "collection",
        "document",
        "source",
        "passage",
        "score",
    }


def test_a_user_never_sees_another_users_passages(library, teammate, outsider):
    assert search.search(outsider, "walrus") == []


@pytest.mark.parametrize(
    "query", ["", "\x00", "a\x00b walrus", '"unbalanced', "NEAR(", "*"]
)
def test_odd_queries_give_a_normal_answer(library, owner, query):
    results = search.search(owner, query)
    assert isinstance(results, list)


def test_a_path_like_query_is_highlighted_as_typed(library, owner):
    segments = search.highlight(r"copy C:\Users\x into \1 and \g<0>", ["users", "g"])
    assert "".join(text for text, _ in segments) == r"copy C:\Users\x into \1 and \g<0>"
    assert ("Users", True) in segments


def test_an_undecodable_file_name_is_indexed_under_a_visible_name(as_owner, tmp_path):
    folder = tmp_path / "raw-names"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9.txt")
    (folder / name).write_text("espresso and croissants")
    operation = services.create_collection(as_owner, name="Raw", source=str(folder))
    operation.refresh_from_db()
    assert operation.status == "completed" and operation.indexed == 1
    assert Document.objects.get().path == "caf\\xe9.txt"


def test_a_document_fills_one_result_with_its_best_passage(as_owner, owner, tmp_path):
    long_page = "\n\n".join(
        f"Section {i}. Herons stand still in shallow water and wait for fish."
        for i in range(40)
    )
    folder = write_files(
        tmp_path / "birds",
        {"herons.txt": long_page, "egrets.txt": "Egrets, like herons, wade for fish."},
    )
    services.create_collection(
        as_owner, name="Birds", source=str(folder), chunk_size=100, chunk_overlap=0
    )

    results = search.search(owner, "herons waiting for fish", limit=5)

    assert [r.document for r in results] == ["herons.txt", "egrets.txt"]


def test_words_like_the_do_not_make_every_passage_a_word_match(library, owner):
    ranked = search.keyword_ranking("what is the walrus", [library.id])

    documents = set(
        Document.objects.filter(chunks__id__in=ranked).values_list("path", flat=True)
    )
    assert documents == {"walrus.rst"}
