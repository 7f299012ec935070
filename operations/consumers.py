"""The `/ws/operations/` socket: live events of the operations a user may see.

Client to server (JSON text frames):
    {"type": "resume", "last": <event id>}  send what I missed since that id
    {"type": "ping"}                        answered by {"event": "pong"}

Server to client:
    {"event": <kind>, "seq": <event id>, "operation": {...}, "error": "..."?}
    {"event": "snapshot", "seq": <event id>, "operation": {...}} when too much
    was missed to replay, one per active or recent operation.

Each connection sends an event at most once and in id order. Every event goes
through one group, so ids arrive without jumps unless the channel layer drops
some (a full channel drops silently); the consumer then re-reads from the
database. It also checks the database once the stream goes quiet, because a
drop at the very end of a burst (the "completed" event) shows no jump.
"""

import asyncio
import json
import logging
from datetime import timedelta

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Q
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from operations import metrics, relay
from operations.models import Operation
from operations.routing import client_address

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_SERVER_ERROR = 1011
REPLAY_LIMIT = 1000
SNAPSHOT_LIMIT = 200
# Longer than the progress interval (1 s), so a steady stream never triggers
# the quiet check and only the end of a burst does.
SETTLE_SECONDS = 1.5

LAYER_OUTAGES = (OSError, RedisConnectionError, RedisTimeoutError)


class LayerOutage:
    """Logs an unreachable channel layer once, and its return once."""

    def __init__(self) -> None:
        self.refused = 0

    def began(self, exc: Exception) -> None:
        if self.refused == 0:
            logger.warning(
                "Live events unavailable: the channel layer cannot be reached "
                "(%s: %s); browsers keep retrying. Check that Redis is running.",
                type(exc).__name__,
                exc,
            )
        self.refused += 1

    def ended(self) -> None:
        if self.refused:
            logger.info(
                "Live events available again after %d refused sockets", self.refused
            )
            self.refused = 0


layer_outage = LayerOutage()


def read_missed(user, cursor: relay.EventCursor, limit: int) -> tuple[list[dict], int]:
    """Visible events after the cursor, and the newest id they were read against."""
    newest = relay.newest_event_id()
    messages = relay.read_events(
        cursor, limit, operations=Operation.objects.visible_to(user), upto=newest
    )
    return messages, newest


def read_snapshot(user) -> tuple[list[dict], int]:
    """The current state of the user's active and recent operations."""
    newest = relay.newest_event_id()
    since = timezone.now() - timedelta(hours=settings.RECENT_OPERATIONS_HOURS)
    operations = (
        Operation.objects.visible_to(user)
        .filter(
            Q(status__in=Operation.ACTIVE) | Q(finished_at__gte=since, dismissed=False)
        )
        .select_related("requested_by")
        .order_by("-created_at")
    )
    states = [operation.to_dict() for operation in operations[:SNAPSHOT_LIMIT]]
    return states[::-1], newest


def parse_event_id(value) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        event_id = int(value)
    except (TypeError, ValueError):
        return None
    return event_id if event_id >= 0 else None


class OperationsConsumer(AsyncJsonWebsocketConsumer):
    cursor: relay.EventCursor | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            logger.info(
                "Refused live events socket from %s: no session (not signed in, "
                "or the session expired)",
                client_address(self.scope),
            )
            # Accept first: a close before the handshake reaches the browser as
            # a bare 1006, and the page could not tell "sign in" from "offline".
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return

        self.user = user
        self.lock = asyncio.Lock()
        self.has_sent = False
        self.settle_due = 0.0
        self.settle_task: asyncio.Task | None = None
        self.group = relay.group_name()
        await self.channel_layer.group_add(self.group, self.channel_name)
        layer_outage.ended()
        # Read after joining the group, so no event falls between the two.
        self.cursor = relay.EventCursor(
            await database_sync_to_async(relay.newest_event_id)()
        )
        relay.poller.subscribe(since=self.cursor.last)
        metrics.SOCKETS_CONNECTED.inc()
        await self.accept()

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except LAYER_OUTAGES as exc:
            # Without this, every browser retry would log a full traceback.
            layer_outage.began(exc)
            self.forget()
            await send({"type": "websocket.close", "code": CLOSE_SERVER_ERROR})

    async def disconnect(self, code: int) -> None:
        if self.forget():
            await self.channel_layer.group_discard(self.group, self.channel_name)

    def forget(self) -> bool:
        """Release what connect took; False when there was nothing."""
        if self.cursor is None:
            return False
        self.cursor = None
        relay.poller.unsubscribe()
        metrics.SOCKETS_CONNECTED.dec()
        if self.settle_task is not None:
            self.settle_task.cancel()
        return True

    async def receive(self, text_data: str | None = None, bytes_data=None) -> None:
        try:
            content = json.loads(text_data) if text_data else None
        except ValueError:
            content = None
        if not isinstance(content, dict):
            logger.debug(
                "Ignored a malformed frame from %s", client_address(self.scope)
            )
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict, **kwargs) -> None:
        if self.cursor is None:
            return
        kind = content.get("type")
        if kind == "ping":
            # Layers end a group membership after `group_expiry` (a day) even
            # while the socket lives; the page's keep-alive renews it.
            await self.channel_layer.group_add(self.group, self.channel_name)
            await self.send_json({"event": "pong"})
        elif kind == "resume":
            async with self.lock:
                await self.resume(parse_event_id(content.get("last")))

    async def resume(self, last: int | None) -> None:
        """Send what the client missed since `last`; without it, carry on live."""
        if last is None or last == self.cursor.last:
            return
        if self.has_sent or last > self.cursor.last:
            # Replaying older events after newer ones would move rows backwards;
            # the current state is always safe.
            await self.send_snapshot()
            return
        self.cursor = relay.EventCursor(last)
        await self.catch_up()

    async def operation_event(self, message: dict) -> None:
        """One event from the group (the poller or a worker's publish)."""
        async with self.lock:
            await self.take(message)
        self.arm_settle_check()

    async def take(self, message: dict) -> None:
        event_id = message["id"]
        if not self.cursor.is_new(event_id):
            return
        if event_id > self.cursor.last + 1:
            first_missing, last_missing = self.cursor.last + 1, event_id - 1
            recovered = await self.catch_up()
            logger.info(
                "Live events for %s: ids %d-%d did not arrive through the channel "
                "layer (dropped or out of order); re-read %d visible events from "
                "the database",
                self.user.get_username(),
                first_missing,
                last_missing,
                recovered,
            )
            return
        self.cursor.accept(event_id)
        if self.may_see(message["owner_id"]):
            await self.send_event(message["message"])

    def may_see(self, owner_id: int | None) -> bool:
        # The rule of Operation.objects.visible_to, for a message already in hand.
        return self.user.is_staff or (owner_id is not None and owner_id == self.user.pk)

    async def catch_up(self) -> int:
        """Send visible events after the cursor from the database; returns how many."""
        try:
            messages, newest = await database_sync_to_async(read_missed)(
                self.user, self.cursor, REPLAY_LIMIT + 1
            )
        except DatabaseError as exc:
            await self.fail(exc)
            return 0
        if len(messages) > REPLAY_LIMIT:
            logger.info(
                "Live events for %s: more than %d events missed; sending the current "
                "state instead",
                self.user.get_username(),
                REPLAY_LIMIT,
            )
            await self.send_snapshot()
            return 0
        sent = 0
        for message in messages:
            if self.cursor.accept(message["id"]):
                await self.send_event(message["message"])
                sent += 1
        self.cursor.advance_to(newest)
        return sent

    async def send_snapshot(self) -> None:
        try:
            states, newest = await database_sync_to_async(read_snapshot)(self.user)
        except DatabaseError as exc:
            await self.fail(exc)
            return
        for state in states:
            await self.send_event(
                {"event": "snapshot", "seq": newest, "operation": state}
            )
        self.cursor.advance_to(newest)

    async def send_event(self, message: dict) -> None:
        self.has_sent = True
        await self.send_json(message)
        metrics.EVENTS_RELAYED.labels(message.get("event", "")).inc()

    async def fail(self, exc: Exception) -> None:
        logger.warning(
            "Live events for %s: could not read missed events (%s: %s); closing the "
            "socket so the browser reconnects and resumes",
            self.user.get_username(),
            type(exc).__name__,
            exc,
        )
        await self.close(code=CLOSE_SERVER_ERROR)

    def arm_settle_check(self) -> None:
        self.settle_due = asyncio.get_running_loop().time() + SETTLE_SECONDS
        if self.settle_task is None or self.settle_task.done():
            self.settle_task = asyncio.create_task(self.settle_check())

    async def settle_check(self) -> None:
        """Once the stream is quiet, read anything the layer dropped at its end."""
        loop = asyncio.get_running_loop()
        while True:
            delay = self.settle_due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            async with self.lock:
                if self.settle_due > loop.time():
                    continue
                recovered = await self.catch_up()
            if recovered:
                logger.info(
                    "Live events for %s: %d events dropped by the channel layer "
                    "were re-read from the database",
                    self.user.get_username(),
                    recovered,
                )
            return
