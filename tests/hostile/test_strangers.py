"""Strangers: another user's things are a 404 everywhere; forms need CSRF; no leaks."""

import io
import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connections, transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from audit.models import AuditLog
from audit.services import record
from collections_app import services
from collections_app.models import Collection, Source
from collections_app.services import Request
from operations import lifecycle
from operations.models import Operation
from tests.conftest import BASE_DIR, child_env, write_files
from webui.asgi import application

pytestmark = pytest.mark.django_db


class Things:
    """The owner's collection, its source and pending operation, and the outsider's."""

    def __init__(self, owner: User, outsider: User, tmp_path: Path):
        mine = write_files(tmp_path / "olivia", {"a.txt": "olivia's private notes"})
        theirs = write_files(tmp_path / "oscar", {"b.txt": "oscar's own notes"})
        self.operation = services.create_collection(
            Request(owner), name="Notes", source=str(mine)
        )
        self.collection = self.operation.collection
        self.source = self.collection.sources.get()
        self.folder = mine
        outsiders = services.create_collection(
            Request(outsider), name="Oscar's", source=str(theirs)
        )
        self.other_collection = outsiders.collection
        self.other_source = self.other_collection.sources.get()

    def snapshot(self) -> tuple:
        """What a stranger's request must leave exactly as it was."""
        operation = Operation.objects.get(id=self.operation.id)
        collection = Collection.objects.get(id=self.collection.id)
        return (
            Operation.objects.count(),
            operation.status,
            operation.dismissed,
            operation.cancel_requested,
            collection.name,
            collection.description,
            list(collection.sources.values_list("path", flat=True)),
        )


@pytest.fixture
def things(owner: User, outsider: User, tmp_path: Path) -> Things:
    return Things(owner, outsider, tmp_path)


def collection_url(name: str) -> Callable[[Things], str]:
    return lambda t: reverse(name, args=[t.collection.id])


def operation_url(name: str) -> Callable[[Things], str]:
    return lambda t: reverse(name, args=[t.operation.id])


# Every request a stranger could make about someone else's collection or
# operation: (URL name, method, URL builder, form data builder).
FOREIGN = [
    ("collections:detail", "get", collection_url("collections:detail"), None),
    (
        "collections:detail",
        "get",
        lambda t: (
            reverse("collections:detail", args=[t.collection.id]) + "?status=failed"
        ),
        None,
    ),
    (
        "collections:update",
        "post",
        collection_url("collections:update"),
        lambda t: {"name": "Taken over", "description": "mine now"},
    ),
    (
        "collections:add_source",
        "post",
        collection_url("collections:add_source"),
        lambda t: {"source": str(t.folder.parent / "oscar")},
    ),
    (
        "collections:remove_source",
        "post",
        collection_url("collections:remove_source"),
        lambda t: {"source": str(t.source.id)},
    ),
    ("collections:reindex", "post", collection_url("collections:reindex"), None),
    ("collections:delete", "get", collection_url("collections:delete"), None),
    ("collections:delete", "post", collection_url("collections:delete"), None),
    (
        "collections:search",
        "get",
        lambda t: (
            reverse("collections:search")
            + f"?q=private+notes&collection={t.collection.id}"
        ),
        None,
    ),
    ("operations:detail", "get", operation_url("operations:detail"), None),
    ("operations:cancel", "post", operation_url("operations:cancel"), None),
    ("operations:dismiss", "post", operation_url("operations:dismiss"), None),
    ("audit:collection", "get", collection_url("audit:collection"), None),
    (
        "audit:collection",
        "get",
        lambda t: (
            reverse("audit:collection", args=[t.collection.id])
            + "?action=collection.created"
        ),
        None,
    ),
]


def urls_taking_an_id() -> set[str]:
    """Names of every URL in the URLconf that carries a collection or operation id."""
    found: set[str] = set()

    def walk(patterns, namespace: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                inner = ":".join(p for p in (namespace, pattern.namespace) if p)
                walk(pattern.url_patterns, inner)
            elif isinstance(pattern, URLPattern):
                converters = getattr(pattern.pattern, "converters", {})
                if {"collection_id", "operation_id"} & set(converters):
                    found.add(f"{namespace}:{pattern.name}")

    walk(get_resolver().url_patterns, "")
    return found


def send(client: Client, method: str, url: str, data: dict | None):
    return getattr(client, method)(url, data or {})


def run_command(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(*args, stdout=out, stderr=err)
    except SystemExit as exc:
        return exc.code, out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


# --- pages, forms and actions --------------------------------------------------


def test_every_url_that_takes_an_id_is_in_the_strangers_table():
    filters = {"collections:search"}

    assert urls_taking_an_id() == {name for name, *_ in FOREIGN} - filters


@pytest.mark.parametrize(
    ("name", "method", "url", "data"),
    FOREIGN,
    ids=[f"{method} {name} {i}" for i, (name, method, *_) in enumerate(FOREIGN)],
)
def test_a_stranger_gets_404_for_another_users_collection_or_operation(
    client, outsider, things, name, method, url, data
):
    before = things.snapshot()
    client.force_login(outsider)

    response = send(client, method, url(things), data(things) if data else None)

    assert response.status_code == 404
    assert things.snapshot() == before
    assert "private notes" not in response.content.decode()


@pytest.mark.parametrize(
    ("name", "method", "url", "data"),
    [case for case in FOREIGN if case[1] == "get"],
)
def test_the_owner_reaches_the_same_pages(
    client, owner, things, name, method, url, data
):
    client.force_login(owner)

    assert send(client, method, url(things), None).status_code == 200


def test_an_owner_cannot_remove_a_source_of_someone_elses_collection_through_their_own(
    client, owner, things
):
    client.force_login(owner)

    response = client.post(
        reverse("collections:remove_source", args=[things.collection.id]),
        {"source": str(things.other_source.id)},
    )

    assert response.status_code == 404
    assert Source.objects.filter(id=things.other_source.id).exists()
    assert not Operation.objects.filter(type=Operation.Type.REMOVE_SOURCE).exists()


@pytest.mark.parametrize(
    "args",
    [
        ("collections", "reindex", "Notes"),
        ("collections", "delete", "Notes"),
        ("collections", "add-source", "Notes", "{folder}"),
        ("collections", "remove-source", "Notes", "{folder}"),
        ("search", "private notes", "--collection", "Notes"),
        ("operations", "cancel", "{operation}"),
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_the_command_line_refuses_another_users_collection_or_operation(
    outsider, things, args
):
    before = things.snapshot()
    filled = [
        a.format(folder=things.folder, operation=things.operation.id) for a in args
    ]

    code, out, err = run_command(*filled, "--owner", "oscar")

    assert code == 1
    assert "oscar" in err and "Traceback" not in err
    assert "private notes" not in out
    assert things.snapshot() == before


def test_the_operation_list_of_the_command_line_shows_a_stranger_nothing_of_others(
    outsider, things
):
    code, out, _ = run_command("operations", "list", "--owner", "oscar", "--json")

    assert code == 0
    assert {o["collection"] for o in json.loads(out)} == {"Oscar's"}


# --- the live socket -------------------------------------------------------------


def session_cookie(user: User) -> list[tuple[bytes, bytes]]:
    client = Client()
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    return [(b"cookie", cookie), (b"origin", b"http://127.0.0.1")]


def request_operation(user: User, name: str) -> Operation:
    collection = Collection.objects.create(owner=user, name=name)
    with transaction.atomic():
        return lifecycle.create_pending(
            collection=collection, type=Operation.Type.INDEX, requested_by=user
        )


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_socket_never_replays_or_pushes_another_users_events(
    owner, outsider, monkeypatch
):
    monkeypatch.setattr(lifecycle, "enqueue", lambda operation_id: None)
    try:
        before = await database_sync_to_async(request_operation)(owner, "Olivia's")
        headers = await sync_to_async(session_cookie)(outsider)
        socket = WebsocketCommunicator(application, "/ws/operations/", headers=headers)
        connected, _ = await socket.connect()
        assert connected
        await socket.send_json_to({"type": "resume", "last": 0})
        assert await socket.receive_nothing(timeout=1)

        await database_sync_to_async(lifecycle.finish)(
            before, Operation.Status.CANCELLED
        )
        own = await database_sync_to_async(request_operation)(outsider, "Oscar's")
        message = await socket.receive_json_from(timeout=15)

        assert message["operation"]["id"] == str(own.id)
        assert await socket.receive_nothing(timeout=1)
        await socket.disconnect()
    finally:
        # Connections of the consumer's threads would keep PostgreSQL's test
        # database from being dropped.
        await database_sync_to_async(connections.close_all)()


# --- CSRF ------------------------------------------------------------------------


CSRF_FORMS = [
    ("login", lambda t: reverse("login"), False),
    ("logout", lambda t: reverse("logout"), True),
    ("collections:create", lambda t: reverse("collections:create"), True),
    *[(name, url, True) for name, method, url, _ in FOREIGN if method == "post"],
]


@pytest.mark.parametrize(
    ("name", "url", "signed_in"),
    CSRF_FORMS,
    ids=[name for name, *_ in CSRF_FORMS],
)
def test_every_form_refuses_a_post_without_a_csrf_token(
    owner, things, name, url, signed_in
):
    client = Client(enforce_csrf_checks=True)
    if signed_in:
        client.force_login(owner)
    before = things.snapshot()

    response = client.post(url(things), {"username": "olivia", "name": "x"})

    assert response.status_code == 403
    assert things.snapshot() == before


# --- redirects -------------------------------------------------------------------

FOREIGN_TARGETS = [
    "https://evil.example/",
    "//evil.example/",
    "/\\evil.example/",
    "\\\\evil.example/",
    "https:evil.example",
    "http://testserver@evil.example/",
    " https://evil.example/",
    "javascript:alert(1)",
]


def assert_local(location: str) -> None:
    parts = urlsplit(location)
    assert not parts.scheme and not parts.netloc, location
    assert location.startswith("/") and not location.startswith(("//", "/\\")), location


@pytest.mark.parametrize("target", FOREIGN_TARGETS)
def test_login_redirects_only_to_local_paths(client, owner, target):
    response = client.post(
        f"{reverse('login')}?next={quote(target)}",
        {"username": "olivia", "password": "pw-olivia-123", "next": target},
    )

    assert response.status_code == 302
    assert_local(response["Location"])
    assert client.get(response["Location"], follow=True).status_code == 200


@pytest.mark.parametrize("target", FOREIGN_TARGETS)
def test_operation_buttons_redirect_only_to_local_paths(client, owner, things, target):
    client.force_login(owner)

    response = client.post(
        reverse("operations:dismiss", args=[things.operation.id]), {"next": target}
    )

    assert response.status_code == 302
    assert_local(response["Location"])


# --- secrets -----------------------------------------------------------------------


def test_a_password_never_reaches_the_logs_or_the_audit_trail(
    client, django_user_model, tmp_path, caplog, settings
):
    caplog.set_level(logging.DEBUG)
    password, guess = "Correct-Horse-4711-staple", "Wrong-Battery-0815-guess"
    settings.METRICS_TOKEN = "metrics-token-9f3c2a"
    django_user_model.objects.create_user("penny", password=password)
    folder = write_files(tmp_path / "penny", {"a.txt": "penny's notes"})

    refused = client.post(reverse("login"), {"username": "penny", "password": guess})
    signed_in = client.post(
        reverse("login"), {"username": "penny", "password": password}
    )
    client.post(
        reverse("collections:create"),
        {
            "name": "Penny's notes",
            "description": "",
            "source": str(folder),
            "chunk_size": "800",
            "chunk_overlap": "100",
        },
    )
    client.get(
        reverse("metrics"),
        HTTP_AUTHORIZATION="Bearer not-the-token-77",
        REMOTE_ADDR="203.0.113.9",
    )

    assert refused.status_code == 200 and signed_in.status_code == 302
    audit = json.dumps(list(AuditLog.objects.values("details", "actor_name")))
    assert AuditLog.objects.exists()
    for secret in (password, guess, settings.SECRET_KEY, settings.METRICS_TOKEN):
        assert secret not in caplog.text
        assert secret not in audit
    assert "not-the-token-77" not in caplog.text


def test_audit_details_under_secret_keys_are_redacted(owner):
    entry = record(
        AuditLog.Action.COLLECTION_CREATED,
        actor=owner,
        details={
            "password": "hunter2-plain",
            "source": "/srv/docs",
            "nested": {"api_key": "sk-live-123", "dbPassword": "pg-secret"},
            "list": [{"token": "tok-456"}],
        },
    )
    entry.refresh_from_db()

    stored = json.dumps(entry.details)
    for secret in ("hunter2-plain", "sk-live-123", "pg-secret", "tok-456"):
        assert secret not in stored
    assert entry.details["password"] == "[redacted]"
    assert entry.details["source"] == "/srv/docs"


def test_a_forged_host_header_is_refused_with_one_log_line_and_no_traceback():
    probe = (
        "from django.test import Client\n"
        "print(Client().get('/login/', HTTP_HOST='evil.example').status_code)\n"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", probe],
        cwd=BASE_DIR,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.stdout.split()[-1] == "400"
    lines = [line for line in result.stderr.splitlines() if "evil.example" in line]
    assert len(lines) == 1 and " WARNING django.security.DisallowedHost" in lines[0]
    assert "Traceback" not in result.stderr


def test_the_global_audit_trail_refuses_a_non_staff_user_without_a_traceback(
    client, owner, caplog
):
    client.force_login(owner)

    response = client.get(reverse("audit:list"))

    assert response.status_code == 403
    assert b"for staff" in response.content
    assert not [record for record in caplog.records if record.exc_info]
