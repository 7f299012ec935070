"""Events written by other processes reach the sockets of this one.

In the embedded default this is the web process's poller reading the database;
with REDIS_URL set it is the writer publishing through channels-redis.
"""

import asyncio
import sys

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction
from django.test import Client

from collections_app import services
from collections_app.models import Collection
from operations import lifecycle
from operations.models import Operation
from tests.conftest import BASE_DIR, child_env, write_files
from webui.asgi import application

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
]

WRITER = """
import sys
import django

django.setup()
from operations import lifecycle

operation = lifecycle.claim(sys.argv[1])
progress = lifecycle.Progress(operation)
for done in range(1, 21):
    progress.update(force=True, step="embedding", total=20, done=done)
lifecycle.finish(operation, "completed")
"""


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


async def test_events_written_by_another_process_reach_a_connected_socket(
    owner, monkeypatch
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


async def test_an_operation_run_by_a_real_worker_is_watched_to_its_end(
    owner, as_owner, worker, tmp_path
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
