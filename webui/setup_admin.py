"""The admin user `manage.py setup` creates or updates, and the checks on its fields.

The password travels from the questions to the database as a hash: the step
that writes it runs in a fresh process (see the setup command).
"""

import json
import sqlite3
from collections.abc import Mapping
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.hashers import make_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from webui import envfile

HOW_TO_ADD = (
    "set QUARRY_ADMIN_USERNAME and QUARRY_ADMIN_PASSWORD and run "
    "`python manage.py setup --noinput` again, or run "
    "`python manage.py createsuperuser`"
)


@dataclass(frozen=True)
class Admin:
    username: str = ""
    email: str = ""
    # None keeps the password of an existing user, and creates no new user.
    password_hash: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Admin":
        return cls(**json.loads(text)) if text.strip() else cls()


def check_username(value: str) -> str:
    user_model = get_user_model()
    field = user_model._meta.get_field(user_model.USERNAME_FIELD)
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    if field.max_length and len(value) > field.max_length:
        raise ValueError(f"must be at most {field.max_length} characters")
    try:
        for validator in field.validators:
            validator(value)
    except ValidationError as exc:
        raise ValueError(" ".join(exc.messages)) from None
    return value


def check_email(value: str) -> str:
    value = value.strip()
    if value:
        try:
            validate_email(value)
        except ValidationError:
            raise ValueError(f"{value!r} is not an email address") from None
    return value


def check_password(password: str, username: str, email: str) -> None:
    """Django's password validators, run against the user the password is for."""
    user = get_user_model()(username=username, email=email)
    try:
        password_validation.validate_password(password, user)
    except ValidationError as exc:
        raise ValueError(" ".join(exc.messages)) from None


def hash_password(password: str) -> str:
    return make_password(password)


def from_values(
    environment: Mapping[str, str], existing: Mapping[str, str]
) -> tuple[Admin, list[envfile.InvalidValue]]:
    """The admin asked for by QUARRY_ADMIN_* (environment, then .env), checked."""

    def value(name: str) -> str:
        return environment.get(name) or existing.get(name) or ""

    username = value(envfile.ADMIN_USERNAME).strip()
    email = value(envfile.ADMIN_EMAIL).strip()
    password = value(envfile.ADMIN_PASSWORD)
    if password and not username:
        username = "admin"
    problems: list[envfile.InvalidValue] = []
    checks = [(envfile.ADMIN_USERNAME, lambda: username and check_username(username))]
    checks.append((envfile.ADMIN_EMAIL, lambda: check_email(email)))
    if password:
        checks.append(
            (envfile.ADMIN_PASSWORD, lambda: check_password(password, username, email))
        )
    for name, check in checks:
        try:
            check()
        except ValueError as exc:
            problems.append(envfile.InvalidValue(name, str(exc)))
    if problems or not password:
        return Admin(username, email), problems
    return Admin(username, email, hash_password(password)), problems


def apply(admin: Admin) -> str:
    """Create or update the admin in the configured database; say what happened."""
    user_model = get_user_model()
    user = (
        user_model.objects.filter(username=admin.username).first()
        if admin.username
        else None
    )
    if user is None and admin.password_hash:
        user = user_model(username=admin.username)
    if user is None and admin.username:
        return f"No admin user {admin.username!r} created (no password): {HOW_TO_ADD}."
    if user is None:
        superusers = list(
            user_model.objects.filter(is_superuser=True).values_list(
                "username", flat=True
            )
        )
        if superusers:
            return f"Admin users unchanged: {', '.join(superusers)}."
        return f"No admin user created: {HOW_TO_ADD}."
    created = user.pk is None
    user.is_staff = user.is_superuser = user.is_active = True
    if admin.email:
        user.email = admin.email
    if admin.password_hash:
        user.password = admin.password_hash
    user.save()
    if created:
        return f"Admin user {user.username!r} created."
    if admin.password_hash:
        return f"Admin user {user.username!r} updated, with the new password."
    return f"Admin user {user.username!r} kept; its password is unchanged."


class Probe:
    """Read-only look at the users of a database that is not configured yet."""

    def __init__(self, database_url: str, data_dir: Path):
        self.database_url = database_url
        self.data_dir = data_dir

    def superusers(self) -> list[str]:
        rows = self._query("is_superuser", True)
        return [row[0] for row in rows or []]

    def exists(self, username: str) -> bool | None:
        rows = self._query("username", username)
        return None if rows is None else bool(rows)

    def _query(self, column: str, value: object) -> list[tuple] | None:
        """Usernames where column = value; [] without users, None when unknown."""
        user_model = get_user_model()
        table = user_model._meta.db_table
        name_column = user_model._meta.get_field(user_model.USERNAME_FIELD).column
        sql = (
            f'SELECT "{name_column}" FROM "{table}" WHERE "{column}" = {{}} '
            f'ORDER BY "{user_model._meta.pk.column}"'
        )
        try:
            if self._sqlite_path() is not None:
                return self._sqlite(sql.format("?"), value)
            return self._postgres(sql.format("%s"), value)
        except Exception:  # noqa: BLE001 - unknown just means "ask as for a new user"
            return None

    def _sqlite_path(self) -> Path | None:
        if not self.database_url:
            return self.data_dir / "quarry.sqlite3"
        if self.database_url.startswith("sqlite:"):
            import environ

            return Path(environ.Env.db_url_config(self.database_url)["NAME"])
        return None

    def _sqlite(self, sql: str, value: object) -> list[tuple]:
        path = self._sqlite_path()
        if path is None or not path.is_file():
            return []
        # Read-only, so looking never creates or changes the file.
        uri = f"{path.as_uri()}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
            try:
                return db.execute(sql, (value,)).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise

    def _postgres(self, sql: str, value: object) -> list[tuple]:
        import psycopg

        with postgres_connection(self.database_url) as db:
            try:
                return db.execute(sql, (value,)).fetchall()
            except psycopg.errors.UndefinedTable:
                return []


def postgres_connection(url: str, timeout: int = 5):
    """A psycopg connection to a postgres:// URL, parsed as the settings parse it."""
    import environ
    import psycopg

    config = environ.Env.db_url_config(url)
    params = {
        "dbname": config.get("NAME"),
        "user": config.get("USER"),
        "password": config.get("PASSWORD"),
        "host": config.get("HOST"),
        "port": config.get("PORT"),
    }
    params = {key: str(value) for key, value in params.items() if value}
    params.update({key: str(value) for key, value in config.get("OPTIONS", {}).items()})
    return psycopg.connect(connect_timeout=timeout, **params)
