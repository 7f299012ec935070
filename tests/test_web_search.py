"""The search page: passages with their words marked, only from visible collections."""

import uuid

import pytest
from bs4 import BeautifulSoup
from django.urls import reverse

from collections_app import services
from collections_app.models import Collection
from tests.conftest import write_files

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """The default hasher costs a second per user; these tests are not about it."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def page(response) -> BeautifulSoup:
    assert response.status_code == 200
    return BeautifulSoup(response.content.decode(), "html.parser")


def index(request, name: str, folder, capture) -> Collection:
    with capture(execute=True):
        operation = services.create_collection(request, name=name, source=str(folder))
    return Collection.objects.get(id=operation.collection_id)


@pytest.fixture
def notes(as_owner, docs, django_capture_on_commit_callbacks) -> Collection:
    return index(as_owner, "Notes", docs, django_capture_on_commit_callbacks)


@pytest.fixture
def foreign(outsider, tmp_path, django_capture_on_commit_callbacks) -> Collection:
    folder = write_files(
        tmp_path / "oscar", {"secret.txt": "Tomatoes grown in Oscar's greenhouse."}
    )
    request = services.Request(outsider)
    return index(request, "Oscar", folder, django_capture_on_commit_callbacks)


@pytest.fixture
def capture(django_capture_on_commit_callbacks):
    """A shorter name for the fixture that runs on-commit callbacks."""
    return django_capture_on_commit_callbacks


def search(client, **params) -> BeautifulSoup:
    return page(client.get(reverse("collections:search"), params))


def test_search_shows_the_passage_with_its_words_marked(client, owner, notes):
    client.force_login(owner)

    soup = search(client, q="tomatoes watering")

    first = soup.select_one(".result")
    assert first.select_one(".path").get_text() == "gardening.txt"
    assert notes.sources.get().path in first.get_text()
    assert "Notes" in first.get_text()
    marked = [m.get_text() for m in first.find_all("mark")]
    assert "Tomatoes" in marked and "watering" in marked
    assert first.select_one(".score").get_text()


def test_a_document_in_a_subfolder_shows_its_path_within_the_source(
    client, owner, notes
):
    client.force_login(owner)

    soup = search(client, q="refracting telescope lenses")

    assert soup.select_one(".result .path").get_text() == "notes/astronomy.md"


def test_an_empty_query_shows_only_the_form(client, owner, notes):
    client.force_login(owner)

    soup = search(client, q="")

    assert soup.find("input", attrs={"name": "q"})
    assert not soup.select(".result")


def test_a_query_with_a_nul_character_does_not_fail(client, owner, notes):
    client.force_login(owner)

    soup = search(client, q="sour\x00dough")

    assert soup.find("input", attrs={"name": "q"})["value"] == "sour dough"


def test_a_query_is_shown_back_as_text_not_markup(client, owner, notes):
    client.force_login(owner)

    response = client.get(
        reverse("collections:search"), {"q": '"><script>x()</script>'}
    )

    assert "<script>x()" not in response.content.decode()


def test_matched_passages_are_escaped(client, owner, as_owner, tmp_path, capture):
    folder = write_files(
        tmp_path / "html", {"raw.txt": "Use <b>tomatoes</b> & basil in the sauce."}
    )
    index(as_owner, "Raw", folder, capture)
    client.force_login(owner)

    response = client.get(reverse("collections:search"), {"q": "tomatoes basil"})

    html = response.content.decode()
    assert "&lt;b&gt;<mark>tomatoes</mark>&lt;/b&gt; &amp; <mark>basil</mark>" in html


def test_search_never_shows_other_users_documents(client, owner, notes, foreign):
    client.force_login(owner)

    soup = search(client, q="tomatoes greenhouse")

    assert soup.select(".result")
    assert "secret.txt" not in soup.get_text()
    options = [o.get_text() for o in soup.select("select[name=collection] option")]
    assert options == ["All collections", "Notes"]


def test_filtering_by_another_users_collection_is_a_404(client, owner, notes, foreign):
    client.force_login(owner)

    response = client.get(
        reverse("collections:search"), {"q": "tomatoes", "collection": foreign.id}
    )

    assert response.status_code == 404


def test_a_malformed_collection_id_is_a_404(client, owner, notes):
    client.force_login(owner)

    response = client.get(
        reverse("collections:search"), {"q": "tomatoes", "collection": "../x"}
    )

    assert response.status_code == 404


def test_filtering_by_a_collection_searches_only_it(
    client, owner, as_owner, notes, tmp_path, capture
):
    folder = write_files(tmp_path / "garden2", {"beds.txt": "Raised beds of tomatoes."})
    other = index(as_owner, "Garden", folder, capture)
    client.force_login(owner)

    soup = search(client, q="tomatoes", collection=str(other.id))

    paths = {tag.get_text() for tag in soup.select(".result-head .path")}
    assert paths == {"beds.txt"}
    selected = soup.select_one("select[name=collection] option[selected]")
    assert selected["value"] == str(other.id)


def test_an_unknown_collection_id_is_a_404(client, owner, notes):
    client.force_login(owner)

    response = client.get(
        reverse("collections:search"), {"q": "x", "collection": str(uuid.uuid4())}
    )

    assert response.status_code == 404
