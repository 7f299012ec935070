"""The collection pages as a user sees them: list, create, inspect, change, delete."""

import uuid
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from django.urls import reverse

from collections_app import services
from collections_app.models import Collection, Document
from operations.models import Operation
from tests.conftest import write_files

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """The default hasher costs a second per user; these tests are not about it."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def page(response) -> BeautifulSoup:
    return BeautifulSoup(response.content.decode(), "html.parser")


def text_of(response) -> str:
    return page(response).get_text()


@pytest.fixture
def indexed(as_owner, docs, django_capture_on_commit_callbacks) -> Collection:
    """The docs folder, indexed by its owner."""
    with django_capture_on_commit_callbacks(execute=True):
        operation = services.create_collection(as_owner, name="Notes", source=str(docs))
    return Collection.objects.get(id=operation.collection_id)


@pytest.fixture
def pending(as_owner, docs) -> Collection:
    """A collection whose index operation no worker has run yet."""
    operation = services.create_collection(as_owner, name="Waiting", source=str(docs))
    return operation.collection


def form_data(**overrides) -> dict:
    data = {
        "name": "Notes",
        "description": "",
        "source": "",
        "chunk_size": "800",
        "chunk_overlap": "100",
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    "name, needs_id",
    [
        ("collections:list", False),
        ("collections:create", False),
        ("collections:search", False),
        ("collections:detail", True),
        ("collections:delete", True),
    ],
)
def test_every_page_requires_login(client, pending, name, needs_id):
    url = reverse(name, args=[pending.id] if needs_id else [])

    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={url}"


@pytest.mark.parametrize("name", ["update", "add_source", "remove_source", "reindex"])
def test_every_button_requires_login(client, pending, name):
    response = client.post(reverse(f"collections:{name}", args=[pending.id]))

    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")
    assert pending.operations.count() == 1


def test_login_sends_the_user_to_the_page_they_asked_for(client, owner):
    response = client.post(
        "/login/?next=/operations/",
        {"username": "olivia", "password": "pw-olivia-123", "next": "/operations/"},
    )

    assert response.status_code == 302
    assert response["Location"] == "/operations/"


def test_login_refuses_to_send_the_user_to_another_site(client, owner):
    response = client.post(
        "/login/",
        {
            "username": "olivia",
            "password": "pw-olivia-123",
            "next": "https://evil.example/steal",
        },
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("collections:list")


def test_login_page_shows_a_wrong_password(client, owner):
    response = client.post("/login/", {"username": "olivia", "password": "nope"})

    assert response.status_code == 200
    assert "Please enter a correct username and password" in text_of(response)


def test_the_list_shows_each_collection_with_its_counts(client, owner, indexed):
    client.force_login(owner)

    response = client.get(reverse("collections:list"))

    row = page(response).find("a", string="Notes").find_parent("tr")
    cells = [td.get_text(" ", strip=True) for td in row.find_all("td")]
    assert cells[1].startswith("Ready")
    assert cells[2:5] == ["3", str(indexed.chunk_count), "0"]
    assert page(response).find("a", string="New collection")


def test_the_list_hides_other_users_collections(client, outsider, indexed):
    client.force_login(outsider)

    response = client.get(reverse("collections:list"))

    assert "Notes" not in text_of(response)


def test_staff_see_every_collection(client, django_user_model, indexed):
    staff = django_user_model.objects.create_user("sam", password="x", is_staff=True)
    client.force_login(staff)

    assert "Notes" in text_of(client.get(reverse("collections:list")))
    assert client.get(indexed.get_absolute_url()).status_code == 200


def test_the_create_form_starts_with_the_configured_chunking(client, owner, settings):
    settings.DEFAULT_CHUNK_SIZE = 640
    settings.DEFAULT_CHUNK_OVERLAP = 64
    client.force_login(owner)

    form = page(client.get(reverse("collections:create"))).select_one("main form")

    assert form.find("input", {"name": "chunk_size"})["value"] == "640"
    assert form.find("input", {"name": "chunk_overlap"})["value"] == "64"


def errors_of(response, field: str) -> str:
    tag = page(response).find(id=f"id_{field}").find_parent(class_="field")
    return " ".join(p.get_text() for p in tag.find_all(class_="error"))


def test_it_rejects_an_empty_name(client, owner, docs):
    client.force_login(owner)

    response = client.post(
        reverse("collections:create"), form_data(name="  ", source=str(docs))
    )

    assert response.status_code == 200
    assert "required" in errors_of(response, "name")
    assert not Collection.objects.exists()


def test_it_rejects_a_folder_outside_the_document_roots(
    client, owner, docs, tmp_path, settings
):
    settings.DOCUMENT_ROOTS = [tmp_path / "elsewhere"]
    client.force_login(owner)

    response = client.post(reverse("collections:create"), form_data(source=str(docs)))

    assert "outside the document roots" in errors_of(response, "source")
    assert not Collection.objects.exists()


def test_it_rejects_a_missing_folder(client, owner, tmp_path):
    client.force_login(owner)
    missing = tmp_path / "no-such-folder"

    response = client.post(
        reverse("collections:create"), form_data(source=str(missing))
    )

    assert f"The folder {missing} does not exist." in errors_of(response, "source")


@pytest.mark.parametrize("size", ["0", "-5", "99", "8001"])
def test_every_chunk_size_out_of_range_gets_the_same_message(client, owner, docs, size):
    client.force_login(owner)

    response = client.post(
        reverse("collections:create"), form_data(source=str(docs), chunk_size=size)
    )

    assert errors_of(response, "chunk_size") == (
        "Chunk size must be between 100 and 8000 characters."
    )
    assert not Collection.objects.exists()


def test_it_rejects_an_overlap_of_half_the_chunk_size(client, owner, docs):
    client.force_login(owner)

    response = client.post(
        reverse("collections:create"),
        form_data(source=str(docs), chunk_size="400", chunk_overlap="200"),
    )

    assert "less than half the chunk size" in errors_of(response, "chunk_overlap")
    assert not Collection.objects.exists()


def test_it_rejects_a_second_collection_with_the_same_name(
    client, owner, indexed, docs
):
    client.force_login(owner)

    response = client.post(reverse("collections:create"), form_data(source=str(docs)))

    assert "already have a collection named “Notes”" in errors_of(response, "name")
    assert Collection.objects.count() == 1


def test_creating_a_collection_opens_its_operation_and_indexes_it(
    client, owner, docs, django_capture_on_commit_callbacks
):
    client.force_login(owner)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("collections:create"),
            form_data(source=str(docs), description="Home notes"),
            REMOTE_ADDR="10.1.2.3",
        )

    collection = Collection.objects.get()
    operation = Operation.objects.get()
    assert response.status_code == 302
    assert response["Location"] == operation.get_absolute_url()
    assert operation.status == Operation.Status.COMPLETED
    assert collection.status == Collection.Status.READY
    assert collection.description == "Home notes"
    detail = text_of(client.get(collection.get_absolute_url()))
    for path in ("gardening.txt", "notes/astronomy.md", "recipes/bread.html"):
        assert path in detail


def test_a_failed_document_shows_its_reason(
    client, owner, as_owner, tmp_path, django_capture_on_commit_callbacks
):
    folder = write_files(
        tmp_path / "mixed",
        {"good.txt": "Plain words about rivers.", "broken.pdf": b"%PDF-1.4 garbage"},
    )
    with django_capture_on_commit_callbacks(execute=True):
        services.create_collection(as_owner, name="Mixed", source=str(folder))
    client.force_login(owner)
    collection = Collection.objects.get()

    response = client.get(collection.get_absolute_url() + "?status=failed")

    rows = page(response).find(id="documents").find("tbody").find_all("tr")
    assert len(rows) == 1
    assert "broken.pdf" in rows[0].get_text()
    assert "corrupt" in rows[0].get_text()
    document = Document.objects.get(path="broken.pdf")
    assert document.error in rows[0].get_text()


def test_the_documents_table_has_pages_of_fifty(client, owner, indexed):
    source = indexed.sources.get()
    Document.objects.bulk_create(
        Document(
            collection=indexed,
            source=source,
            path=f"extra/{n:03}.txt",
            status=Document.Status.SKIPPED,
            error_reason="duplicate",
        )
        for n in range(60)
    )
    client.force_login(owner)

    first = page(client.get(indexed.get_absolute_url()))
    second = page(client.get(indexed.get_absolute_url() + "?page=2"))

    assert len(first.find(id="documents").find("tbody").find_all("tr")) == 50
    assert len(second.find(id="documents").find("tbody").find_all("tr")) == 13
    assert "Page 2 of 2" in second.get_text()


def test_it_rejects_a_foreign_collection(client, outsider, indexed):
    client.force_login(outsider)
    detail = indexed.get_absolute_url()

    assert client.get(detail).status_code == 404
    assert (
        client.get(reverse("collections:delete", args=[indexed.id])).status_code == 404
    )
    for name in ("reindex", "delete", "add_source", "remove_source", "update"):
        url = reverse(f"collections:{name}", args=[indexed.id])
        assert client.post(url, {"name": "Mine", "source": "/tmp"}).status_code == 404
    indexed.refresh_from_db()
    assert indexed.name == "Notes"
    assert indexed.operations.count() == 1


def test_an_unknown_collection_is_a_404(client, owner):
    client.force_login(owner)

    assert (
        client.get(reverse("collections:detail", args=[uuid.uuid4()])).status_code
        == 404
    )


def test_renaming_a_collection_saves_the_new_name(client, owner, indexed):
    client.force_login(owner)

    response = client.post(
        reverse("collections:update", args=[indexed.id]),
        {"name": "Garden notes", "description": "Outdoors"},
    )

    indexed.refresh_from_db()
    assert response["Location"] == indexed.get_absolute_url()
    assert (indexed.name, indexed.description) == ("Garden notes", "Outdoors")


def test_renaming_to_a_taken_name_shows_the_error_on_the_page(
    client, owner, indexed, pending
):
    client.force_login(owner)

    response = client.post(
        reverse("collections:update", args=[indexed.id]), {"name": "Waiting"}
    )

    assert response.status_code == 200
    assert "already have a collection named “Waiting”" in errors_of(response, "name")
    indexed.refresh_from_db()
    assert indexed.name == "Notes"


def test_adding_a_source_indexes_its_documents(
    client, owner, indexed, tmp_path, django_capture_on_commit_callbacks
):
    more = write_files(tmp_path / "more", {"rivers.txt": "Rivers carve valleys."})
    client.force_login(owner)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("collections:add_source", args=[indexed.id]), {"source": str(more)}
        )

    operation = indexed.operations.get(type=Operation.Type.APPEND)
    assert response["Location"] == operation.get_absolute_url()
    assert operation.status == Operation.Status.COMPLETED
    assert indexed.sources.count() == 2
    assert "rivers.txt" in text_of(client.get(indexed.get_absolute_url()))


def test_adding_a_missing_folder_shows_the_error_on_the_page(
    client, owner, indexed, tmp_path
):
    client.force_login(owner)

    response = client.post(
        reverse("collections:add_source", args=[indexed.id]),
        {"source": str(tmp_path / "gone")},
    )

    assert response.status_code == 200
    assert "does not exist" in errors_of(response, "source")
    assert indexed.sources.count() == 1


def test_removing_a_source_forgets_its_documents(
    client, owner, indexed, django_capture_on_commit_callbacks
):
    source = indexed.sources.get()
    client.force_login(owner)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("collections:remove_source", args=[indexed.id]),
            {"source": source.id},
        )

    operation = indexed.operations.get(type=Operation.Type.REMOVE_SOURCE)
    assert response["Location"] == operation.get_absolute_url()
    assert operation.status == Operation.Status.COMPLETED
    assert not indexed.sources.exists()
    assert not indexed.documents.exists()


def test_removing_a_source_of_another_collection_is_a_404(
    client, owner, indexed, pending
):
    client.force_login(owner)
    foreign_source = pending.sources.get()

    response = client.post(
        reverse("collections:remove_source", args=[indexed.id]),
        {"source": foreign_source.id},
    )

    assert response.status_code == 404
    assert not indexed.operations.filter(type=Operation.Type.REMOVE_SOURCE).exists()


def test_reindex_runs_a_reindex_operation(
    client, owner, indexed, django_capture_on_commit_callbacks
):
    client.force_login(owner)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("collections:reindex", args=[indexed.id]))

    operation = indexed.operations.get(type=Operation.Type.REINDEX)
    assert response["Location"] == operation.get_absolute_url()
    assert operation.status == Operation.Status.COMPLETED
    assert operation.indexed == 3


def test_a_button_on_a_busy_collection_shows_why_it_was_refused(client, owner, pending):
    client.force_login(owner)

    response = client.post(
        reverse("collections:reindex", args=[pending.id]), follow=True
    )

    assert response.redirect_chain[-1][0] == pending.get_absolute_url()
    messages = [m.get_text() for m in page(response).select(".message.error")]
    assert any("already has an active index operation" in m for m in messages)
    assert pending.operations.count() == 1


def test_delete_asks_for_confirmation_with_the_counts(client, owner, indexed):
    client.force_login(owner)

    response = client.get(reverse("collections:delete", args=[indexed.id]))

    text = " ".join(text_of(response).split())
    assert "Delete collection Notes?" in text
    assert f"its 3 documents and {indexed.chunk_count} chunks" in text
    assert Collection.objects.filter(id=indexed.id).exists()


def test_delete_removes_the_collection_and_opens_the_operation(
    client, owner, indexed, django_capture_on_commit_callbacks
):
    client.force_login(owner)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("collections:delete", args=[indexed.id]))

    operation = Operation.objects.get(type=Operation.Type.DELETE)
    assert response["Location"] == operation.get_absolute_url()
    assert not Collection.objects.filter(id=indexed.id).exists()
    detail = client.get(operation.get_absolute_url())
    assert "Notes" in text_of(detail)
    assert "(deleted)" in text_of(detail)


def test_a_path_with_backslashes_and_cjk_shows_as_given(
    client, owner, as_owner, tmp_path, django_capture_on_commit_callbacks
):
    folder = write_files(
        tmp_path / "C:\\Users\\x 日本",
        {'it\'s "quoted" 資料.txt': "Kanji and quotes in a file name."},
    )
    with django_capture_on_commit_callbacks(execute=True):
        services.create_collection(as_owner, name="日本", source=str(folder))
    client.force_login(owner)

    response = client.get(Collection.objects.get().get_absolute_url())

    paths = [tag.get_text() for tag in page(response).select(".path")]
    assert str(folder) in paths
    assert 'it\'s "quoted" 資料.txt' in paths


def test_a_file_name_with_markup_is_shown_as_text(
    client, owner, as_owner, tmp_path, django_capture_on_commit_callbacks
):
    folder = write_files(tmp_path / "markup", {"<b>bold</b>.txt": "Angle brackets."})
    with django_capture_on_commit_callbacks(execute=True):
        services.create_collection(as_owner, name="Markup", source=str(folder))
    client.force_login(owner)

    response = client.get(Collection.objects.get().get_absolute_url())

    assert "<b>bold</b>" not in response.content.decode()
    assert "&lt;b&gt;bold&lt;/b&gt;.txt" in response.content.decode()


def test_the_collection_page_lists_its_operations(client, owner, indexed):
    client.force_login(owner)

    response = client.get(indexed.get_absolute_url())

    operation = indexed.operations.get()
    row = page(response).find("tr", attrs={"data-operation-id": str(operation.id)})
    assert row["data-status"] == "completed"
    assert row.find(attrs={"data-field": "status"}).get_text() == "completed"


def test_the_audit_link_appears_only_when_the_audit_page_exists(client, owner, indexed):
    from django.urls import NoReverseMatch

    client.force_login(owner)

    link = page(client.get(indexed.get_absolute_url())).find("a", string="Audit trail")

    try:
        expected = reverse("audit:collection", args=[indexed.id])
    except NoReverseMatch:
        assert link is None
    else:
        assert link["href"] == expected


def test_source_paths_are_stored_resolved(client, owner, docs):
    client.force_login(owner)

    client.post(
        reverse("collections:create"),
        form_data(source=str(docs / "notes" / "..")),
    )

    assert Collection.objects.get().sources.get().path == str(Path(docs).resolve())


def test_creating_while_the_task_queue_refuses_says_the_operation_waits(
    client, owner, docs, monkeypatch
):
    from operations import lifecycle

    monkeypatch.setattr(lifecycle, "enqueue", lambda operation_id: False)
    client.force_login(owner)

    response = client.post(
        reverse("collections:create"), form_data(source=str(docs)), follow=True
    )

    text = page(response).get_text(" ", strip=True)
    assert "The task queue did not answer, so the operation waits" in text
    assert Operation.objects.get().status == Operation.Status.PENDING
