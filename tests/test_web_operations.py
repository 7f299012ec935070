"""The operation pages: active and recent work, one operation's history, and the
attributes the live-update script relies on."""

import uuid
from datetime import timedelta

import pytest
from bs4 import BeautifulSoup
from django.db.models import Max
from django.urls import reverse
from django.utils import timezone

from collections_app import services
from collections_app.models import Collection
from operations.models import Operation, OperationEvent
from operations.views import format_duration

pytestmark = pytest.mark.django_db

LIVE_FIELDS = ("status", "step", "percent", "done", "total", "error", "elapsed")


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """The default hasher costs a second per user; these tests are not about it."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def page(response) -> BeautifulSoup:
    assert response.status_code == 200
    return BeautifulSoup(response.content.decode(), "html.parser")


@pytest.fixture
def pending(as_owner, docs) -> Operation:
    """An index operation no worker has run: on_commit never fires under `db`."""
    return services.create_collection(as_owner, name="Waiting", source=str(docs))


@pytest.fixture
def completed(as_owner, docs, django_capture_on_commit_callbacks) -> Operation:
    with django_capture_on_commit_callbacks(execute=True):
        operation = services.create_collection(as_owner, name="Notes", source=str(docs))
    operation.refresh_from_db()
    return operation


def row_of(soup: BeautifulSoup, operation: Operation):
    return soup.find(attrs={"data-operation-id": str(operation.id)})


def field(element, name: str) -> str:
    return element.find(attrs={"data-field": name}).get_text(strip=True)


@pytest.mark.parametrize("name", ["operations:list", "operations:detail"])
def test_every_page_requires_login(client, pending, name):
    url = reverse(name, args=[pending.id] if name.endswith("detail") else [])

    response = client.get(url)

    assert response["Location"] == f"/login/?next={url}"


@pytest.mark.parametrize("name", ["operations:cancel", "operations:dismiss"])
def test_every_button_requires_login(client, pending, name):
    response = client.post(reverse(name, args=[pending.id]))

    assert response["Location"].startswith("/login/?next=")
    pending.refresh_from_db()
    assert pending.status == Operation.Status.PENDING


def test_a_pending_operation_is_listed_under_active(client, owner, pending):
    client.force_login(owner)

    soup = page(client.get(reverse("operations:list")))

    row = row_of(soup.find(id="active-operations"), pending)
    assert row["data-status"] == "pending"
    assert field(row, "status") == "pending"
    assert field(row, "step") == "queued"
    assert "Waiting" in row.get_text()
    assert "olivia" in row.get_text()
    assert row.find("button", string="Cancel")
    assert row_of(soup.find(id="recent-operations"), pending) is None


def test_the_list_carries_the_live_update_contract(client, owner, completed):
    client.force_login(owner)

    soup = page(client.get(reverse("operations:list")))

    row = row_of(soup.find(id="recent-operations"), completed)
    assert row.name == "tr"
    assert row["data-status"] == "completed"
    for name in LIVE_FIELDS:
        assert row.find(attrs={"data-field": name}) is not None, name
    assert (field(row, "done"), field(row, "total"), field(row, "percent")) == (
        "3",
        "3",
        "100",
    )
    bar = row.find("progress", attrs={"data-field": "progress"})
    assert (bar["value"], bar["max"]) == ("100", "100")
    body = soup.find("body")
    assert body["data-live-url"] == "/ws/operations/"
    last = OperationEvent.objects.aggregate(m=Max("id"))["m"]
    assert body["data-last-event"] == str(last)
    assert soup.find(id="live-status").has_attr("hidden")


def test_the_last_event_id_ignores_other_users_operations(client, outsider, completed):
    client.force_login(outsider)

    soup = page(client.get(reverse("operations:list")))

    assert soup.find("body")["data-last-event"] == "0"
    assert row_of(soup, completed) is None


def test_the_nav_shows_the_number_of_active_operations(client, owner, pending):
    client.force_login(owner)

    soup = page(client.get(reverse("collections:list")))

    assert soup.find(id="active-operation-count").get_text() == "1"


def test_cancelling_a_pending_operation_ends_it(client, owner, pending):
    client.force_login(owner)

    response = client.post(
        reverse("operations:cancel", args=[pending.id]),
        {"next": reverse("operations:list")},
    )

    pending.refresh_from_db()
    assert response["Location"] == reverse("operations:list")
    assert pending.status == Operation.Status.CANCELLED
    soup = page(client.get(reverse("operations:list")))
    assert row_of(soup.find(id="active-operations"), pending) is None
    assert row_of(soup.find(id="recent-operations"), pending)["data-status"] == (
        "cancelled"
    )


def test_cancel_never_redirects_to_another_site(client, owner, pending):
    client.force_login(owner)

    response = client.post(
        reverse("operations:cancel", args=[pending.id]),
        {"next": "https://evil.example/"},
    )

    assert response["Location"] == pending.get_absolute_url()


def test_cancelling_a_finished_operation_says_why_not(client, owner, completed):
    client.force_login(owner)

    response = client.post(
        reverse("operations:cancel", args=[completed.id]), follow=True
    )

    assert "has already ended" in page(response).select_one(".message.error").text


def test_dismissing_hides_it_from_recent_but_keeps_it_on_the_collection_page(
    client, owner, completed
):
    client.force_login(owner)

    client.post(reverse("operations:dismiss", args=[completed.id]))

    completed.refresh_from_db()
    assert completed.dismissed
    listing = page(client.get(reverse("operations:list")))
    assert row_of(listing, completed) is None
    collection_page = page(client.get(completed.collection.get_absolute_url()))
    assert row_of(collection_page, completed) is not None


def test_an_active_operation_cannot_be_dismissed(client, owner, pending):
    client.force_login(owner)

    response = client.post(
        reverse("operations:dismiss", args=[pending.id]), follow=True
    )

    pending.refresh_from_db()
    assert not pending.dismissed
    assert "cannot be dismissed" in page(response).select_one(".message.error").text


def test_operations_finished_long_ago_are_not_recent(
    client, owner, completed, settings
):
    settings.RECENT_OPERATIONS_HOURS = 1
    Operation.objects.filter(id=completed.id).update(
        finished_at=timezone.now() - timedelta(hours=2)
    )
    client.force_login(owner)

    soup = page(client.get(reverse("operations:list")))

    assert row_of(soup, completed) is None


def test_recent_operations_are_newest_first(client, owner, completed):
    reindex = services.reindex(
        services.Request(owner), Collection.objects.get(id=completed.collection_id)
    )
    Operation.objects.filter(id=reindex.id).update(
        status=Operation.Status.FAILED,
        finished_at=timezone.now() + timedelta(seconds=1),
        error="Source folder is missing",
    )
    client.force_login(owner)

    soup = page(client.get(reverse("operations:list")))

    rows = soup.find(id="recent-operations").find_all("tr")
    assert [r["data-operation-id"] for r in rows] == [
        str(reindex.id),
        str(completed.id),
    ]
    assert field(rows[0], "error") == "Source folder is missing"


def test_it_rejects_a_foreign_operation(client, outsider, pending):
    client.force_login(outsider)

    assert client.get(pending.get_absolute_url()).status_code == 404
    for name in ("operations:cancel", "operations:dismiss"):
        assert client.post(reverse(name, args=[pending.id])).status_code == 404
    pending.refresh_from_db()
    assert pending.status == Operation.Status.PENDING
    listing = page(client.get(reverse("operations:list")))
    assert row_of(listing, pending) is None


def test_an_unknown_operation_is_a_404(client, owner):
    client.force_login(owner)

    response = client.get(reverse("operations:detail", args=[uuid.uuid4()]))

    assert response.status_code == 404


def test_the_operation_page_shows_counts_and_every_event(client, owner, completed):
    client.force_login(owner)

    soup = page(client.get(completed.get_absolute_url()))

    section = soup.find("section", attrs={"data-operation-id": str(completed.id)})
    assert section["data-status"] == "completed"
    for name in LIVE_FIELDS:
        assert section.find(attrs={"data-field": name}) is not None, name
    counts = {
        td["data-count"]: td.get_text() for td in section.select("td[data-count]")
    }
    assert counts["found"] == counts["indexed"] == "3"
    assert counts["chunks"] == str(completed.chunks)
    items = soup.find("ol", id="operation-events").find_all("li")
    events = list(completed.events.order_by("id"))
    assert [li["data-event-id"] for li in items] == [str(e.id) for e in events]
    assert "requested" in items[0].get_text()
    assert "completed" in items[-1].get_text()
    assert soup.find("body")["data-last-event"] == str(events[-1].id)


def test_an_operation_of_a_deleted_collection_keeps_its_name(
    client, owner, completed, django_capture_on_commit_callbacks
):
    collection = Collection.objects.get(id=completed.collection_id)
    with django_capture_on_commit_callbacks(execute=True):
        services.delete_collection(services.Request(owner), collection)
    client.force_login(owner)

    soup = page(client.get(reverse("operations:list")))

    row = row_of(soup, completed)
    assert "Notes" in row.get_text()
    assert "(deleted)" in row.get_text()


@pytest.mark.parametrize(
    "seconds, text",
    [(None, "—"), (0, "0 s"), (5.4, "5 s"), (65, "1 min 5 s"), (3720, "1 h 2 min")],
)
def test_durations_read_as_minutes_and_seconds(seconds, text):
    assert format_duration(seconds) == text


def test_a_running_operation_shows_elapsed_and_remaining_time(client, owner, pending):
    started = timezone.now() - timedelta(seconds=64.8)
    Operation.objects.filter(id=pending.id).update(
        status=Operation.Status.PROCESSING, started_at=started, done=1, total=2
    )
    client.force_login(owner)

    row = row_of(page(client.get(reverse("operations:list"))), pending)

    assert field(row, "elapsed") == "1 min 5 s"
    assert field(row, "remaining") == "1 min 5 s"
    assert field(row, "percent") == "50"
