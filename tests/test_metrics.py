"""Metrics: one scrape per host, real workers counted, dead ones left out, private."""

import http.client
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connections, transaction
from django.test import Client
from django.utils import timezone
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from collections_app import services
from collections_app.models import Collection
from operations import lifecycle
from operations.models import Operation
from tests.conftest import BASE_DIR, child_env, wait_for, write_files
from webui import metrics as web_metrics
from webui.asgi import application

Samples = dict[tuple[str, tuple], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(**request) -> Samples:
    response = Client().get("/metrics", **request)
    assert response.status_code == 200, response.content
    return parse(response.content.decode())


def multiprocess_dir() -> Path:
    return Path(settings.PROMETHEUS_MULTIPROC_DIR)


def pids_running_an_operation() -> list[int]:
    """Other processes whose live gauge counts a running operation right now."""
    pids = []
    for path in multiprocess_dir().glob("gauge_livesum_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        if pid == os.getpid() or not web_metrics.writer_alive(pid, path):
            continue
        try:
            entries = MmapedDict.read_all_values_from_file(str(path))
        except FileNotFoundError:
            continue
        for key, number, _, _ in entries:
            if json.loads(key)[0] == "quarry_operations_active" and number > 0:
                pids.append(pid)
    return pids


def slow_folder(root: Path) -> Path:
    """One long document: hundreds of chunks keep a worker busy for many seconds."""
    vocabulary = (
        "river stone lantern orchard copper meadow violin harbor glacier pepper "
        "ledger falcon thimble compass walnut saddle marble cobalt tundra quill"
    )
    words = random.Random(6).choices(vocabulary.split(), k=50_000)
    return write_files(root, {"long.txt": " ".join(words)})


def wait_until_ended(operation: Operation, timeout: float = 90) -> Operation:
    def ended():
        operation.refresh_from_db()
        return operation.status in Operation.TERMINAL

    wait_for(ended, timeout=timeout)
    return operation


def free_ports(count: int) -> int:
    """The first of `count` consecutive ports nobody listens on."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000 - count)
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise AssertionError("no free run of ports")


def http_get(
    port: int, path: str, source: str = "127.0.0.1", headers: dict | None = None
) -> tuple[int, str]:
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=20, source_address=(source, 0)
    )
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


class Exporter:
    """A `manage.py metrics_exporter` process and its log."""

    SERVING = re.compile(r"Serving this host's metrics on http://[^:]+:(\d+)/metrics")

    def __init__(self, log_path: Path, env: dict[str, str]):
        self.log_path = log_path
        self.log = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "metrics_exporter", "--host", "127.0.0.1"],
            cwd=BASE_DIR,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def port(self) -> int | None:
        match = self.SERVING.search(self.output())
        return int(match.group(1)) if match else None

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


@pytest.fixture
def exporters(tmp_path):
    started: list[Exporter] = []

    def start(**env: str) -> Exporter:
        exporter = Exporter(tmp_path / f"exporter-{len(started)}.log", child_env(**env))
        started.append(exporter)
        return exporter

    yield start
    for exporter in started:
        exporter.stop()


def assert_clean(log: str) -> None:
    assert " ERROR " not in log and " WARNING " not in log, log
    assert "Traceback" not in log, log


# One scrape per host, counting real worker processes


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_scrape_of_the_web_process_counts_an_operation_a_real_worker_ran(
    worker, as_owner, tmp_path
):
    folder = write_files(
        tmp_path / "shelf",
        {
            "kettles.txt": "Descale the kettle with vinegar and rinse it twice.",
            "bikes.md": "# Bicycles\n\nOil the chain after riding in the rain.",
        },
    )
    before = scrape()

    operation = services.create_collection(as_owner, name="Shelf", source=str(folder))
    wait_until_ended(operation)
    after = scrape()

    assert operation.status == Operation.Status.COMPLETED, worker.output()
    assert f"Operation {operation.id}" in worker.output()
    for name, labels in [
        ("quarry_operations_started_total", {"type": "index"}),
        ("quarry_operations_finished_total", {"type": "index", "outcome": "completed"}),
        ("quarry_operation_duration_seconds_count", {"type": "index"}),
    ]:
        assert value(after, name, **labels) - value(before, name, **labels) == 1, name
    indexed = {"outcome": "indexed", "reason": ""}
    assert (
        value(after, "quarry_documents_total", **indexed)
        - value(before, "quarry_documents_total", **indexed)
        == 2
    )
    assert (
        value(after, "quarry_chunks_embedded_total")
        - value(before, "quarry_chunks_embedded_total")
        >= 2
    )
    assert value(after, "quarry_embedding_seconds_total") > value(
        before, "quarry_embedding_seconds_total"
    )
    assert " ERROR " not in worker.output() and "Traceback" not in worker.output()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_killed_workers_live_gauges_disappear_from_the_next_scrape(
    worker, as_owner, tmp_path
):
    # Other tests may leave operations claimed by this very process.
    base = value(scrape(), "quarry_operations_active", type="index")
    operation = services.create_collection(
        as_owner, name="Long", source=str(slow_folder(tmp_path / "long"))
    )
    (pid,) = wait_for(pids_running_an_operation, timeout=60)
    assert value(scrape(), "quarry_operations_active", type="index") == base + 1

    os.kill(pid, signal.SIGKILL)
    # The cluster replaces the worker and marks it dead for prometheus_client.
    wait_for(
        lambda: not (multiprocess_dir() / f"gauge_livesum_{pid}.db").exists(),
        timeout=30,
    )

    assert value(scrape(), "quarry_operations_active", type="index") == base
    operation.refresh_from_db()
    assert operation.status == Operation.Status.PROCESSING


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_cluster_killed_whole_leaves_no_live_gauges_behind(
    worker, as_owner, tmp_path
):
    base = value(scrape(), "quarry_operations_active", type="index")
    services.create_collection(
        as_owner, name="Long", source=str(slow_folder(tmp_path / "long"))
    )
    wait_for(pids_running_an_operation, timeout=60)

    worker.kill()
    worker.process.wait()

    # Nobody is left to mark the workers dead: the scrape leaves them out itself.
    wait_for(
        lambda: value(scrape(), "quarry_operations_active", type="index") == base,
        timeout=15,
    )


@pytest.mark.django_db
def test_live_gauges_of_an_exited_process_leave_the_scrape_then_the_disk(
    monkeypatch,
):
    probe = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from prometheus_client import Gauge; "
            "Gauge('quarry_test_probe', 'probe', multiprocess_mode='livesum').set(7)",
        ],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiprocess_dir())},
    )
    # Not reaped yet: the probe stays a zombie, which still has a /proc entry.
    stat = Path(f"/proc/{probe.pid}/stat")
    wait_for(lambda: stat.read_text().rpartition(")")[2].split()[0] == "Z", timeout=30)
    probe_file = multiprocess_dir() / f"gauge_livesum_{probe.pid}.db"

    first = Client().get("/metrics").content.decode()
    kept_for_now = probe_file.exists()
    monkeypatch.setattr(web_metrics, "FORGET_AFTER_SECONDS", 0)
    second = Client().get("/metrics").content.decode()
    probe.wait()

    assert "quarry_test_probe" not in first and "quarry_test_probe" not in second
    # Kept a while, so the queue's own clean-up of a worker never races this one.
    assert kept_for_now
    assert not probe_file.exists()


@pytest.mark.django_db(transaction=True)
def test_exited_commands_counts_stay_in_the_scrape_and_their_files_are_folded(
    owner, monkeypatch
):
    monkeypatch.setattr(web_metrics, "FORGET_AFTER_SECONDS", 0)
    before = value(scrape(), "quarry_search_requests_total", via="cli")
    commands = [
        subprocess.run(
            [sys.executable, "manage.py", "search", f"terns {i}"]
            + ["--owner", owner.username, "--json"],
            cwd=BASE_DIR,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        for i in range(4)
    ]
    assert [c.returncode for c in commands] == [0] * 4, commands[0].stderr
    pids_of_exited = {
        path.name.rsplit("_", 1)[1][:-3]
        for path in multiprocess_dir().glob("counter_*.db")
    } - {"0", str(os.getpid())}
    assert pids_of_exited

    first = scrape()
    second = scrape()

    assert value(first, "quarry_search_requests_total", via="cli") == before + 4
    assert value(second, "quarry_search_requests_total", via="cli") == before + 4
    left = {path.name for path in multiprocess_dir().glob("*.db")}
    assert not {name for name in left for pid in pids_of_exited if f"_{pid}." in name}
    assert "counter_0.db" in left


def test_a_metric_file_older_than_the_process_holding_its_id_has_no_live_writer(
    tmp_path,
):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f"gauge_livesum_{sleeper.pid}.db"
        stale.write_bytes(b"")
        os.utime(stale, (time.time() - 3600, time.time() - 3600))
        fresh = tmp_path / f"counter_{sleeper.pid}.db"
        fresh.write_bytes(b"")

        assert not web_metrics.writer_alive(sleeper.pid, stale)
        assert web_metrics.writer_alive(sleeper.pid, fresh)
    finally:
        sleeper.kill()
        sleeper.wait()


# What the scrape holds


@pytest.mark.django_db
def test_the_scrape_holds_quarrys_metrics_and_django_prometheus_request_metrics():
    Client().get("/healthz")

    response = Client().get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    families = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "quarry_chunks_embedded",
        "quarry_embedding_seconds",
        "quarry_audit_write_failures",
        "quarry_search_latency_seconds",
        "quarry_queue_depth",
        "quarry_queue_oldest_pending_age_seconds",
        "quarry_sockets_connected",
        "django_http_requests_total_by_view_transport_method",
    } <= families


@pytest.mark.django_db
def test_queue_depth_and_the_oldest_pending_age_come_from_the_operations_table(
    owner, as_owner, docs, monkeypatch
):
    monkeypatch.setattr(lifecycle, "enqueue", lambda operation_id: None)
    first = services.create_collection(as_owner, name="First", source=str(docs))
    services.create_collection(as_owner, name="Second", source=str(docs))
    Operation.objects.filter(id=first.id).update(
        created_at=timezone.now() - timezone.timedelta(seconds=90)
    )

    samples = scrape()

    assert value(samples, "quarry_queue_depth") == 2
    assert 90 <= value(samples, "quarry_queue_oldest_pending_age_seconds") < 150


@pytest.mark.django_db
def test_a_running_operation_counts_as_active_until_it_ends(owner):
    collection = Collection.objects.create(owner=owner, name="Notes")
    with transaction.atomic():
        operation = lifecycle.create_pending(
            collection=collection, type=Operation.Type.REINDEX, requested_by=owner
        )
    before = value(scrape(), "quarry_operations_active", type="reindex")

    claimed = lifecycle.claim(operation.id)
    during = value(scrape(), "quarry_operations_active", type="reindex")
    lifecycle.finish(claimed, Operation.Status.COMPLETED)
    after = value(scrape(), "quarry_operations_active", type="reindex")

    assert (during - before, after - before) == (1, 0)


@pytest.mark.django_db
def test_ending_an_operation_another_process_runs_leaves_the_active_gauge_alone(
    owner,
):
    collection = Collection.objects.create(owner=owner, name="Notes")
    with transaction.atomic():
        operation = lifecycle.create_pending(
            collection=collection, type=Operation.Type.APPEND, requested_by=owner
        )
    Operation.objects.filter(id=operation.id).update(status=Operation.Status.PROCESSING)
    before = value(scrape(), "quarry_operations_active", type="append")

    lifecycle.finish(operation, Operation.Status.FAILED, error="The worker died")

    assert value(scrape(), "quarry_operations_active", type="append") == before


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_sockets_and_the_events_relayed_to_them_are_counted(owner, monkeypatch):
    monkeypatch.setattr(lifecycle, "enqueue", lambda operation_id: None)
    client = Client()
    await sync_to_async(client.force_login)(owner)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    headers = [(b"cookie", cookie), (b"origin", b"http://127.0.0.1")]
    before = await sync_to_async(scrape)()
    try:
        communicator = WebsocketCommunicator(application, "/ws/operations/", headers)
        connected, _ = await communicator.connect()
        assert connected
        connected_now = await sync_to_async(scrape)()

        def request_operation() -> None:
            collection = Collection.objects.create(owner=owner, name="Live")
            with transaction.atomic():
                lifecycle.create_pending(
                    collection=collection, type=Operation.Type.INDEX, requested_by=owner
                )

        await database_sync_to_async(request_operation)()
        message = await communicator.receive_json_from(timeout=15)
        relayed = await sync_to_async(scrape)()
        await communicator.disconnect()
        after = await sync_to_async(scrape)()
    finally:
        await database_sync_to_async(connections.close_all)()

    sockets = "quarry_sockets_connected"
    assert value(connected_now, sockets) - value(before, sockets) == 1
    assert value(after, sockets) == value(before, sockets)
    assert message["event"] == "requested"
    relayed_name = "quarry_events_relayed_total"
    assert (
        value(relayed, relayed_name, event="requested")
        - value(before, relayed_name, event="requested")
        == 1
    )


# Not public


@pytest.fixture(autouse=True)
def refusals_forgotten():
    """Each test meets the refusal log fresh: it logs an address only once."""
    web_metrics._refused.clear()
    yield
    web_metrics._refused.clear()


@pytest.mark.django_db
def test_metrics_refuse_a_foreign_address(caplog):
    caplog.set_level(logging.INFO)

    response = Client().get("/metrics", REMOTE_ADDR="203.0.113.9")

    assert response.status_code == 403
    assert b"quarry_" not in response.content
    lines = [r for r in caplog.records if r.name in ("webui.metrics", "django.request")]
    assert [(r.name, r.levelname) for r in lines] == [("webui.metrics", "WARNING")]
    assert "203.0.113.9" in lines[0].getMessage()


@pytest.mark.django_db
def test_a_refused_scraper_is_logged_once_however_often_it_returns(caplog):
    caplog.set_level(logging.INFO)

    for _ in range(3):
        Client().get("/metrics", REMOTE_ADDR="198.51.100.77")

    warnings = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and "198.51.100.77" in r.getMessage()
    ]
    assert len(warnings) == 1


@pytest.mark.django_db
def test_metrics_need_no_login_from_an_allowed_address():
    assert Client().get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert Client().get("/metrics", REMOTE_ADDR="::1").status_code == 200


@pytest.mark.django_db
def test_metrics_accept_the_bearer_token_from_any_address(settings):
    settings.METRICS_TOKEN = "scrape-me-please"

    response = Client().get(
        "/metrics",
        REMOTE_ADDR="203.0.113.9",
        HTTP_AUTHORIZATION="Bearer scrape-me-please",
    )

    assert response.status_code == 200
    assert b"quarry_operations_started_total" in response.content


@pytest.mark.django_db
def test_metrics_refuse_a_wrong_token(settings):
    settings.METRICS_TOKEN = "scrape-me-please"

    for header in ["Bearer scrape-me-pleas", "Basic scrape-me-please", "Bearer "]:
        response = Client().get(
            "/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION=header
        )
        assert response.status_code == 403, header


@pytest.mark.django_db
def test_an_empty_token_setting_opens_nothing(settings):
    settings.METRICS_TOKEN = ""

    response = Client().get(
        "/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer "
    )

    assert response.status_code == 403


@pytest.mark.django_db
def test_metrics_answer_a_configured_network(settings):
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8", "2001:db8::/32"]

    assert Client().get("/metrics", REMOTE_ADDR="10.20.30.40").status_code == 200
    assert Client().get("/metrics", REMOTE_ADDR="2001:db8::5").status_code == 200
    assert Client().get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403


@pytest.mark.django_db
def test_a_forwarded_for_header_cannot_borrow_a_loopback_address():
    # daphne --proxy-headers copies X-Forwarded-For into REMOTE_ADDR.
    response = Client().get(
        "/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="127.0.0.1"
    )

    assert response.status_code == 403


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_real_web_process_refuses_a_spoofed_forwarded_address(tmp_path):
    port = free_ports(1)
    log = (tmp_path / "web.log").open("w")
    web = subprocess.Popen(
        [sys.executable, "manage.py", "runweb"],
        cwd=BASE_DIR,
        env=child_env(WEB_HOST="127.0.0.1", WEB_PORT=str(port)),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: _accepts(port), timeout=60)

        local = http_get(port, "/metrics")
        other = http_get(port, "/metrics", source="127.0.0.2")
        spoofed = http_get(
            port,
            "/metrics",
            source="127.0.0.2",
            headers={"X-Forwarded-For": "127.0.0.1"},
        )
    finally:
        web.send_signal(signal.SIGTERM)
        web.wait(timeout=20)
        log.close()

    assert local[0] == 200 and "quarry_queue_depth" in local[1]
    assert other[0] == 403
    assert spoofed[0] == 403


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


# The exporter for hosts without a web process


@pytest.mark.slow
def test_three_exporters_share_a_range_and_a_fourth_exits_with_one_error(
    exporters,
):
    base = free_ports(3)
    port_range = f"{base}-{base + 2}"

    started = [exporters(METRICS_PORT_RANGE=port_range) for _ in range(3)]
    wait_for(
        lambda: all(e.port() or e.process.poll() is not None for e in started),
        timeout=60,
    )
    fourth = subprocess.run(
        [sys.executable, "manage.py", "metrics_exporter", "--host", "127.0.0.1"],
        cwd=BASE_DIR,
        env=child_env(METRICS_PORT_RANGE=port_range),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert sorted(e.port() for e in started) == [base, base + 1, base + 2]
    for exporter in started:
        assert exporter.output().count("Serving this host's metrics") == 1
        assert_clean(exporter.output())
    assert fourth.returncode != 0
    output = fourth.stdout + fourth.stderr
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and port_range in errors[0], output
    assert " WARNING " not in output and "Traceback" not in output
    assert [e.stop() for e in started] == [0, 0, 0]


@pytest.mark.slow
def test_the_exporter_serves_the_hosts_metrics_only_to_allowed_clients(exporters):
    port = free_ports(1)
    exporter = exporters(METRICS_PORT_RANGE=str(port), METRICS_TOKEN="exporter-token")
    wait_for(lambda: exporter.port() or exporter.process.poll() is not None, timeout=60)
    assert exporter.port() == port, exporter.output()

    local = http_get(port, "/metrics")
    foreign = http_get(port, "/metrics", source="127.0.0.2")
    with_token = http_get(
        port,
        "/metrics",
        source="127.0.0.2",
        headers={"Authorization": "Bearer exporter-token"},
    )

    assert local[0] == 200 and "quarry_chunks_embedded_total" in local[1]
    # The queue gauges come from the database, once, through the web process.
    assert "quarry_queue_depth" not in local[1]
    assert foreign[0] == 403
    assert with_token[0] == 200
    assert exporter.stop() == 0
    assert "refused" in exporter.output().lower()
    assert "Traceback" not in exporter.output()


def test_clearing_the_directory_refuses_while_a_process_still_writes_there(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    try:
        (tmp_path / f"counter_{exited.pid}.db").write_bytes(b"")
        (tmp_path / f"counter_{sleeper.pid}.db").write_bytes(b"")
        (tmp_path / "notes.db").write_bytes(b"kept")

        with pytest.raises(ValueError, match=str(sleeper.pid)):
            web_metrics.clear_directory(tmp_path)
        assert len(list(tmp_path.glob("*.db"))) == 3

        sleeper.kill()
        sleeper.wait()
        assert web_metrics.clear_directory(tmp_path) == 2
    finally:
        sleeper.kill()
        sleeper.wait()
    assert [p.name for p in tmp_path.glob("*.db")] == ["notes.db"]


def test_the_launcher_step_empties_the_directory(tmp_path):
    directory = tmp_path / "metrics"
    directory.mkdir()
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    (directory / f"histogram_{exited.pid}.db").write_bytes(b"")

    result = subprocess.run(
        [sys.executable, "manage.py", "metrics_exporter", "--clear"],
        cwd=BASE_DIR,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert not (directory / f"histogram_{exited.pid}.db").exists()
    assert " ERROR " not in result.stderr and " WARNING " not in result.stderr


def test_importing_quarry_starts_no_listener():
    script = """
import os, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webui.settings")
django.setup()
import webui.urls, webui.asgi, operations.tasks, operations.metrics
import webui.management.commands.metrics_exporter
inodes = set()
for fd in os.listdir("/proc/self/fd"):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        continue
    if target.startswith("socket:["):
        inodes.add(target[8:-1])
listening = []
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(table).read().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:
            listening.append(fields[1])
print("LISTENING", listening)
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=BASE_DIR,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert "LISTENING []" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize(
    "name, value",
    [
        ("METRICS_PORT_RANGE", "9092-abc"),
        ("METRICS_PORT_RANGE", "9101-9092"),
        ("METRICS_ALLOWED_IPS", "127.0.0.1,localhost"),
        ("PROMETHEUS_MULTIPROC_DIR", "/proc/no-such-place/metrics"),
    ],
)
def test_a_malformed_metrics_setting_stops_start_up_naming_it(name, value):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=BASE_DIR,
        env={**os.environ, name: value},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode != 0
    assert f"Setting {name}" in result.stderr
