"""The Django admin: every model's pages load, and actions go through the services."""

import pytest
from django.contrib import admin
from django.urls import reverse

from audit.models import AuditLog
from collections_app import services
from collections_app.models import Chunk, Collection, Document, Source
from operations.models import Operation, OperationEvent

pytestmark = pytest.mark.django_db

MODELS = [Collection, Source, Document, Chunk, Operation, OperationEvent]


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """The default hasher costs a second per user; these tests are not about it."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("root", password="pw-root-123")


@pytest.fixture
def indexed(as_owner, docs, django_capture_on_commit_callbacks) -> Collection:
    with django_capture_on_commit_callbacks(execute=True):
        operation = services.create_collection(as_owner, name="Notes", source=str(docs))
    return Collection.objects.get(id=operation.collection_id)


def admin_url(model, view: str, *args) -> str:
    meta = model._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_{view}", args=args)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_changelists_load_for_a_superuser(client, superuser, indexed, model):
    client.force_login(superuser)

    response = client.get(admin_url(model, "changelist"))

    assert response.status_code == 200


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_each_object_page_loads_for_a_superuser(client, superuser, indexed, model):
    client.force_login(superuser)
    obj = model.objects.first()

    response = client.get(admin_url(model, "change", obj.pk))

    assert response.status_code == 200


def test_changelists_do_not_query_per_row(
    client, superuser, indexed, django_assert_max_num_queries
):
    client.force_login(superuser)

    for model in (Chunk, Document, Operation):
        with django_assert_max_num_queries(12):
            assert client.get(admin_url(model, "changelist")).status_code == 200


def test_the_chunk_page_shows_no_raw_vector(client, superuser, indexed):
    client.force_login(superuser)
    chunk = Chunk.objects.first()

    response = client.get(admin_url(Chunk, "change", chunk.pk))

    assert 'name="vector"' not in response.content.decode()
    assert "384" in response.content.decode()


def test_the_operation_page_shows_its_events(client, superuser, indexed):
    client.force_login(superuser)
    operation = indexed.operations.get()

    response = client.get(admin_url(Operation, "change", operation.pk))

    html = response.content.decode()
    for event in operation.events.all():
        assert event.kind in html


def test_the_reindex_action_starts_an_operation(client, superuser, indexed):
    client.force_login(superuser)

    client.post(
        admin_url(Collection, "changelist"),
        {"action": "reindex", "_selected_action": [str(indexed.pk)]},
    )

    operation = indexed.operations.get(type=Operation.Type.REINDEX)
    assert operation.requested_by == superuser
    assert AuditLog.objects.filter(
        action=AuditLog.Action.REINDEX_REQUESTED, actor=superuser
    ).exists()


def test_the_cancel_action_cancels_a_pending_operation(
    client, superuser, as_owner, docs
):
    operation = services.create_collection(as_owner, name="Waiting", source=str(docs))
    client.force_login(superuser)

    client.post(
        admin_url(Operation, "changelist"),
        {"action": "cancel", "_selected_action": [str(operation.pk)]},
    )

    operation.refresh_from_db()
    assert operation.status == Operation.Status.CANCELLED


def test_the_admin_does_not_edit_content_behind_the_services(superuser):
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = superuser
    for model in MODELS:
        model_admin = admin.site._registry[model]
        assert not model_admin.has_add_permission(request)
        assert not model_admin.has_change_permission(request)
        assert not model_admin.has_delete_permission(request)


def test_people_who_are_not_staff_are_sent_to_the_admin_login(client, owner):
    client.force_login(owner)

    response = client.get(admin_url(Collection, "changelist"))

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
