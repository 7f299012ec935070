"""`manage.py audit prune` and `manage.py audit list`."""

import io
import json
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from audit.management.commands import audit as audit_command
from audit.models import AuditLog
from audit.services import record
from collections_app import services
from collections_app.models import Collection
from collections_app.services import Request
from tests.conftest import BASE_DIR, child_env

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """Users are made in every test; the production hasher is slow on purpose."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


A = AuditLog.Action


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("audit", *args, stdout=out)
    return out.getvalue()


def aged(entry: AuditLog, days: float) -> AuditLog:
    AuditLog.objects.filter(pk=entry.pk).update(
        created_at=timezone.now() - timedelta(days=days)
    )
    return entry


def test_prune_deletes_only_older_entries_and_says_how_many(owner):
    old = [aged(record(A.COLLECTION_RENAMED, actor=owner), 40) for _ in range(3)]
    recent = aged(record(A.COLLECTION_RENAMED, actor=owner), 29)

    output = run("prune", "--older-than", "30")

    assert output.startswith("Deleted 3 audit entries older than 30 days")
    assert list(AuditLog.objects.all()) == [recent]
    assert not AuditLog.objects.filter(pk__in=[e.pk for e in old]).exists()


def test_prune_works_in_batches(owner, monkeypatch):
    monkeypatch.setattr(audit_command, "PRUNE_BATCH", 2)
    for _ in range(5):
        aged(record(A.COLLECTION_RENAMED, actor=owner), 3)

    assert run("prune", "--older-than", "1").startswith("Deleted 5 audit entries")
    assert not AuditLog.objects.exists()


@pytest.mark.parametrize("days", ["0", "-3"])
def test_prune_refuses_less_than_a_day(owner, days):
    aged(record(A.COLLECTION_RENAMED, actor=owner), 3)

    with pytest.raises(CommandError) as refused:
        run("prune", "--older-than", days)

    assert refused.value.returncode == 2
    assert AuditLog.objects.count() == 1


def test_prune_exits_with_status_2_from_the_shell():
    result = subprocess.run(
        [sys.executable, "manage.py", "audit", "prune", "--older-than", "0"],
        cwd=BASE_DIR,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "at least 1 day" in result.stderr
    assert result.stdout == ""


@pytest.fixture
def trail(as_owner, docs):
    services.create_collection(as_owner, name="Notes", source=str(docs))
    record(
        A.SOURCE_ADDED,
        actor=as_owner.user,
        details={"source": "C:\\Users\\日本\\\x00\udcff", "note": "line\nbreak"},
    )
    record(A.COLLECTION_RENAMED, actor=None, details={"old_name": "Other"})


def test_list_json_prints_only_json_with_decoded_details(trail):
    output = run("list", "--json")

    entries = json.loads(output)
    assert [e["action"] for e in entries] == [
        A.COLLECTION_RENAMED,
        A.SOURCE_ADDED,
        A.OPERATION_REQUESTED,
        A.COLLECTION_CREATED,
    ]
    assert entries[1]["details"] == {
        "source": "C:\\Users\\日本\\\x00\udcff",
        "note": "line\nbreak",
    }
    assert entries[2]["collection"] == "Notes"
    assert entries[2]["operation_type"] == "index"
    assert entries[2]["remote_addr"] == "127.0.0.1"
    output.encode("utf-8")


def test_list_filters_by_collection_action_and_limit(trail):
    by_name = json.loads(
        run("list", "--collection", "Notes", "--owner", "olivia", "--json")
    )
    collection_id = by_name[0]["collection_id"]
    by_id = json.loads(run("list", "--collection", collection_id, "--json"))
    failed = json.loads(run("list", "--action", A.OPERATION_FAILED, "--json"))
    limited = json.loads(run("list", "--limit", "1", "--json"))

    assert [e["action"] for e in by_name] == [
        A.OPERATION_REQUESTED,
        A.COLLECTION_CREATED,
    ]
    assert by_id == by_name
    assert failed == []
    assert [e["action"] for e in limited] == [A.COLLECTION_RENAMED]


def test_list_prints_one_line_per_entry(trail):
    lines = run("list").splitlines()

    assert len(lines) == 4
    assert "collection.renamed" in lines[0] and "system" in lines[0]
    assert '"note": "line\\nbreak"' in lines[1]
    assert "olivia@127.0.0.1" in lines[2]


def test_list_says_so_when_there_is_nothing(db):
    assert run("list").strip() == "No audit entries."


def listed(*args: str) -> list[dict]:
    return json.loads(run("list", "--json", *args))


def create(user, name: str, docs) -> Collection:
    request = Request(user=user, remote_addr=None)
    return services.create_collection(request, name=name, source=str(docs)).collection


def rename(collection, name: str) -> None:
    request = Request(user=collection.owner, remote_addr=None)
    services.update_collection(request, collection, name=name, description="")


@pytest.fixture
def renamed(owner, teammate, docs):
    """Olivia's Alpha, renamed Beta, and then Theo's own Alpha."""
    olivias = create(owner, "Alpha", docs)
    rename(olivias, "Beta")
    theos = create(teammate, "Alpha", docs)
    return olivias, theos


def test_list_by_name_shows_a_renamed_collections_whole_history(renamed):
    olivias, _ = renamed

    entries = listed("--collection", "Beta", "--owner", "olivia")

    assert [(e["action"], e["collection"]) for e in entries] == [
        (A.COLLECTION_RENAMED, "Beta"),
        (A.OPERATION_REQUESTED, "Alpha"),
        (A.COLLECTION_CREATED, "Alpha"),
    ]
    assert {e["collection_id"] for e in entries} == {str(olivias.id)}


def test_list_by_name_shows_only_the_owners_collection_of_that_name(renamed):
    _, theos = renamed

    entries = listed("--collection", "Alpha", "--owner", "theo")

    assert [e["action"] for e in entries] == [
        A.OPERATION_REQUESTED,
        A.COLLECTION_CREATED,
    ]
    assert {e["collection_id"] for e in entries} == {str(theos.id)}


def test_list_by_name_means_the_oldest_superusers_collection_by_default(
    django_user_model, teammate, docs
):
    admin = django_user_model.objects.create_superuser("ada", password="pw-ada-123")
    admins = create(admin, "Alpha", docs)
    create(teammate, "Alpha", docs)

    entries = listed("--collection", "Alpha")

    assert len(entries) == 2
    assert {e["collection_id"] for e in entries} == {str(admins.id)}


def test_list_by_name_refuses_a_name_only_other_users_have(renamed):
    with pytest.raises(CommandError) as refused:
        run("list", "--collection", "Alpha", "--owner", "olivia")

    assert str(refused.value) == (
        "olivia has no collection named 'Alpha'; "
        "pass its id, or --owner with one of: theo."
    )


def test_list_by_name_without_an_owner_or_an_admin_says_how_to_name_one(renamed):
    with pytest.raises(CommandError) as refused:
        run("list", "--collection", "Beta")

    assert refused.value.returncode == 2
    assert "pass --owner USER" in str(refused.value)


def test_list_by_a_deleted_collections_name_shows_its_whole_history(owner, docs):
    collection = create(owner, "Drafts", docs)
    rename(collection, "Notes")
    collection_id = collection.id
    collection.delete()

    by_new_name = listed("--collection", "Notes")
    by_old_name = listed("--collection", "Drafts")

    assert [e["action"] for e in by_new_name] == [
        A.COLLECTION_RENAMED,
        A.OPERATION_REQUESTED,
        A.COLLECTION_CREATED,
    ]
    assert {e["collection_id"] for e in by_new_name} == {str(collection_id)}
    assert by_old_name == by_new_name


def test_list_refuses_a_name_several_deleted_collections_had(owner, teammate, docs):
    gone = [create(owner, "Old", docs), create(teammate, "Old", docs)]
    ids = sorted(str(collection.id) for collection in gone)
    for collection in gone:
        collection.delete()

    with pytest.raises(CommandError) as refused:
        run("list", "--collection", "Old")

    assert str(refused.value) == (
        f"2 collections were named 'Old'; pass one's id: {ids[0]}, {ids[1]}."
    )


def test_list_says_so_when_no_collection_ever_had_the_name(trail):
    with pytest.raises(CommandError) as refused:
        run("list", "--collection", "Nowhere")

    assert str(refused.value) == (
        "No collection is named 'Nowhere', and no audit entry names one."
    )
