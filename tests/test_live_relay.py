"""Events written by other processes reach the sockets of this one.

In the embedded default this is the web process's poller reading the database;
with REDIS_URL set it is the writer publishing through channels-redis.
"""

import asyncio
import logging
import sys

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections, transaction
from django.test import Client, override_settings

from collections_app import services
from collections_app.models import Collection
from operations import lifecycle, relay
from operations.models import Operation
from tests.conftest import BASE_DIR, child_env, write_files
from tests.test_live_consumer import fresh_live_state  # noqa: F401 - autouse
from webui.asgi import application

TRANSACTIONS = pytest.mark.django_db(transaction=True)

WRITER = """
import sys
import django

django.setup()
from operations import lifecycle, relay

operation = lifecycle.claim(sys.argv[1])
progress = lifecycle.Progress(operation)
for done in range(1, 21):
    progress.update(force=True, step="embedding", total=20, done=done)
lifecycle.finish(operation, "completed")
"""


@pytest_asyncio.fixture
async def close_thread_connections():
    """Close the connections of the thread that served the consumers.

    On PostgreSQL they outlive the test (CONN_MAX_AGE) and keep the test
    database from being dropped.
    """
    yield
    await database_sync_to_async(connections.close_all)()


def session_headers(user) -> list:
    client = Client()
    client.force_login(user)
    return [
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
        (b"origin", b"http://127.0.0.1"),
    ]


def request_operation(user, name: str) -> Operation:
    collection = Collection.objects.create(owner=user, name=name)
    with transaction.atomic():
        return lifecycle.create_pending(
            collection=collection, type=Operation.Type.INDEX, requested_by=user
        )


async def receive_until_completed(
    communicator, operation_id: str, timeout: float
) -> list:
    messages = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not messages or messages[-1]["event"] != "completed":
        remaining = deadline - loop.time()
        assert remaining > 0, f"operation did not complete in time; got {messages[-3:]}"
        message = await communicator.receive_json_from(timeout=remaining)
        assert message["operation"]["id"] == operation_id
        messages.append(message)
    return messages


@TRANSACTIONS
@pytest.mark.asyncio
@pytest.mark.slow
async def test_events_written_by_another_process_reach_a_connected_socket(
    owner, monkeypatch, close_thread_connections
):
    monkeypatch.setattr(lifecycle, "enqueue", lambda operation_id: None)
    operation = await database_sync_to_async(request_operation)(owner, "elsewhere")
    headers = await sync_to_async(session_headers)(owner)
    communicator = WebsocketCommunicator(
        application, "/ws/operations/", headers=headers
    )
    assert (await communicator.connect())[0]

    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRITER,
        str(operation.id),
        cwd=BASE_DIR,
        env=child_env(DJANGO_SETTINGS_MODULE="webui.settings"),
    )
    messages = await receive_until_completed(
        communicator, str(operation.id), timeout=60
    )

    assert await writer.wait() == 0
    assert [m["event"] for m in messages] == ["started"] + ["progress"] * 20 + [
        "completed"
    ]
    assert [m["operation"]["progress"]["done"] for m in messages[1:-1]] == list(
        range(1, 21)
    )
    assert messages[-1]["operation"]["progress"]["percent"] == 100
    await communicator.disconnect()


@TRANSACTIONS
@pytest.mark.asyncio
@pytest.mark.slow
async def test_an_operation_run_by_a_real_worker_is_watched_to_its_end(
    owner, as_owner, worker, tmp_path, close_thread_connections
):
    folder = write_files(
        tmp_path / "notes",
        {f"note-{i}.txt": f"Note {i} about rivers." for i in range(5)},
    )
    headers = await sync_to_async(session_headers)(owner)
    communicator = WebsocketCommunicator(
        application, "/ws/operations/", headers=headers
    )
    assert (await communicator.connect())[0]

    operation = await database_sync_to_async(services.create_collection)(
        as_owner, name="rivers", source=str(folder)
    )
    messages = await receive_until_completed(
        communicator, str(operation.id), timeout=90
    )

    kinds = [m["event"] for m in messages]
    assert kinds[0] == "requested" and "started" in kinds and kinds[-1] == "completed"
    assert messages[-1]["operation"]["progress"]["percent"] == 100
    assert messages[-1]["operation"]["counts"]["indexed"] == 5
    await communicator.disconnect()


UNREACHABLE_REDIS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},
    }
}


@TRANSACTIONS
def test_a_failed_publish_never_fails_the_writer_and_is_logged_once(
    owner, monkeypatch, caplog
):
    monkeypatch.setattr(lifecycle, "enqueue", lambda operation_id: None)
    monkeypatch.setattr(relay._Publisher, "_current", None)
    caplog.set_level(logging.INFO, logger="operations.relay")

    with override_settings(CHANNEL_LAYERS=UNREACHABLE_REDIS):
        operation = request_operation(owner, "offline")
        running = lifecycle.claim(operation.id)
        lifecycle.Progress(running).update(force=True, total=3, done=1)
        assert lifecycle.finish(running, Operation.Status.COMPLETED)

    assert Operation.objects.get(id=operation.id).status == "completed"
    warnings = [
        r
        for r in caplog.records
        if r.name == "operations.relay" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "Could not publish operation event" in warnings[0].getMessage()


class TestEventCursor:
    """How a reader tracks the global event sequence (no database needed)."""

    def test_an_id_is_handed_on_once(self):
        cursor = relay.EventCursor(10)

        assert cursor.accept(11)
        assert not cursor.accept(11)
        assert not cursor.is_new(9)

    def test_an_id_that_commits_late_below_the_cursor_is_still_handed_on(self):
        cursor = relay.EventCursor(10)

        assert cursor.accept(13)

        assert cursor.is_new(11) and cursor.is_new(12)
        assert cursor.accept(12)
        assert not cursor.accept(12)

    def test_a_skipped_id_is_given_up_after_its_grace(self, monkeypatch):
        cursor = relay.EventCursor(10)
        cursor.accept(12)

        monkeypatch.setattr(relay, "HOLE_GRACE_SECONDS", -1)
        cursor.accept(14)
        cursor.pending()

        assert cursor.is_new(11)
        assert not cursor.is_new(13)

    def test_it_remembers_a_bounded_number_of_skipped_ids(self):
        cursor = relay.EventCursor(0)

        cursor.advance_to(50_000)

        assert len(cursor.holes) == relay.MAX_HOLES
        assert cursor.is_new(50_000 - relay.MAX_HOLES + 1)
        assert not cursor.is_new(1)
