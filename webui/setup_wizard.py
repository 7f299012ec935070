"""The questions `manage.py setup` asks on a terminal, each answer checked at once.

A rejected answer says why and is asked again. Nothing is written here: the
wizard returns the values, and removes the folders it created if it is cancelled.
"""

import getpass
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

from django.conf import settings

from webui import envfile, setup_admin
from webui.envfile import Choice


class Prompter:
    """Asks on the terminal; answers go through a check that may reject them."""

    def __init__(self, out: TextIO, paint_error: Callable[[str], str]):
        self.out = out
        self.paint_error = paint_error

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def error(self, text: str) -> None:
        self.say(self.paint_error(f"  {text}"))

    def ask(
        self,
        question: str,
        default: str,
        check: Callable[[str], str],
        shown: str | None = None,
    ) -> str:
        shown = default if shown is None else shown
        prompt = f"{question} [{shown}]: " if shown else f"{question}: "
        while True:
            answer = input(prompt).strip() or default
            try:
                return check(answer)
            except ValueError as exc:
                self.error(str(exc))

    def secret(self, question: str) -> str:
        return getpass.getpass(question)

    def confirm(self, question: str, default: bool = True) -> bool:
        options = "Y/n" if default else "y/N"
        while True:
            answer = input(f"{question} [{options}]: ").strip().lower()
            if not answer:
                return default
            if answer in ("y", "yes", "n", "no"):
                return answer.startswith("y")
            self.error("answer y or n")


def data_dir_path(value: str) -> Path:
    """DATA_DIR as the settings read it: ~ expanded, relative to the project."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (Path(settings.BASE_DIR) / path).resolve()


def bind(host: str, port: int) -> None:
    """Listen on host:port for a moment; OSError says why it cannot be used."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as sock:
        # As the web server will: a port in TIME_WAIT is still free to use.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)


class Wizard:
    """One question per setting, then the admin user, then a summary to confirm."""

    def __init__(
        self,
        prompter: Prompter,
        current: Mapping[str, Choice],
        existing: Mapping[str, str],
        environment: Mapping[str, str],
        env_path: Path,
        notes: list[str] | None = None,
    ):
        self.prompter = prompter
        self.notes = notes or []
        self.current = dict(current)
        self.existing = existing
        self.environment = environment
        self.env_path = env_path
        self.created: list[Path] = []

    def run(self) -> tuple[dict[str, str], setup_admin.Admin]:
        say = self.prompter.say
        say("Quarry setup. Press Enter to keep the value in brackets;")
        say("Ctrl-C quits at any question without writing anything.")
        for note in self.notes:
            self.prompter.error(note)
        while True:
            values = self.ask_settings()
            admin, password_is_new = self.ask_admin(values)
            self.show_summary(values, admin, password_is_new)
            if self.prompter.confirm(f"Write {self.env_path} and set up Quarry?"):
                self.forget_unused_folders(data_dir_path(values["DATA_DIR"]))
                return values, admin
            say("Then once more; your answers are now the defaults.")
            self.current.update(
                {
                    key.name: Choice(values[key.name], "answer")
                    for key in envfile.KEYS
                    if not key.secret
                }
            )

    def undo(self) -> None:
        """Remove the folders created while asking, when they are still empty."""
        self.forget_unused_folders(None)

    def ask_settings(self) -> dict[str, str]:
        ask = self.prompter.ask
        values = {name: choice.value for name, choice in self.current.items()}
        say = self.prompter.say

        say()
        values["DATA_DIR"] = ask(
            "Data directory (database, caches, metrics)",
            values["DATA_DIR"],
            self.check_data_dir,
        )
        values["DOCUMENT_ROOTS"] = ask(
            "Document roots: folders Quarry may index, comma-separated",
            values["DOCUMENT_ROOTS"],
            self.check_roots,
        )
        values["WEB_HOST"] = ask(
            "Web server address (0.0.0.0: every interface)",
            values["WEB_HOST"],
            self.check_host,
        )
        host = values["WEB_HOST"]
        values["WEB_PORT"] = ask(
            "Web server port",
            values["WEB_PORT"],
            lambda answer: self.check_port(host, answer),
        )
        sqlite_file = data_dir_path(values["DATA_DIR"]) / "quarry.sqlite3"
        say(
            f"Database: 'sqlite' for {sqlite_file}, "
            "or a postgres://user:password@host/db URL"
        )
        database = values["DATABASE_URL"]
        values["DATABASE_URL"] = ask(
            "Database",
            database or "sqlite",
            self.check_database,
            shown=envfile.masked_url(database) if database else "sqlite",
        )
        say(
            "Redis: 'none' to keep the queue in the database, "
            "or a redis://host:6379/0 URL"
        )
        redis_url = values["REDIS_URL"]
        values["REDIS_URL"] = ask(
            "Redis",
            redis_url or "none",
            self.check_redis,
            shown=envfile.masked_url(redis_url) if redis_url else "none",
        )
        values["EMBEDDING_MODEL"] = self.ask_model(values["EMBEDDING_MODEL"])
        values["WORKER_COUNT"] = ask(
            f"Worker processes (this machine has {os.cpu_count() or 1} CPUs)",
            values["WORKER_COUNT"],
            self.check_workers,
        )
        return values

    def ask_model(self, current: str) -> str:
        from collections_app.embedding import MODELS

        names = list(MODELS)
        self.prompter.say("Embedding models:")
        for number, name in enumerate(names, start=1):
            self.prompter.say(f"  {number}. {name}: {MODELS[name]}")

        def check(answer: str) -> str:
            if answer.isdigit() and 1 <= int(answer) <= len(names):
                return names[int(answer) - 1]
            if answer in MODELS:
                return answer
            raise ValueError(f"choose a number from 1 to {len(names)} or a name above")

        return self.prompter.ask("Embedding model", current, check)

    def ask_admin(self, values: Mapping[str, str]) -> tuple[setup_admin.Admin, bool]:
        """The admin's username, email and password; the bool says it is a new one."""
        probe = setup_admin.Probe(
            values["DATABASE_URL"], data_dir_path(values["DATA_DIR"])
        )
        given = self.environment.get(envfile.ADMIN_USERNAME) or self.existing.get(
            envfile.ADMIN_USERNAME, ""
        )
        default = given or next(iter(probe.superusers()), "admin")
        self.prompter.say()
        username = self.prompter.ask(
            "Admin username", default, setup_admin.check_username
        )
        email_default = self.environment.get(envfile.ADMIN_EMAIL) or self.existing.get(
            envfile.ADMIN_EMAIL, ""
        )
        email = self.prompter.ask(
            "Admin email (optional)", email_default, setup_admin.check_email
        )
        exists = bool(probe.exists(username))
        password = self.ask_password(username, email, keep_allowed=exists)
        if password is None:
            return setup_admin.Admin(username, email), False
        return setup_admin.Admin(
            username, email, setup_admin.hash_password(password)
        ), True

    def ask_password(self, username: str, email: str, keep_allowed: bool) -> str | None:
        question = (
            "Admin password (empty: keep the current one): "
            if keep_allowed
            else "Admin password: "
        )
        while True:
            password = self.prompter.secret(question)
            if not password:
                if keep_allowed:
                    return None
                self.prompter.error("a new admin user needs a password")
                continue
            if self.prompter.secret("Admin password again: ") != password:
                self.prompter.error("the two passwords differ")
                continue
            try:
                setup_admin.check_password(password, username, email)
            except ValueError as exc:
                self.prompter.error(str(exc))
                continue
            return password

    def show_summary(
        self, values: Mapping[str, str], admin: setup_admin.Admin, password_is_new: bool
    ) -> None:
        say = self.prompter.say
        say()
        say(f"Settings for {self.env_path}:")
        width = max(len(key.name) for key in envfile.KEYS)
        for key in envfile.KEYS:
            say(f"  {key.name:<{width}}  {self.shown(key, values)}")
        password = "new" if password_is_new else "unchanged"
        email = f" <{admin.email}>" if admin.email else ""
        say(f"  {'admin':<{width}}  {admin.username}{email}, password {password}")
        for key in envfile.KEYS:
            in_environment = self.environment.get(key.name)
            if in_environment is not None and in_environment != values[key.name]:
                say(
                    f"Note: {key.name} is also set in the environment, which wins "
                    f"over .env: unset it, or Quarry uses {in_environment!r}."
                )

    def shown(self, key: envfile.Key, values: Mapping[str, str]) -> str:
        value = values[key.name]
        if key.secret:
            origin = self.current[key.name].origin
            return "(generated)" if origin == "generated" else "(kept)"
        if key.name == "DATABASE_URL" and not value:
            return f"SQLite in {data_dir_path(values['DATA_DIR'])}"
        if key.name == "REDIS_URL" and not value:
            return "none (queue in the database)"
        return envfile.masked_url(value) if "://" in value else value

    def check_data_dir(self, answer: str) -> str:
        envfile.KEYS_BY_NAME["DATA_DIR"].check(answer)
        path = data_dir_path(answer)
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} exists and is not a folder")
        missing = [p for p in [path, *path.parents] if not p.exists()]
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"cannot create {path}: {exc.strerror}") from None
        self.created.extend(missing)
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"{path} is not writable by this user")
        return answer

    def check_roots(self, answer: str) -> str:
        roots = envfile.split_roots(answer)
        if not roots:
            raise ValueError("name at least one folder")
        checked = []
        for root in roots:
            path = Path(root).expanduser()
            if not path.is_absolute():
                raise ValueError(f"{root}: give the full path, starting with /")
            if not path.exists():
                raise ValueError(f"{path} does not exist")
            if not path.is_dir():
                raise ValueError(f"{path} is not a folder")
            if not os.access(path, os.R_OK | os.X_OK):
                raise ValueError(f"{path} is not readable by this user")
            checked.append(str(path))
        return ",".join(checked)

    def check_host(self, answer: str) -> str:
        try:
            bind(answer, 0)
        except socket.gaierror:
            raise ValueError(
                f"{answer!r} is not a known host name or address"
            ) from None
        except OSError as exc:
            raise ValueError(
                f"cannot listen on {answer}: {exc.strerror} "
                "(not an address of this machine?)"
            ) from None
        return answer

    def check_port(self, host: str, answer: str) -> str:
        port = envfile.KEYS_BY_NAME["WEB_PORT"].check(answer)
        try:
            bind(host, int(port))
        except OSError as exc:
            configured = self.current["WEB_PORT"]
            if port == configured.value and configured.origin != "default":
                self.prompter.say(
                    f"  Port {port} is in use, perhaps by Quarry itself; keeping it."
                )
                return port
            raise ValueError(
                f"cannot listen on {host}:{port}: {exc.strerror}; choose another port"
            ) from None
        return port

    def check_database(self, answer: str) -> str:
        if answer.lower() == "sqlite":
            return ""
        url = envfile.KEYS_BY_NAME["DATABASE_URL"].check(answer)
        if url.startswith("sqlite:"):
            import environ

            parent = Path(environ.Env.db_url_config(url)["NAME"]).parent
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ValueError(f"{parent} does not exist or is not writable")
            return url
        self.prompter.say("  Connecting...")
        try:
            with setup_admin.postgres_connection(url):
                pass
        except Exception as exc:  # noqa: BLE001 - any failure means: ask again
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"cannot connect: {first_line}") from None
        return url

    def check_redis(self, answer: str) -> str:
        if answer.lower() == "none":
            return ""
        url = envfile.KEYS_BY_NAME["REDIS_URL"].check(answer)
        import redis

        try:
            client = redis.Redis.from_url(
                url, socket_connect_timeout=3, socket_timeout=3
            )
            try:
                client.ping()
            finally:
                client.close()
        except (redis.RedisError, ValueError, OSError) as exc:
            raise ValueError(f"no answer from Redis: {exc}") from None
        return url

    def check_workers(self, answer: str) -> str:
        return envfile.KEYS_BY_NAME["WORKER_COUNT"].check(answer)

    def forget_unused_folders(self, keep: Path | None) -> None:
        kept = {keep, *keep.parents} if keep else set()
        for folder in sorted(
            set(self.created), key=lambda p: len(p.parts), reverse=True
        ):
            if folder in kept:
                continue
            try:
                folder.rmdir()
            except OSError:
                pass  # not empty, or already gone: leave it
