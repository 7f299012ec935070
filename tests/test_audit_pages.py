"""The audit pages and the admin: who may read which entries, and how they read."""

import html
import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditLog
from audit.services import record
from collections_app import services
from collections_app.models import Collection

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """Users are made in every test; the production hasher is slow on purpose."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


A = AuditLog.Action
AWKWARD = {
    "source": "C:\\Users\\Public\\Docs\\日本",
    "note": "<script>alert('x')</script>",
    "odd": "\udcff\x00\u202e",
}


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        "stella", password="pw-stella-123", is_staff=True
    )


@pytest.fixture
def collection(as_owner, docs) -> Collection:
    """A collection whose index operation is requested (not run)."""
    operation = services.create_collection(as_owner, name="Notes", source=str(docs))
    record(
        A.SOURCE_ADDED,
        actor=as_owner.user,
        collection=operation.collection,
        details=AWKWARD,
    )
    return operation.collection


def collection_url(collection_id) -> str:
    return reverse("audit:collection", args=[collection_id])


def shown_actions(response) -> list[str]:
    return [entry.action for entry in response.context["entries"]]


def test_the_owner_reads_their_collections_trail(client, owner, collection):
    client.force_login(owner)

    response = client.get(collection_url(collection.id))

    assert response.status_code == 200
    assert shown_actions(response) == [
        A.SOURCE_ADDED,
        A.OPERATION_REQUESTED,
        A.COLLECTION_CREATED,
    ]


def shown_details(page: str) -> list[str]:
    """The text of every details block on a page, unescaped."""
    blocks = page.split('<pre class="path">')[1:]
    return [html.unescape(block.split("</pre>", 1)[0]) for block in blocks]


def test_details_are_shown_as_escaped_formatted_json(client, owner, collection):
    client.force_login(owner)

    page = client.get(collection_url(collection.id)).content.decode()

    awkward = shown_details(page)[0]
    assert json.loads(awkward) == AWKWARD
    assert '\n  "source": "C:\\\\Users\\\\Public\\\\Docs\\\\日本"' in awkward
    assert "\\udcff\\u0000\\u202e" in awkward
    assert "<script>" not in page


@pytest.mark.parametrize("who", ["teammate", "outsider"])
def test_other_users_get_404_for_a_collections_trail(client, request, who, collection):
    client.force_login(request.getfixturevalue(who))

    assert client.get(collection_url(collection.id)).status_code == 404


def test_staff_read_any_collections_trail(client, staff, collection):
    client.force_login(staff)

    assert client.get(collection_url(collection.id)).status_code == 200


def test_a_deleted_collections_trail_stays_readable_for_staff_only(
    client, staff, owner, collection
):
    collection_id = collection.id
    collection.delete()

    client.force_login(staff)
    response = client.get(collection_url(collection_id))
    assert response.status_code == 200
    assert len(shown_actions(response)) == 3
    assert "Notes" in response.content.decode()

    client.force_login(owner)
    assert client.get(collection_url(collection_id)).status_code == 404


def test_an_unknown_collection_is_404_even_for_staff(client, staff, collection):
    client.force_login(staff)

    response = client.get(collection_url("00000000-0000-0000-0000-000000000000"))

    assert response.status_code == 404


def test_the_global_trail_is_for_staff_only(client, owner, collection):
    assert client.get(reverse("audit:list")).status_code == 302
    client.force_login(owner)

    assert client.get(reverse("audit:list")).status_code == 403


def test_staff_read_the_global_trail(client, staff, collection):
    client.force_login(staff)

    response = client.get(reverse("audit:list"))

    assert response.status_code == 200
    assert len(shown_actions(response)) == 3
    assert collection_url(collection.id) in response.content.decode()


@pytest.fixture
def mixed_trail(db, owner, teammate):
    """Entries by two users, about two collections, on three days."""
    now = timezone.now()
    rows = [
        (A.COLLECTION_CREATED, owner, "Garden", 10),
        (A.COLLECTION_RENAMED, owner, "Garden", 5),
        (A.COLLECTION_CREATED, teammate, "Recipes", 5),
        (A.OPERATION_FAILED, None, "Recipes", 0),
    ]
    for action, actor, name, days_ago in rows:
        entry = AuditLog.objects.create(
            action=action,
            actor=actor,
            actor_name=actor.get_username() if actor else "system",
            collection_name=name,
            created_at=now - timedelta(days=days_ago),
        )
        assert entry.pk
    return now


@pytest.mark.parametrize(
    "query,expected",
    [
        ({"action": A.COLLECTION_CREATED}, [("theo", "Recipes"), ("olivia", "Garden")]),
        ({"user": "OLIVIA"}, [("olivia", "Garden"), ("olivia", "Garden")]),
        ({"user": "system"}, [("system", "Recipes")]),
        ({"collection": "recip"}, [("system", "Recipes"), ("theo", "Recipes")]),
        ({"action": "no.such.action"}, None),
    ],
)
def test_the_global_trail_filters(client, staff, mixed_trail, query, expected):
    client.force_login(staff)

    response = client.get(reverse("audit:list"), query)

    shown = [(e.actor_name, e.collection_name) for e in response.context["entries"]]
    if expected is None:
        assert response.context["form"].errors
        assert len(shown) == 4
    else:
        assert shown == expected


def rename(collection: Collection, name: str) -> None:
    request = services.Request(user=collection.owner, remote_addr=None)
    services.update_collection(request, collection, name=name, description="")


def test_the_global_trail_filter_by_name_shows_a_renamed_collections_whole_history(
    client, staff, as_owner, teammate, docs
):
    olivias = services.create_collection(
        as_owner, name="Alpha", source=str(docs)
    ).collection
    rename(olivias, "Beta")
    theos = services.Request(user=teammate, remote_addr=None)
    services.create_collection(theos, name="Alpha", source=str(docs))
    client.force_login(staff)

    def shown(text: str) -> list[tuple[str, str]]:
        response = client.get(reverse("audit:list"), {"collection": text})
        return [(e.actor_name, e.collection_name) for e in response.context["entries"]]

    assert shown("beta") == [
        ("olivia", "Beta"),
        ("olivia", "Alpha"),
        ("olivia", "Alpha"),
    ]
    assert shown(str(olivias.id)) == shown("beta")
    assert shown("Alpha") == [("theo", "Alpha"), ("theo", "Alpha")]


def test_the_global_trail_filter_finds_a_deleted_collection_by_its_name(
    client, staff, collection
):
    collection.delete()
    client.force_login(staff)

    response = client.get(reverse("audit:list"), {"collection": "notes"})

    assert len(shown_actions(response)) == 3


def test_the_global_trail_filters_by_date_range(client, staff, mixed_trail):
    client.force_login(staff)
    day = (timezone.localdate(mixed_trail) - timedelta(days=5)).isoformat()

    response = client.get(reverse("audit:list"), {"date_from": day, "date_to": day})

    assert sorted(shown_actions(response)) == [
        A.COLLECTION_CREATED,
        A.COLLECTION_RENAMED,
    ]
    since = client.get(reverse("audit:list"), {"date_from": day})
    assert len(shown_actions(since)) == 3


def test_the_trail_is_paginated_by_50_and_pages_keep_the_filter(client, staff, owner):
    for number in range(60):
        record(A.COLLECTION_RENAMED, actor=owner, details={"n": number})
    record(A.COLLECTION_CREATED, actor=owner)
    client.force_login(staff)

    first = client.get(reverse("audit:list"), {"action": A.COLLECTION_RENAMED})
    second = client.get(
        reverse("audit:list"), {"action": A.COLLECTION_RENAMED, "page": 2}
    )

    assert len(shown_actions(first)) == 50
    assert len(shown_actions(second)) == 10
    assert "action=collection.renamed&amp;page=2" in first.content.decode()


def admin_url(name: str, *args) -> str:
    return reverse(f"admin:audit_auditlog_{name}", args=args)


def test_the_admin_lists_and_searches_entries(admin_client, collection):
    response = admin_client.get(admin_url("changelist"), {"q": "Notes"})

    assert response.status_code == 200
    assert response.context["cl"].result_count == 3
    assert "delete_selected" not in response.content.decode()


def test_the_admin_shows_an_entry_read_only_with_decoded_details(
    admin_client, collection
):
    entry = AuditLog.objects.get(action=A.SOURCE_ADDED)

    response = admin_client.get(admin_url("change", entry.pk))

    assert response.status_code == 200
    page = response.content.decode()
    assert html.escape("C:\\\\Users\\\\Public\\\\Docs\\\\日本") in page
    assert 'name="_save"' not in page


def test_the_admin_cannot_add_change_or_delete_entries(admin_client, collection):
    entry = AuditLog.objects.get(action=A.SOURCE_ADDED)

    assert admin_client.get(admin_url("add")).status_code == 403
    assert admin_client.post(admin_url("change", entry.pk), {}).status_code == 403
    assert (
        admin_client.post(admin_url("delete", entry.pk), {"post": "yes"}).status_code
        == 403
    )
    assert AuditLog.objects.filter(pk=entry.pk).exists()
