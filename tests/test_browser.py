"""A real browser watches a new collection's operation go live to its end.

Debian's chromium, driven by Playwright's sync API (no downloaded browser),
against a real daphne and a real worker on the test database.
"""

import os
import shutil
import signal
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.db import transaction

from tests.conftest import BASE_DIR, child_env, wait_for, write_files

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
# Progress is written often enough in the children to show intermediate states.
CHILD_SETTINGS = {"PROGRESS_INTERVAL_SECONDS": "0.2"}
READER_PASSWORD = "pw-rhea-browser-42"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason=f"{CHROMIUM} is missing: install Debian's chromium (make browser)",
    ),
]

# Records every state a row on /operations/ shows and every value of the nav
# badge, and marks the document so that a reload would be noticed.
WATCH_PAGE = """
() => {
  window.__noReload = true;
  window.__seen = [];
  window.__badge = [];
  const badge = document.querySelector(
    '[data-field="active-count"], #active-operation-count');
  const record = () => {
    document.querySelectorAll("tr[data-operation-id]").forEach((row) => {
      const bar = row.querySelector('progress[data-field="progress"]');
      const entry = [row.dataset.operationId, row.dataset.status,
                     bar ? bar.value : null, row.parentElement.id];
      const key = JSON.stringify(entry);
      if (!window.__seen.some((seen) => JSON.stringify(seen) === key)) {
        window.__seen.push(entry);
      }
    });
    const count = badge ? badge.textContent.trim() : null;
    if (window.__badge[window.__badge.length - 1] !== count) {
      window.__badge.push(count);
    }
  };
  record();
  new MutationObserver(record).observe(document.body, {
    subtree: true, childList: true, attributes: true, characterData: true,
  });
}
"""
COMPLETED_AT_100 = """
(id) => {
  const row = document.querySelector(
    `#recent-operations tr[data-operation-id="${id}"][data-status="completed"]`);
  const bar = row && row.querySelector('progress[data-field="progress"]');
  return bar !== null && bar.value === 100;
}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class WebServer:
    """A real daphne on a fixed free port; it can be stopped and started again."""

    def __init__(self, log_path: Path, env: dict[str, str]):
        self.port = free_port()
        self.env = env
        self.log_path = log_path
        self.log = log_path.open("a")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        daphne = str(BASE_DIR / ".venv" / "bin" / "daphne")
        if not os.access(daphne, os.X_OK):
            daphne = shutil.which("daphne") or daphne
        self.process = subprocess.Popen(
            [daphne, "-b", "127.0.0.1", "-p", str(self.port), "webui.asgi:application"],
            cwd=BASE_DIR,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: port_answers(self.port) or self.process.poll() is not None, 30)
        assert self.process.poll() is None, self.output()

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def child_settings(monkeypatch):
    """Settings for the server and worker processes; this process keeps its own."""
    for name, value in CHILD_SETTINGS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def web_server(child_settings, transactional_db, tmp_path):
    server = WebServer(tmp_path / "daphne.log", child_env(**CHILD_SETTINGS))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        server.log.close()


@pytest.fixture
def reader(settings, django_user_model):
    """A user whose password the server processes can check with their own hashers."""
    from django.conf import global_settings

    settings.PASSWORD_HASHERS = global_settings.PASSWORD_HASHERS
    return django_user_model.objects.create_user("rhea", password=READER_PASSWORD)


def log_in(page, server: WebServer, username: str, password: str) -> None:
    page.goto(f"{server.url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("main button[type=submit]")
    page.wait_for_url(lambda url: "/login/" not in url)


def create_collection(page, server: WebServer, name: str, folder: Path) -> str:
    """Submit the create form; returns the id of the operation it leads to."""
    page.goto(f"{server.url}/collections/new/")
    page.fill("#id_name", name)
    page.fill("#id_source", str(folder))
    # Small chunks: progress moves once per embedding batch of chunks.
    page.fill("#id_chunk_size", "200")
    page.fill("#id_chunk_overlap", "20")
    page.click("main button[type=submit]")
    page.wait_for_url("**/operations/*/")
    return page.url.rstrip("/").rsplit("/", 1)[-1]


def test_a_new_collections_operation_goes_live_from_pending_to_completed(
    child_settings, web_server, worker, reader, tmp_path
):
    from playwright.sync_api import sync_playwright

    text = "Rivers carry boats under bridges past the old mill. " * 6
    folder = write_files(
        tmp_path / "library",
        {f"book-{i:02}.txt": f"Book {i}. {text}" for i in range(60)},
    )

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context()
            watcher = context.new_page()
            log_in(watcher, web_server, reader.get_username(), READER_PASSWORD)
            watcher.goto(f"{web_server.url}/operations/")
            watcher.evaluate(WATCH_PAGE)
            watcher.wait_for_selector("body[data-live-state=open]", state="attached")

            operation_id = create_collection(
                context.new_page(), web_server, "Rivers", folder
            )
            try:
                watcher.wait_for_function(
                    COMPLETED_AT_100, arg=operation_id, timeout=90_000
                )
            except Exception as exc:
                raise AssertionError(
                    f"row never completed: {watcher.evaluate('window.__seen')}\n"
                    f"worker:\n{worker.output()[-3000:]}\n"
                    f"daphne:\n{web_server.output()[-3000:]}"
                ) from exc

            seen = [
                s for s in watcher.evaluate("window.__seen") if s[0] == operation_id
            ]
            badge = watcher.evaluate("window.__badge")
            same_document = watcher.evaluate("window.__noReload === true")
            step = watcher.text_content(
                f'tr[data-operation-id="{operation_id}"] [data-field="step"]'
            )
            banner_hidden = watcher.evaluate(
                "document.getElementById('live-status').hidden"
            )
        finally:
            browser.close()

    statuses = [status for _, status, _, _ in seen]
    progress_while_running = {
        value for _, status, value, _ in seen if status == "processing"
    }
    assert same_document, "the operations page was reloaded"
    assert statuses[0] == "pending" and "processing" in statuses, seen
    assert statuses[-1] == "completed" and seen[-1][2] == 100, seen
    assert any(0 < value < 100 for value in progress_while_running), seen
    assert seen[0][3] == "active-operations" and seen[-1][3] == "recent-operations"
    assert step == "completed"
    assert badge == ["0", "1", "0"]
    assert banner_hidden


def outside_playwright(function, *args):
    """Run ORM code in a thread; Playwright keeps an event loop in this one."""
    from django.db import connection

    def run():
        try:
            return function(*args)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def request_operation(user, name: str):
    from collections_app.models import Collection
    from operations import lifecycle

    collection = Collection.objects.create(owner=user, name=name)
    with transaction.atomic():
        return lifecycle.create_pending(
            collection=collection, type="index", requested_by=user
        )


def run_to_completion(operation) -> None:
    from operations import lifecycle

    running = lifecycle.claim(operation.id)
    progress = lifecycle.Progress(running)
    for done in range(1, 4):
        progress.update(force=True, step="embedding", total=3, done=done)
    lifecycle.finish(running, "completed")


def test_the_page_says_when_live_updates_stop_and_catches_up_after(
    child_settings, web_server, reader, monkeypatch
):
    from playwright.sync_api import sync_playwright

    from operations import lifecycle

    monkeypatch.setattr(lifecycle, "enqueue", lambda operation_id: None)
    operation = request_operation(reader, "Letters")
    row = f'tr[data-operation-id="{operation.id}"]'
    banner = "#live-status"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            log_in(page, web_server, reader.get_username(), READER_PASSWORD)
            page.goto(f"{web_server.url}/operations/")
            page.wait_for_selector("body[data-live-state=open]", state="attached")
            page.evaluate("window.__noReload = true")

            web_server.stop()
            page.wait_for_selector(banner, state="visible", timeout=20_000)
            banner_text = page.text_content(banner)
            outside_playwright(run_to_completion, operation)
            web_server.start()

            page.wait_for_selector(
                f'#recent-operations {row}[data-status="completed"]', timeout=45_000
            )
            page.wait_for_selector(banner, state="hidden", timeout=5_000)
            value = page.evaluate(
                f"""document.querySelector('{row} progress[data-field="progress"]')
                    .value"""
            )
            same_document = page.evaluate("window.__noReload === true")
        finally:
            browser.close()

    assert banner_text == "Live updates unavailable — retrying"
    assert value == 100
    assert same_document
