"""Carry committed operation events from whoever writes them to WebSocket clients.

Every `OperationEvent` is written through `lifecycle.add_event`, which calls
`on_event_created`. How the event then reaches the web processes depends on the
channel layer the settings chose:

* Embedded default (no REDIS_URL, `InMemoryChannelLayer`). An in-memory layer
  never crosses processes, so a worker's `group_send` could not reach daphne.
  Here it does not have to: the database carries events between processes.
  Each web process runs one `Poller` that reads new rows (one query per tick)
  and hands them to its own consumers through the in-memory layer. That is why
  the in-memory layer is correct in this mode and nothing warns about it.
  `on_event_created` does nothing in this mode.
* Scale-out (channels-redis). The writer publishes each event once its
  transaction commits, so web processes get it without polling.

Both paths send every event to one group (`group_name()`), with the owner of
the operation in the message; each consumer drops what its user may not see. A
layer may still drop messages (a full channel drops silently), so consumers
notice jumps in event ids and re-read from the database (`read_events`).
"""

import asyncio
import hashlib
import logging
import os
import threading
import time

from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import connection, transaction
from django.db.models import Max, Q, QuerySet

from operations.models import OperationEvent

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.2
POLL_BATCH = 500
PUBLISH_TIMEOUT_SECONDS = 2.0
# How long an id skipped in the sequence may still turn up. SQLite commits
# events in id order; PostgreSQL may commit a lower id after a higher one.
HOLE_GRACE_SECONDS = 10.0
MAX_HOLES = 1000


def group_name() -> str:
    """The group of every process on this database, and of no other deployment.

    Two Quarry installations (or two test runs) sharing one Redis would
    otherwise receive each other's events, and user ids repeat across
    databases. Web and worker processes must therefore name the database the
    same way, which they do when they read the same `.env`.
    """
    database = connection.settings_dict
    identity = "|".join(
        str(database.get(key) or "") for key in ("ENGINE", "HOST", "PORT", "NAME")
    )
    return "operations." + hashlib.sha256(identity.encode()).hexdigest()[:16]


def client_message(event_id: int, kind: str, payload: dict) -> dict:
    """The JSON a browser receives for one event."""
    message = {"event": kind, "seq": event_id, "operation": payload.get("operation")}
    if payload.get("error"):
        message["error"] = payload["error"]
    return message


def layer_message(
    event_id: int, kind: str, payload: dict, owner_id: int | None
) -> dict:
    """One event as sent through the channel layer to `OperationsConsumer`."""
    return {
        "type": "operation.event",
        "id": event_id,
        "owner_id": owner_id,
        "message": client_message(event_id, kind, payload),
    }


class EventCursor:
    """How far a reader got in the global event sequence.

    `last` is the highest id handed on. `holes` are lower ids that were
    skipped and may still commit (PostgreSQL); they are read again until they
    turn up or their grace runs out.
    """

    def __init__(self, last: int):
        self.last = last
        self.holes: dict[int, float] = {}

    def is_new(self, event_id: int) -> bool:
        return event_id > self.last or event_id in self.holes

    def accept(self, event_id: int) -> bool:
        """Mark an id as handed on; False when it already was."""
        if event_id > self.last:
            self._skip_to(event_id - 1)
            self.last = event_id
            return True
        return self.holes.pop(event_id, None) is not None

    def advance_to(self, event_id: int) -> None:
        """Everything up to `event_id` is accounted for (sent, invisible or pending)."""
        if event_id > self.last:
            self._skip_to(event_id)
            self.last = event_id

    def pending(self) -> Q:
        self._expire()
        condition = Q(id__gt=self.last)
        if self.holes:
            condition |= Q(id__in=sorted(self.holes))
        return condition

    def _skip_to(self, event_id: int) -> None:
        deadline = time.monotonic() + HOLE_GRACE_SECONDS
        for missing in range(
            max(self.last + 1, event_id - MAX_HOLES + 1), event_id + 1
        ):
            self.holes[missing] = deadline
        if len(self.holes) > MAX_HOLES:
            for old in sorted(self.holes)[: len(self.holes) - MAX_HOLES]:
                del self.holes[old]

    def _expire(self) -> None:
        now = time.monotonic()
        for event_id in [i for i, deadline in self.holes.items() if deadline < now]:
            del self.holes[event_id]


def newest_event_id() -> int:
    return OperationEvent.objects.aggregate(m=Max("id"))["m"] or 0


def read_events(
    cursor: EventCursor,
    limit: int,
    *,
    operations: QuerySet | None = None,
    upto: int | None = None,
) -> list[dict]:
    """Committed events the cursor has not handed on, oldest first, as messages."""
    events = OperationEvent.objects.filter(cursor.pending())
    if operations is not None:
        events = events.filter(operation__in=operations)
    if upto is not None:
        events = events.filter(id__lte=upto)
    rows = events.order_by("id").values_list(
        "id", "kind", "payload", "operation__owner_id"
    )
    return [layer_message(*row) for row in rows[:limit]]


def publishes_on_commit() -> bool:
    """True when the channel layer reaches other processes (channels-redis)."""
    layer = get_channel_layer()
    return layer is not None and not isinstance(layer, InMemoryChannelLayer)


def on_event_created(event: OperationEvent) -> None:
    """Called for every new event inside the writer's transaction."""
    if not publishes_on_commit():
        return
    message = layer_message(
        event.id, event.kind, event.payload, event.operation.owner_id
    )
    transaction.on_commit(lambda: _publish(message))


class _Publisher:
    """An event loop thread that keeps the channel layer's connection open.

    Each publish from a fresh loop (`async_to_sync` in a worker) would open and
    close a Redis connection: about 14 ms per event. Keyed by process id,
    because the queue's workers are forked and a thread does not survive fork.
    """

    _lock = threading.Lock()
    _current: "_Publisher | None" = None

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.failures = 0
        thread = threading.Thread(
            target=self.loop.run_forever, name="operation-event-publisher", daemon=True
        )
        thread.start()

    @classmethod
    def for_this_process(cls) -> "_Publisher":
        with cls._lock:
            if cls._current is None or cls._current.pid != os.getpid():
                cls._current = cls()
            return cls._current

    def send(self, group: str, message: dict) -> None:
        future = asyncio.run_coroutine_threadsafe(
            get_channel_layer().group_send(group, message), self.loop
        )
        try:
            future.result(timeout=PUBLISH_TIMEOUT_SECONDS)
        except BaseException:
            future.cancel()
            raise


def _publish(message: dict) -> None:
    """Send one event to the web processes; a failure never reaches the writer.

    Consumers re-read from the database when they notice the missing id, and
    browsers replay on reconnect, so a lost publish delays an event but never
    loses it.
    """
    publisher = _Publisher.for_this_process()
    try:
        publisher.send(group_name(), message)
    except Exception as exc:  # noqa: BLE001 - bookkeeping must not break the operation
        if publisher.failures == 0:
            logger.warning(
                "Could not publish operation event %s to the channel layer (%s: %s); "
                "browsers will catch up from the database. Check that Redis is "
                "reachable.",
                message["id"],
                type(exc).__name__,
                exc,
            )
        publisher.failures += 1
        return
    if publisher.failures:
        logger.info(
            "Publishing operation events works again after %d failed attempts",
            publisher.failures,
        )
        publisher.failures = 0


class Poller:
    """The embedded relay: one loop per web process while sockets are open.

    Started by the first consumer that connects (never at import), it stops
    when the last one leaves; the next consumer starts it again from its own
    starting point, and browsers cover the pause with their resume.
    """

    def __init__(self) -> None:
        self.subscribers = 0
        self._task: asyncio.Task | None = None
        self._failures = 0

    def subscribe(self, since: int) -> None:
        """A consumer joined; a new loop starts after `since`, its newest id.

        A loop already running reads from further back, so nothing after
        `since` is skipped either way.
        """
        self.subscribers += 1
        if publishes_on_commit():
            return
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(
                self._run(since), name="operation-event-poller"
            )

    def unsubscribe(self) -> None:
        self.subscribers = max(0, self.subscribers - 1)

    async def _run(self, since: int) -> None:
        cursor = EventCursor(since)
        layer = get_channel_layer()
        group = group_name()
        while self.subscribers > 0:
            try:
                messages = await database_sync_to_async(read_events)(cursor, POLL_BATCH)
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a bad tick
                self._note_failure(exc)
                await asyncio.sleep(min(5.0, POLL_SECONDS * 2**self._failures))
                continue
            self._note_success()
            for message in messages:
                cursor.accept(message["id"])
                await layer.group_send(group, message)
            if len(messages) < POLL_BATCH:
                await asyncio.sleep(POLL_SECONDS)

    def _note_failure(self, exc: Exception) -> None:
        if self._failures == 0:
            logger.warning(
                "Could not read new operation events (%s: %s); live pages pause "
                "until the database answers again",
                type(exc).__name__,
                exc,
            )
        self._failures = min(self._failures + 1, 10)

    def _note_success(self) -> None:
        if self._failures:
            logger.info("Reading operation events works again")
            self._failures = 0


poller = Poller()
