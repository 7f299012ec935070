"""The `/ws/operations/` socket: who may connect, what each sees, replay, bursts."""

import asyncio
import logging
import time

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.db import connection, connections, transaction
from django.test import Client, override_settings

from collections_app.models import Collection
from operations import lifecycle, relay
from operations.models import Operation, OperationEvent
from operations.routing import websocket_application
from webui.asgi import application

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

ORIGIN = (b"origin", b"http://127.0.0.1")


def stop_publisher() -> None:
    """End this process's publisher thread, if any, and close its event loop.

    Closing the loop also closes the Redis connections each channel layer
    opened on it (channels-redis hooks `loop.close`).
    """
    with relay._Publisher._lock:
        publisher, relay._Publisher._current = relay._Publisher._current, None
    if publisher is None or publisher.loop.is_closed():
        return
    publisher.loop.call_soon_threadsafe(publisher.loop.stop)
    deadline = time.monotonic() + 5
    while publisher.loop.is_running():
        if time.monotonic() > deadline:
            return  # a daemon thread; leave it rather than hang the run
        time.sleep(0.01)
    publisher.loop.close()


@pytest.fixture(autouse=True)
def fresh_live_state(monkeypatch):
    """Each test gets its own channel layer, publisher thread and poller.

    pytest-asyncio gives every test a new event loop, but `get_channel_layer()`
    caches one layer per process, and channels-redis keeps asyncio locks in it
    that bind to the loop that first waits on them. Its per-channel receive
    lock is never dropped when a receive is cancelled while waiting on it (a
    socket closing mid-stream), so a later test that contends for it fails
    with "Lock ... is bound to a different event loop". The publisher thread
    goes with the layer, so the connections it opened for it are closed, and
    the poller, whose task belongs to one test's loop. Redis is not flushed:
    that would delete other test runs' keys on a shared server.
    """
    channel_layers.backends = {}
    stop_publisher()
    monkeypatch.setattr(relay, "poller", relay.Poller())
    yield
    channel_layers.backends = {}
    stop_publisher()


@pytest_asyncio.fixture(autouse=True)
async def close_thread_connections():
    """Close the connections of the thread that served the consumers.

    On PostgreSQL they outlive the test (CONN_MAX_AGE) and keep the test
    database from being dropped.
    """
    yield
    await database_sync_to_async(connections.close_all)()


def session_headers(user, origin: tuple[bytes, bytes] | None = ORIGIN) -> list:
    client = Client()
    client.force_login(user)
    headers = [(b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())]
    return headers + [origin] if origin else headers


@pytest.fixture
def no_queue(monkeypatch):
    """Operations stay where the test puts them: nothing is handed to a worker."""
    monkeypatch.setattr(lifecycle, "enqueue", lambda operation_id: None)


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        "stella", password="pw-stella-123", is_staff=True
    )


@pytest.fixture
def owner_headers(owner):
    return session_headers(owner)


def request_operation(user, name: str) -> Operation:
    collection = Collection.objects.create(owner=user, name=name)
    with transaction.atomic():
        return lifecycle.create_pending(
            collection=collection, type=Operation.Type.INDEX, requested_by=user
        )


def start(operation: Operation) -> Operation:
    return lifecycle.claim(operation.id)


def progress(operation: Operation, count: int, total: int | None = None) -> None:
    tracker = lifecycle.Progress(operation)
    total = total or count
    for done in range(1, count + 1):
        tracker.update(force=True, step="embedding", total=total, done=done)


def complete(operation: Operation) -> None:
    lifecycle.finish(operation, Operation.Status.COMPLETED)


def newest_id() -> int:
    return relay.newest_event_id()


def visible_ids_after(user, last: int) -> list[int]:
    return list(
        OperationEvent.objects.filter(
            id__gt=last, operation__in=Operation.objects.visible_to(user)
        ).values_list("id", flat=True)
    )


async def in_own_thread(function) -> None:
    """Run a writer in a thread of its own, concurrently with the consumer."""

    def run() -> None:
        try:
            function()
        finally:
            connection.close()

    await sync_to_async(run, thread_sensitive=False)()


async def connect(headers: list, app=application) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(app, "/ws/operations/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def receive_until(communicator, predicate, timeout: float = 15) -> list[dict]:
    """Messages up to and including the first one the predicate accepts."""
    messages = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        assert remaining > 0, f"no matching message; got {messages[-3:]}"
        message = await communicator.receive_json_from(timeout=remaining)
        messages.append(message)
        if predicate(message):
            return messages


def ended(operation: Operation):
    return lambda m: (
        m.get("event") == "completed" and m["operation"]["id"] == str(operation.id)
    )


def assert_strictly_increasing(messages: list[dict]) -> None:
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(set(seqs)), "an event was repeated or out of order"


async def test_it_refuses_a_socket_without_a_session(caplog):
    caplog.set_level(logging.INFO, logger="operations")
    communicator = WebsocketCommunicator(
        application, "/ws/operations/", headers=[ORIGIN]
    )

    connected, _ = await communicator.connect()
    closed = await communicator.receive_output()

    assert closed == {"type": "websocket.close", "code": 4401}
    assert [r.message for r in caplog.records if "no session" in r.message] != []
    await communicator.disconnect()


async def test_it_refuses_and_logs_a_foreign_origin(owner, caplog):
    caplog.set_level(logging.INFO, logger="operations")
    headers = await sync_to_async(session_headers)(
        owner, (b"origin", b"https://evil.example")
    )
    communicator = WebsocketCommunicator(
        application, "/ws/operations/", headers=headers
    )

    connected, _ = await communicator.connect()

    assert not connected
    refusals = [r for r in caplog.records if "https://evil.example" in r.getMessage()]
    assert len(refusals) == 1
    assert "not in ALLOWED_HOSTS" in refusals[0].getMessage()
    await communicator.disconnect()


async def test_it_refuses_and_logs_a_missing_origin(owner, caplog):
    caplog.set_level(logging.INFO, logger="operations")
    headers = await sync_to_async(session_headers)(owner, None)
    communicator = WebsocketCommunicator(
        application, "/ws/operations/", headers=headers
    )

    connected, _ = await communicator.connect()

    assert not connected
    assert len([r for r in caplog.records if "no Origin header" in r.getMessage()]) == 1
    await communicator.disconnect()


async def test_it_refuses_and_logs_a_socket_to_an_unknown_path(owner, caplog):
    caplog.set_level(logging.INFO, logger="operations")
    headers = await sync_to_async(session_headers)(owner)
    communicator = WebsocketCommunicator(application, "/ws/nothing/", headers=headers)

    connected, _ = await communicator.connect()

    assert not connected
    assert [r for r in caplog.records if "no socket at /ws/nothing/" in r.getMessage()]
    await communicator.disconnect()


async def test_it_accepts_the_sites_own_origin_behind_a_proxy_port(owner):
    headers = await sync_to_async(session_headers)(
        owner, (b"origin", b"https://docs.example.test:8443")
    )
    with override_settings(ALLOWED_HOSTS=["docs.example.test"]):
        app = websocket_application()

    communicator = await connect(headers, app)
    await communicator.send_json_to({"type": "ping"})

    assert await communicator.receive_json_from() == {"event": "pong"}
    await communicator.disconnect()


async def test_a_user_receives_events_of_their_operations_only(
    owner, teammate, no_queue
):
    headers = await sync_to_async(session_headers)(owner)
    communicator = await connect(headers)
    theirs = await database_sync_to_async(request_operation)(teammate, "theirs")
    mine = await database_sync_to_async(request_operation)(owner, "mine")
    await database_sync_to_async(start)(theirs)
    await database_sync_to_async(complete)(theirs)
    await database_sync_to_async(complete)(mine)

    messages = await receive_until(communicator, ended(mine))

    assert {m["operation"]["id"] for m in messages} == {str(mine.id)}
    assert [m["event"] for m in messages] == ["requested", "completed"]
    assert messages[-1]["operation"]["collection"] == "mine"
    await communicator.disconnect()


async def test_staff_receive_events_of_every_operation(
    staff, owner, teammate, no_queue
):
    headers = await sync_to_async(session_headers)(staff)
    communicator = await connect(headers)
    await database_sync_to_async(request_operation)(owner, "first")
    second = await database_sync_to_async(request_operation)(teammate, "second")
    await database_sync_to_async(complete)(second)

    messages = await receive_until(communicator, ended(second))

    assert [(m["event"], m["operation"]["collection"]) for m in messages] == [
        ("requested", "first"),
        ("requested", "second"),
        ("completed", "second"),
    ]
    await communicator.disconnect()


async def test_resume_replays_what_was_missed_in_order(owner, owner_headers, no_queue):
    operation = await database_sync_to_async(request_operation)(owner, "docs")
    seen = await database_sync_to_async(newest_id)()
    running = await database_sync_to_async(start)(operation)
    await database_sync_to_async(progress)(running, 5)

    communicator = await connect(owner_headers)
    await communicator.send_json_to({"type": "resume", "last": seen})
    replayed = await receive_until(
        communicator, lambda m: m["operation"]["progress"]["done"] == 5
    )
    await database_sync_to_async(complete)(operation)
    live = await receive_until(communicator, ended(operation))

    assert [m["event"] for m in replayed] == ["started"] + ["progress"] * 5
    assert [m["operation"]["progress"]["done"] for m in replayed[1:]] == [1, 2, 3, 4, 5]
    assert [m["event"] for m in live] == ["completed"]
    assert replayed[0]["seq"] > seen
    assert_strictly_increasing(replayed + live)
    await communicator.disconnect()


async def test_resume_with_nothing_missed_sends_nothing(owner, owner_headers, no_queue):
    await database_sync_to_async(request_operation)(owner, "docs")
    seen = await database_sync_to_async(newest_id)()

    communicator = await connect(owner_headers)
    await communicator.send_json_to({"type": "resume", "last": seen})

    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()


async def test_no_event_is_sent_twice_across_the_replay_and_live_boundary(
    owner, owner_headers, no_queue
):
    operation = await database_sync_to_async(request_operation)(owner, "docs")
    running = await database_sync_to_async(start)(operation)
    seen = await database_sync_to_async(newest_id)()
    await database_sync_to_async(progress)(running, 40, total=120)

    communicator = await connect(owner_headers)
    tracker = lifecycle.Progress(running)

    def write_more() -> None:
        for done in range(41, 121):
            tracker.update(force=True, step="embedding", total=120, done=done)
        complete(running)

    # The writer runs in its own thread while the replay is read and sent.
    writer = asyncio.ensure_future(in_own_thread(write_more))
    await communicator.send_json_to({"type": "resume", "last": seen})
    messages = await receive_until(communicator, ended(operation), timeout=30)
    await writer

    assert_strictly_increasing(messages)
    expected = await database_sync_to_async(visible_ids_after)(owner, seen)
    assert [m["seq"] for m in messages] == expected
    await communicator.disconnect()


async def test_after_a_burst_of_500_progress_events_the_client_ends_completed(
    owner, owner_headers, no_queue
):
    operation = await database_sync_to_async(request_operation)(owner, "burst")
    communicator = await connect(owner_headers)
    seen = await database_sync_to_async(newest_id)()
    await communicator.send_json_to({"type": "resume", "last": seen})

    def burst() -> None:
        running = start(operation)
        progress(running, 500)
        complete(running)

    await in_own_thread(burst)
    messages = await receive_until(communicator, ended(operation), timeout=30)

    assert await communicator.receive_nothing(timeout=SETTLE_WAIT)
    assert_strictly_increasing(messages)
    final = messages[-1]["operation"]
    assert final["status"] == "completed"
    assert final["progress"] == {"done": 500, "total": 500, "percent": 100}
    await communicator.disconnect()


SETTLE_WAIT = 2.0
MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
TINY_LAYER = {
    "default": {
        "BACKEND": "channels.layers.InMemoryChannelLayer",
        "CONFIG": {"capacity": 5},
    }
}


@override_settings(CHANNEL_LAYERS=TINY_LAYER)
async def test_events_dropped_by_a_full_channel_are_re_read_from_the_database(
    owner, owner_headers, no_queue, caplog
):
    caplog.set_level(logging.INFO, logger="operations")
    operation = await database_sync_to_async(request_operation)(owner, "burst")
    communicator = await connect(owner_headers)
    seen = await database_sync_to_async(newest_id)()
    await communicator.send_json_to({"type": "resume", "last": seen})

    def burst() -> None:
        running = start(operation)
        progress(running, 500)
        complete(running)

    await in_own_thread(burst)
    messages = await receive_until(communicator, ended(operation), timeout=30)

    assert_strictly_increasing(messages)
    assert [m["seq"] for m in messages] == await database_sync_to_async(
        visible_ids_after
    )(owner, seen)
    assert messages[-1]["operation"]["progress"]["percent"] == 100
    recoveries = [r for r in caplog.records if "re-read" in r.getMessage()]
    assert 1 <= len(recoveries) < len(messages) // 10, "drops are logged as counts"
    await communicator.disconnect()


@override_settings(CHANNEL_LAYERS=MEMORY_LAYER)
async def test_a_final_event_lost_by_the_layer_still_arrives(
    owner, owner_headers, no_queue, monkeypatch
):
    layer = relay.get_channel_layer()
    deliver = layer.group_send

    async def lose_final_events(group: str, message: dict) -> None:
        if message["message"]["event"] != "completed":
            await deliver(group, message)

    # The last event of a burst is lost and no later event reveals the gap.
    monkeypatch.setattr(layer, "group_send", lose_final_events)
    operation = await database_sync_to_async(request_operation)(owner, "tail")
    communicator = await connect(owner_headers)
    running = await database_sync_to_async(start)(operation)
    await receive_until(communicator, lambda m: m["event"] == "started")
    await database_sync_to_async(complete)(running)

    messages = await receive_until(communicator, ended(operation), timeout=10)

    assert messages[-1]["operation"]["status"] == "completed"
    await communicator.disconnect()


UNREACHABLE_REDIS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},
    }
}


@override_settings(CHANNEL_LAYERS=UNREACHABLE_REDIS)
async def test_an_unreachable_channel_layer_closes_sockets_with_one_warning(
    owner_headers, monkeypatch, caplog
):
    from operations import consumers

    monkeypatch.setattr(consumers, "layer_outage", consumers.LayerOutage())
    caplog.set_level(logging.INFO)

    for _ in range(3):
        communicator = WebsocketCommunicator(
            application, "/ws/operations/", headers=owner_headers
        )
        connected, code = await communicator.connect(timeout=5)
        assert (connected, code) == (False, 1011)

    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in warnings] == ["operations.consumers"]
    assert "channel layer cannot be reached" in warnings[0].getMessage()


async def test_it_answers_ping_and_ignores_malformed_frames(owner_headers):
    communicator = await connect(owner_headers)

    await communicator.send_to(text_data="{not json")
    await communicator.send_to(text_data='"a string"')
    await communicator.send_json_to({"type": "ping"})

    assert await communicator.receive_json_from() == {"event": "pong"}
    await communicator.disconnect()


@override_settings(CHANNEL_LAYERS=MEMORY_LAYER)
async def test_a_ping_renews_the_sockets_group_membership(owner_headers):
    communicator = await connect(owner_headers)
    members = relay.get_channel_layer().groups[relay.group_name()]
    for channel in members:
        members[channel] = 0.0  # joined so long ago that the layer would expire it

    await communicator.send_json_to({"type": "ping"})
    await communicator.receive_json_from()

    assert all(joined > 0 for joined in members.values())
    await communicator.disconnect()


async def test_resume_after_too_many_missed_events_sends_a_snapshot(
    owner, owner_headers, no_queue, monkeypatch
):
    from operations import consumers

    monkeypatch.setattr(consumers, "REPLAY_LIMIT", 10)
    operation = await database_sync_to_async(request_operation)(owner, "big")
    seen = await database_sync_to_async(newest_id)()
    running = await database_sync_to_async(start)(operation)
    await database_sync_to_async(progress)(running, 20)

    communicator = await connect(owner_headers)
    await communicator.send_json_to({"type": "resume", "last": seen})
    snapshot = await communicator.receive_json_from()

    assert snapshot["event"] == "snapshot"
    assert snapshot["operation"]["id"] == str(operation.id)
    assert snapshot["operation"]["progress"]["done"] == 20
    assert snapshot["seq"] == await database_sync_to_async(newest_id)()
    await communicator.disconnect()
