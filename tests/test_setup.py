"""`manage.py setup`: the wizard on a terminal, the environment without one, --check.

Every run is a real subprocess with its own .env (QUARRY_ENV_FILE), DATA_DIR and
home folder, and an environment built from scratch, so neither the test run's
settings nor the developer's .env can leak in.
"""

import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pexpect
import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from tests.conftest import BASE_DIR
from webui import envfile

# Each run builds its own SQLite install whatever database the suite uses, so
# the PostgreSQL pass of `make test` would only repeat them.
pytestmark = pytest.mark.sqlite_only

PASSWORD = "Granite-otter-77"
NEW_PASSWORD = "Velvet-harbour-93"
CHECK_NAMES = [
    "Settings",
    "Data directory",
    "Document root",
    "Database",
    "Migrations",
    "Broker",
    "Worker",
    "Embedding model",
    "Metrics directory",
]
# Every question of the wizard starts with one of these; none may appear
# when there is no terminal.
QUESTIONS = ["Data directory (", "Document roots:", "Admin password", "[Y/n]"]


class Install:
    """A folder holding one Quarry configuration: .env, data, documents, home."""

    def __init__(self, root: Path):
        self.root = root
        self.env_file = root / ".env"
        self.data_dir = root / "data"
        self.docs = root / "docs"
        self.home = root / "home"
        for folder in (self.docs, self.home):
            folder.mkdir(parents=True, exist_ok=True)

    def environment(self, **values: str) -> dict[str, str]:
        environment = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "QUARRY_ENV_FILE": str(self.env_file),
        }
        environment.update(values)
        return environment

    def setup(
        self, *args: str, stdin: int | None = subprocess.DEVNULL, **values: str
    ) -> subprocess.CompletedProcess:
        return self.run(["setup", *args], stdin=stdin, **values)

    def run(
        self,
        args: list[str],
        stdin: int | None = subprocess.DEVNULL,
        input: str | None = None,
        **values: str,
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=self.environment(**values),
            stdin=None if input is not None else stdin,
            input=input,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def settings(self) -> dict[str, str]:
        return envfile.read(self.env_file)

    def password_hash(self, username: str, database: Path | None = None) -> str | None:
        database = database or self.data_dir / "quarry.sqlite3"
        with closing(sqlite3.connect(database)) as db:
            row = db.execute(
                "SELECT password FROM auth_user WHERE username = ?", (username,)
            ).fetchone()
        return row[0] if row else None

    def copy_to(self, root: Path) -> "Install":
        """The same install in another folder, its .env pointing at the copy."""
        shutil.copytree(self.root, root)
        text = self.env_file.read_text().replace(str(self.root), str(root))
        (root / ".env").write_text(text)
        return Install(root)


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def assert_quiet_and_successful(result: subprocess.CompletedProcess) -> None:
    text = output(result)
    assert result.returncode == 0, text
    assert "Traceback" not in text
    assert "Warning" not in text and "not a terminal" not in text
    assert not [question for question in QUESTIONS if question in text], text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def logs_in(password_hash: str | None, password: str) -> bool:
    return bool(password_hash) and PBKDF2PasswordHasher().verify(
        password, password_hash
    )


@pytest.fixture(scope="module")
def configured(
    tmp_path_factory,
) -> Iterator[tuple[Install, subprocess.CompletedProcess]]:
    """One first run with --noinput and everything in the environment."""
    install = Install(tmp_path_factory.mktemp("configured"))
    result = install.setup(
        "--noinput",
        DATA_DIR=str(install.data_dir),
        DOCUMENT_ROOTS=str(install.docs),
        WEB_PORT="8123",
        WORKER_COUNT="3",
        QUARRY_ADMIN_USERNAME="alice",
        QUARRY_ADMIN_PASSWORD=PASSWORD,
        QUARRY_ADMIN_EMAIL="alice@example.com",
    )
    assert result.returncode == 0, output(result)
    yield install, result


@pytest.fixture(scope="module")
def second_run(
    configured, tmp_path_factory
) -> tuple[Install, Install, subprocess.CompletedProcess]:
    """The configured install run again: no values, a new admin but no password."""
    first, _ = configured
    again = first.copy_to(tmp_path_factory.mktemp("again") / "install")
    return first, again, again.setup("--noinput", QUARRY_ADMIN_USERNAME="bob")


@pytest.fixture
def copy(configured, tmp_path) -> Install:
    return configured[0].copy_to(tmp_path / "install")


def test_noinput_takes_its_values_from_the_environment(configured):
    install, result = configured

    assert_quiet_and_successful(result)
    assert output(result).count("non-interactively") == 1
    values = install.settings()
    assert values["WEB_PORT"] == "8123"
    assert values["WORKER_COUNT"] == "3"
    assert values["DOCUMENT_ROOTS"] == str(install.docs)
    assert values["DATA_DIR"] == str(install.data_dir)
    assert len(values["SECRET_KEY"]) >= 50
    assert mode(install.env_file) == 0o600


def test_noinput_migrates_and_creates_the_admin_from_the_environment(configured):
    install, result = configured

    assert "Admin user 'alice' created" in result.stdout
    assert logs_in(install.password_hash("alice"), PASSWORD)


def test_setup_ends_by_saying_how_to_start_quarry(configured):
    _, result = configured

    assert "Setup complete. Start Quarry with `make run`." in result.stdout


@pytest.mark.parametrize("stdin", ["/dev/null", "a pipe of empty lines"])
def test_without_a_terminal_it_never_prompts(copy, stdin):
    if stdin == "/dev/null":
        result = copy.setup(WEB_PORT="8124")
    else:
        result = copy.run(["setup"], input="\n\n\n", WEB_PORT="8124")

    assert_quiet_and_successful(result)
    assert "no terminal on standard input" in result.stderr
    assert output(result).count("non-interactively") == 1
    assert copy.settings()["WEB_PORT"] == "8124"


def test_an_invalid_environment_value_stops_setup_and_names_it(tmp_path):
    install = Install(tmp_path)

    result = install.setup(
        "--noinput", DATA_DIR=str(install.data_dir), WEB_PORT="eighty"
    )

    assert result.returncode != 0
    assert "WEB_PORT" in result.stderr and "eighty" in result.stderr
    assert "Traceback" not in output(result)
    assert not install.env_file.exists()


# Settings the wizard does not ask for: no answer could fix them.
UNASKED_INVALID = {
    "SQLITE_BUSY_TIMEOUT": "5",
    "QUEUE_RETRY": "10",
    "METRICS_PORT_RANGE": "x",
    "MAX_FILE_BYTES": "-1",
}


@pytest.mark.parametrize("name", UNASKED_INVALID)
def test_an_invalid_unasked_setting_stops_setup_before_anything_is_written(
    tmp_path, name
):
    install = Install(tmp_path)

    result = install.setup(
        "--noinput",
        DATA_DIR=str(install.data_dir),
        DOCUMENT_ROOTS=str(install.docs),
        **{name: UNASKED_INVALID[name]},
    )

    assert result.returncode != 0
    assert f"Setting {name}" in result.stderr
    assert "Traceback" not in output(result)
    assert not install.env_file.exists()
    assert not (install.data_dir / "quarry.sqlite3").exists()


def test_an_invalid_unasked_setting_in_env_leaves_the_file_unchanged(copy):
    copy.env_file.write_text(copy.env_file.read_text() + "SQLITE_BUSY_TIMEOUT=5\n")
    before = copy.env_file.read_bytes()
    database = copy.data_dir / "quarry.sqlite3"
    database_before = database.stat().st_mtime_ns

    result = copy.setup("--noinput", WEB_PORT="8125")

    assert result.returncode != 0
    assert "SQLITE_BUSY_TIMEOUT" in result.stderr
    assert copy.env_file.read_bytes() == before
    assert database.stat().st_mtime_ns == database_before


def test_reset_drops_an_invalid_unasked_setting_of_the_old_env(copy):
    copy.env_file.write_text(copy.env_file.read_text() + "SQLITE_BUSY_TIMEOUT=5\n")

    result = copy.setup(
        "--noinput",
        "--reset",
        DATA_DIR=str(copy.data_dir),
        DOCUMENT_ROOTS=str(copy.docs),
    )

    assert_quiet_and_successful(result)
    assert "SQLITE_BUSY_TIMEOUT" not in copy.settings()


def test_an_invalid_queue_retry_is_reported_without_a_python_warning(tmp_path):
    install = Install(tmp_path)

    result = install.setup(
        "--noinput", DATA_DIR=str(install.data_dir), QUEUE_RETRY="10"
    )

    assert "QUEUE_RETRY" in result.stderr
    assert "Warning" not in output(result)


def test_env_example_still_starts_with_a_longer_operation_timeout(tmp_path):
    install = Install(tmp_path)
    shutil.copy(BASE_DIR / ".env.example", install.env_file)

    result = install.run(
        ["check"],
        SECRET_KEY="example-secret",
        DATA_DIR=str(install.data_dir),
        OPERATION_TIMEOUT="20000",
    )

    assert result.returncode == 0, output(result)


def test_a_second_run_keeps_the_secret_key_and_the_values(second_run):
    first, again, result = second_run

    assert_quiet_and_successful(result)
    assert again.settings()["SECRET_KEY"] == first.settings()["SECRET_KEY"]
    assert again.settings()["WEB_PORT"] == "8123"


def test_a_second_run_without_a_password_keeps_the_admins_password(second_run):
    first, again, _ = second_run

    assert again.password_hash("alice") == first.password_hash("alice")


def test_without_an_admin_password_no_admin_is_made_and_it_says_how(second_run):
    _, again, result = second_run

    assert "No admin user 'bob' created" in result.stdout
    assert "QUARRY_ADMIN_PASSWORD" in result.stdout
    assert "createsuperuser" in result.stdout
    assert again.password_hash("bob") is None


def test_a_run_with_a_new_password_changes_it(copy):
    result = copy.setup(
        "--noinput", QUARRY_ADMIN_USERNAME="alice", QUARRY_ADMIN_PASSWORD=NEW_PASSWORD
    )

    assert_quiet_and_successful(result)
    assert logs_in(copy.password_hash("alice"), NEW_PASSWORD)


def test_reset_backs_up_env_and_starts_over_with_a_new_key(copy):
    old = copy.settings()
    old_hash = copy.password_hash("alice")

    result = copy.setup(
        "--noinput",
        "--reset",
        DATA_DIR=str(copy.data_dir),
        DOCUMENT_ROOTS=str(copy.docs),
    )

    assert_quiet_and_successful(result)
    (backup,) = copy.root.glob(".env.bak.*")
    assert envfile.read(backup) == old
    assert mode(backup) == 0o600
    assert copy.settings()["SECRET_KEY"] != old["SECRET_KEY"]
    assert copy.settings()["WEB_PORT"] == "8000"
    assert copy.password_hash("alice") == old_hash


def test_check_lists_every_prerequisite_and_fails_with_a_fix_for_a_missing_root(copy):
    missing = copy.root / "gone"

    result = copy.setup("--check", DOCUMENT_ROOTS=f"{copy.docs},{missing}")

    assert result.returncode != 0
    for name in CHECK_NAMES:
        assert name in result.stdout
    row = next(line for line in result.stdout.splitlines() if str(missing) in line)
    assert "FAIL" in row and "does not exist" in row
    assert "fix: create it, or change DOCUMENT_ROOTS" in result.stdout
    assert "Traceback" not in output(result)


def test_the_wizard_checks_each_answer_and_applies_them(tmp_path):
    install = Install(tmp_path)
    # The wizard's defaults come from here; it is told to use another folder.
    install.env_file.write_text(f"DATA_DIR={tmp_path / 'first'}\n")
    chosen = tmp_path / "chosen"
    port = free_port()
    wizard = pexpect.spawn(
        sys.executable,
        ["manage.py", "setup"],
        cwd=str(BASE_DIR),
        env=install.environment(TERM="dumb"),
        encoding="utf-8",
        timeout=60,
    )

    answers = [
        ("Data directory", str(chosen)),
        ("Document roots", str(tmp_path / "missing")),
        ("does not exist", None),
        ("Document roots", str(install.docs)),
        ("Web server address", ""),
        ("Web server port", "eighty"),
        ("must be a port number", None),
        ("Web server port", str(port)),
        (r"Database \[sqlite\]", ""),
        (r"Redis \[none\]", ""),
        ("Embedding model", "1"),
        ("Worker processes", "3"),
        ("Admin username", "carol"),
        ("Admin email", "carol@example.com"),
        ("Admin password: ", "password"),
        ("again", "password"),
        ("too common", None),
        ("Admin password: ", PASSWORD),
        ("again", PASSWORD),
        (r"\[Y/n\]", ""),
    ]
    for prompt, answer in answers:
        wizard.expect(prompt)
        if answer is not None:
            wizard.sendline(answer)
    wizard.expect(pexpect.EOF, timeout=120)
    wizard.close()

    assert wizard.exitstatus == 0, wizard.before
    assert "Traceback" not in wizard.before
    assert mode(install.env_file) == 0o600
    values = install.settings()
    assert values["DATA_DIR"] == str(chosen)
    assert values["DOCUMENT_ROOTS"] == str(install.docs)
    assert values["WEB_PORT"] == str(port)
    assert values["WORKER_COUNT"] == "3"
    assert values["DATABASE_URL"] == ""
    assert logs_in(install.password_hash("carol", chosen / "quarry.sqlite3"), PASSWORD)


def test_ctrl_c_at_a_question_writes_nothing(tmp_path):
    install = Install(tmp_path)
    wizard = pexpect.spawn(
        sys.executable,
        ["manage.py", "setup"],
        cwd=str(BASE_DIR),
        env=install.environment(TERM="dumb", DATA_DIR=str(install.data_dir)),
        encoding="utf-8",
        timeout=60,
    )

    wizard.expect("Data directory")
    wizard.sendline(str(tmp_path / "new" / "data"))
    wizard.expect("Document roots")
    wizard.send("\x03")
    wizard.expect(pexpect.EOF)
    wizard.close()

    assert wizard.exitstatus == 130
    assert "Setup cancelled" in wizard.before
    assert "Traceback" not in wizard.before
    assert not install.env_file.exists()
    assert not (tmp_path / "new").exists()


def test_the_wizard_refuses_an_invalid_unasked_setting_before_asking(tmp_path):
    install = Install(tmp_path)
    wizard = pexpect.spawn(
        sys.executable,
        ["manage.py", "setup"],
        cwd=str(BASE_DIR),
        env=install.environment(
            TERM="dumb", DATA_DIR=str(install.data_dir), SQLITE_BUSY_TIMEOUT="5"
        ),
        encoding="utf-8",
        timeout=60,
    )

    wizard.expect(pexpect.EOF)
    wizard.close()

    assert wizard.exitstatus != 0
    assert "SQLITE_BUSY_TIMEOUT" in wizard.before
    assert "Data directory" not in wizard.before
    assert "Traceback" not in wizard.before
    assert not install.env_file.exists()


def _copy_project(target: Path) -> None:
    """The working tree as a fresh clone would have it: no venv, data or .env."""
    left_out = {".venv", "data", ".env", ".git", ".pytest_cache", ".hypothesis"}

    def ignore(folder: str, names: list[str]) -> set[str]:
        if Path(folder) == BASE_DIR:
            return {name for name in names if name in left_out or ".env.bak" in name}
        return {name for name in names if name == "__pycache__"}

    shutil.copytree(BASE_DIR, target, ignore=ignore)
    (target / ".venv").symlink_to(BASE_DIR / ".venv")


@pytest.mark.slow
def test_make_run_sets_up_a_fresh_clone(tmp_path):
    project = tmp_path / "quarry"
    _copy_project(project)
    home = tmp_path / "home"
    home.mkdir()

    # `-o` keeps make from reinstalling the shared venv when requirements.txt
    # is newer than its stamp; the .env rule is what `make run` runs first.
    result = subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed", ".env"],
        cwd=project,
        env={"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert_quiet_and_successful(result)
    assert "setup --noinput" in result.stdout
    # `make run` starts Quarry itself once .env exists.
    assert "Setup complete." in result.stdout
    assert "Start Quarry with" not in result.stdout
    assert mode(project / ".env") == 0o600
    assert envfile.read(project / ".env")["DATA_DIR"] == "./data"
    with closing(sqlite3.connect(project / "data" / "quarry.sqlite3")) as db:
        (applied,) = db.execute("SELECT COUNT(*) FROM django_migrations").fetchone()
    assert applied > 0
