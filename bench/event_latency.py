"""How fast operation events reach a browser, and how fast a worker picks up work.

Run by hand from the project root (not part of the tests):

    .venv/bin/python bench/event_latency.py [--events 250] [--redis-url URL]

1. Make a temporary data directory with its own SQLite file and migrate it.
2. For each relay — embedded (each daphne polls the database) and Redis
   (channels-redis, the writer publishes on commit) — start a real daphne,
   connect a WebSocket client as a signed-in user, and let another process
   write progress events. Latency: arrival at the client minus the moment the
   write began. Targets: embedded p95 <= 500 ms, Redis p95 <= 50 ms.
3. Start a real qcluster on the ORM broker, request operations one at a time
   and read created -> started from the database (pickup latency).
All in one run; the Redis row is skipped with a note when Redis is down.
"""

import argparse
import asyncio
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_P95_MS = {"embedded": 500.0, "redis": 50.0}
USERNAME = "bench"

# Runs in its own process: claims the operation, then writes progress events
# at a steady pace and prints when each write began.
WRITER = """
import json, sys, time
import django

django.setup()
from operations import lifecycle

operation_id, count, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
operation = lifecycle.claim(operation_id)
progress = lifecycle.Progress(operation)
for done in range(1, count + 1):
    began = time.time()
    progress.update(force=True, step="embedding", total=count, done=done)
    print(json.dumps([done, began]), flush=True)
    time.sleep(interval)
lifecycle.finish(operation, "completed")
"""


def base_env(data_dir: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("REDIS_URL", "DATABASE_URL")
    }
    env.update(
        SECRET_KEY="bench-only-secret-key",
        DATA_DIR=str(data_dir),
        DOCUMENT_ROOTS=str(data_dir),
        QUARRY_ENV_FILE=str(data_dir / "no.env"),
        DJANGO_SETTINGS_MODULE="webui.settings",
        PROGRESS_INTERVAL_SECONDS="0",
        QUEUE_SYNC="false",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"daphne exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"daphne did not answer on port {port} within {timeout} s")


def redis_is_up(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


class Database:
    """The bench's own view of the temporary database (embedded settings)."""

    def __init__(self, env: dict[str, str]):
        for name in ("REDIS_URL", "DATABASE_URL"):
            os.environ.pop(name, None)
        os.environ.update(env)
        import django

        django.setup()

    def session_cookie(self) -> str:
        from django.contrib.auth import get_user_model
        from django.test import Client

        user, _ = get_user_model().objects.get_or_create(username=USERNAME)
        client = Client()
        client.force_login(user)
        return client.cookies["sessionid"].value

    def pending_operation(self, name: str) -> str:
        """A pending operation that no worker will see."""
        from django.contrib.auth import get_user_model

        from collections_app.models import Collection
        from operations.models import Operation

        user = get_user_model().objects.get(username=USERNAME)
        collection = Collection.objects.create(owner=user, name=name)
        operation = Operation.objects.create(
            collection=collection,
            collection_name=name,
            owner=user,
            type=Operation.Type.INDEX,
            requested_by=user,
        )
        return str(operation.id)

    def newest_event_id(self) -> int:
        from operations.relay import newest_event_id

        return newest_event_id()


class Socket:
    """A minimal WebSocket client (text frames only) on asyncio streams.

    Django's setup already bound autobahn's helper library to Twisted, so its
    asyncio client cannot be used in this process; the protocol is small.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, path: str, headers: dict[str, str]) -> "Socket":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        status = await reader.readline()
        if b" 101 " not in status:
            raise ConnectionError(f"handshake refused: {status!r}")
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        return cls(reader, writer)

    async def send_json(self, value: dict) -> None:
        payload = json.dumps(value).encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        else:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self.writer.write(header + mask + masked)
        await self.writer.drain()

    async def receive_json(self) -> dict | None:
        """The next text message; None once the server closes."""
        while True:
            first, second = await self.reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(length)
            opcode = first & 0x0F
            if opcode == 0x8:
                return None
            if opcode == 0x1:
                return json.loads(payload)

    def close(self) -> None:
        self.writer.close()


async def listen(
    socket_: Socket, operation_id: str, arrivals: dict[int, float]
) -> None:
    """Note when each progress event of the operation arrives, until it completes."""
    while (message := await socket_.receive_json()) is not None:
        now = time.time()
        operation = message.get("operation") or {}
        if operation.get("id") != operation_id:
            continue
        if message["event"] == "progress":
            arrivals.setdefault(operation["progress"]["done"], now)
        if message["event"] == "completed":
            return


async def stream(
    port: int,
    cookie: str,
    last: int,
    operation_id: str,
    env: dict,
    events: int,
    interval: float,
) -> tuple[dict[int, float], dict[int, float]]:
    """Run the writer while the client listens: when each write began and arrived."""
    headers = {"Cookie": f"sessionid={cookie}", "Origin": f"http://127.0.0.1:{port}"}
    client = await Socket.open(port, "/ws/operations/", headers)
    await client.send_json({"type": "resume", "last": last})
    arrivals: dict[int, float] = {}
    listening = asyncio.ensure_future(listen(client, operation_id, arrivals))
    await asyncio.sleep(0.5)  # the resume is answered before the first write
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRITER,
        operation_id,
        str(events),
        str(interval),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    began: dict[int, float] = {}
    async for line in writer.stdout:
        done, at = json.loads(line)
        began[done] = at
    await writer.wait()
    await asyncio.wait_for(listening, 30)
    client.close()
    return began, arrivals


def measure_relay(
    database: Database, env: dict[str, str], events: int, interval: float, label: str
) -> list[float]:
    port = free_port()
    log = open(Path(env["DATA_DIR"]) / f"daphne-{label}.log", "w")
    daphne = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "daphne"),
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "webui.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, daphne)
        operation_id = database.pending_operation(f"latency-{label}")
        began, arrivals = asyncio.run(
            stream(
                port,
                database.session_cookie(),
                database.newest_event_id(),
                operation_id,
                env,
                events,
                interval,
            )
        )
    finally:
        daphne.terminate()
        daphne.wait(timeout=10)
        log.close()
    missing = set(began) - set(arrivals)
    if missing:
        print(f"  {label}: {len(missing)} of {events} progress events never arrived")
    return [1000 * (arrivals[done] - began[done]) for done in began if done in arrivals]


def measure_pickup(env: dict[str, str], count: int) -> list[float]:
    """created -> started of operations requested one at a time to a real qcluster."""
    from django.contrib.auth import get_user_model
    from django_q.conf import Conf

    from collections_app.services import Request, create_collection
    from operations.models import Operation

    Conf.SYNC = False
    folder = Path(env["DATA_DIR"]) / "empty-folder"
    folder.mkdir(exist_ok=True)
    user = get_user_model().objects.get(username=USERNAME)
    log = open(Path(env["DATA_DIR"]) / "qcluster.log", "w")
    cluster = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    latencies = []
    try:
        time.sleep(3)  # let the cluster start its workers
        for number in range(count):
            operation = create_collection(
                Request(user=user), name=f"pickup-{number}", source=str(folder)
            )
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                operation.refresh_from_db()
                if operation.status not in Operation.ACTIVE:
                    break
                time.sleep(0.05)
            else:
                raise SystemExit(f"operation {operation.id} did not finish")
            latencies.append(
                1000 * (operation.started_at - operation.created_at).total_seconds()
            )
    finally:
        cluster.terminate()
        try:
            cluster.wait(timeout=30)
        except subprocess.TimeoutExpired:
            cluster.kill()
        log.close()
    return latencies


def row(name: str, values: list[float], target: float | None) -> str:
    if not values:
        return f"{name:<34} {'-':>6} {'-':>9} {'-':>9} {'-':>9}  not measured"
    p50, p95 = percentile(values, 0.5), percentile(values, 0.95)
    ratio = f"{p95 / target:.2f} of {target:.0f} ms" if target else ""
    numbers = f"{len(values):>6} {p50:>9.1f} {p95:>9.1f} {max(values):>9.1f}"
    return f"{name:<34} {numbers}  {ratio}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=250)
    parser.add_argument(
        "--interval", type=float, default=0.02, help="seconds between writes"
    )
    parser.add_argument("--pickups", type=int, default=20)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="quarry-bench-"))
    env = base_env(data_dir)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    database = Database(env)
    database.session_cookie()

    results: dict[str, list[float]] = {}
    print(f"Data in {data_dir}; {args.events} progress events per relay")
    results["embedded"] = measure_relay(
        database, env, args.events, args.interval, "embedded"
    )
    if redis_is_up(args.redis_url):
        redis_env = dict(env, REDIS_URL=args.redis_url)
        results["redis"] = measure_relay(
            database, redis_env, args.events, args.interval, "redis"
        )
    else:
        print(f"  Redis at {args.redis_url} is not answering; its row is skipped")
        results["redis"] = []
    results["pickup"] = measure_pickup(env, args.pickups)

    print()
    print(
        f"{'latency (ms)':<34} {'n':>6} {'p50':>9} {'p95':>9} {'max':>9}  p95 / target"
    )
    print(
        row(
            "write -> socket, embedded relay",
            results["embedded"],
            TARGET_P95_MS["embedded"],
        )
    )
    print(row("write -> socket, Redis layer", results["redis"], TARGET_P95_MS["redis"]))
    print(row("created -> processing, ORM broker", results["pickup"], None))
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"\n{os.cpu_count()} CPUs, load average {load}: latencies grow with load.")
    if args.keep:
        print(f"Logs and database kept in {data_dir}")
    else:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
