"""/healthz and /readyz: alive; ready only with a database, a broker and a worker."""

import json
import logging
import os
import subprocess
import sys
import uuid

import pytest
from django.test import Client

from tests.conftest import BASE_DIR, child_env, wait_for
from webui import health


@pytest.fixture(autouse=True)
def fresh_readiness_state(monkeypatch):
    """Each test starts as a freshly started web process would."""
    monkeypatch.setattr(health, "_last_failing", None)


@pytest.fixture
def unseen_clusters(monkeypatch):
    """Look for clusters under a name of this test's own.

    With a Redis broker, cluster stats live in Redis, where the workers of
    other test runs on the same server report too.
    """
    from django_q.conf import Conf

    name = f"django_q:quarry-test-{uuid.uuid4().hex}:cluster"
    monkeypatch.setattr(Conf, "Q_STAT", name)


def readyz() -> tuple[int, dict]:
    response = Client().get("/readyz")
    assert response["Content-Type"] == "application/json"
    return response.status_code, response.json()


def test_healthz_answers_without_a_login_or_a_database():
    response = Client().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_is_503_while_no_worker_has_reported(unseen_clusters, caplog):
    caplog.set_level(logging.INFO)

    status, body = readyz()

    assert status == 503
    assert body["status"] == "failing"
    assert body["checks"]["database"]["state"] == "ok"
    assert body["checks"]["broker"]["state"] == "ok"
    assert body["checks"]["worker"]["state"] == "failing"
    assert [r for r in caplog.records if r.name == "django.request"] == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_readyz_is_200_while_a_real_worker_cluster_reports(worker):
    wait_for(lambda: readyz()[0] == 200, timeout=60)

    status, body = readyz()

    assert body["status"] == "ok"
    assert {name: check["state"] for name, check in body["checks"].items()} == {
        "database": "ok",
        "broker": "ok",
        "worker": "ok",
    }
    assert body["checks"]["worker"]["clusters"] >= 1


@pytest.mark.slow
@pytest.mark.skipif(
    bool(os.environ.get("REDIS_URL")),
    reason="other test runs' clusters report to the same Redis",
)
@pytest.mark.django_db(transaction=True)
def test_readyz_turns_503_once_the_worker_cluster_stops(worker):
    wait_for(lambda: readyz()[0] == 200, timeout=60)

    worker.stop()

    wait_for(lambda: readyz()[0] == 503, timeout=30)


@pytest.mark.django_db
def test_a_change_of_readiness_is_logged_once_not_per_poll(unseen_clusters, caplog):
    caplog.set_level(logging.INFO)

    for _ in range(3):
        readyz()

    lines = [r for r in caplog.records if r.name == "webui.health"]
    assert len(lines) == 1
    assert "worker" in lines[0].getMessage()


def run_readyz_in_a_process(**env: str) -> tuple[int, dict, str]:
    """/readyz answered by a fresh process configured with `env`."""
    script = (
        "import json, os, django\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'webui.settings')\n"
        "django.setup()\n"
        "from django.test import Client\n"
        "response = Client(HTTP_HOST='127.0.0.1').get('/readyz')\n"
        "print('STATUS', response.status_code)\n"
        "print('BODY', response.content.decode())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = dict(
        line.split(" ", 1) for line in result.stdout.splitlines() if " " in line
    )
    assert "STATUS" in lines, result.stdout + result.stderr
    return int(lines["STATUS"]), json.loads(lines["BODY"]), result.stderr


@pytest.mark.slow
def test_readyz_reports_an_unreachable_database_without_its_error_text():
    url = "postgres://quarry@127.0.0.1:1/quarry"
    status, body, log = run_readyz_in_a_process(**child_env(DATABASE_URL=url))

    assert status == 503
    assert body["checks"]["database"]["state"] == "failing"
    assert "127.0.0.1:1" not in json.dumps(body) and "quarry@" not in json.dumps(body)
    assert "Not ready" in log and "database" in log
    assert "Traceback" not in log


@pytest.mark.slow
@pytest.mark.django_db
def test_readyz_reports_an_unreachable_redis_broker():
    env = child_env(REDIS_URL="redis://127.0.0.1:1/0")

    status, body, log = run_readyz_in_a_process(**env)

    assert status == 503
    assert body["checks"]["database"]["state"] == "ok"
    assert body["checks"]["broker"] == {
        "state": "failing",
        "detail": "Redis does not answer",
        "kind": "redis",
    }
    assert body["checks"]["worker"]["state"] == "failing"
    assert "Traceback" not in log
