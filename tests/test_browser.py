"""A real browser watches a new collection's operation go live to its end.

Debian's chromium, driven by Playwright's sync API (no downloaded browser),
against a real daphne and a real worker on the test database.
"""

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

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
    def __init__(self, log_path: Path, env: dict[str, str]):
        self.port = free_port()
        self.log_path = log_path
        self.log = log_path.open("w")
        daphne = str(BASE_DIR / ".venv" / "bin" / "daphne")
        if not os.access(daphne, os.X_OK):
            daphne = shutil.which("daphne") or daphne
        self.process = subprocess.Popen(
            [daphne, "-b", "127.0.0.1", "-p", str(self.port), "webui.asgi:application"],
            cwd=BASE_DIR,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


@pytest.fixture
def child_settings(monkeypatch):
    """Settings for the server and worker processes; this process keeps its own."""
    for name, value in CHILD_SETTINGS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def web_server(child_settings, transactional_db, tmp_path):
    server = WebServer(tmp_path / "daphne.log", child_env(**CHILD_SETTINGS))
    try:
        wait_for(
            lambda: port_answers(server.port) or server.process.poll() is not None, 30
        )
        assert server.process.poll() is None, server.output()
        yield server
    finally:
        server.stop()


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
