"""The child processes of `bench/db_contention.py`, one role per invocation.

Not meant to be run by hand. Every role sets Django up from the environment
the benchmark passes (its own DATA_DIR and DATABASE_URL), then:

1. `prepare OUT`: migrate a fresh database and create the user, one collection
   and one pending operation per writer; the ids go to OUT as JSON.
2. `write OPERATION_ID SECONDS INTERVAL AUDIT_EVERY`: print READY, wait for a
   start time on stdin, claim the operation (`lifecycle.claim`), write progress
   with `lifecycle.Progress.update(force=True)` about every INTERVAL seconds
   plus an audit entry (`audit.services.record_guarded`) every AUDIT_EVERY
   progress writes, end with `lifecycle.finish`, and print one RESULT line of
   JSON. Each of these is one transaction that reads the operation's row
   first and then writes (`read_then_write`), as naive code does. A progress
   write or audit entry counts only once its row is committed (`on_commit`),
   because `Progress.update` and `record_guarded` log and swallow database
   errors; one that left no row is an error, named by what was swallowed.
3. `serve PORT PRAGMAS_OUT`: run daphne on webui.asgi in this process, after
   writing the PRAGMAs of a live connection to PRAGMAS_OUT.
4. `summary`: print what the database holds per operation, once all is quiet.

With QUARRY_BENCH_NAIVE=1 in the environment (set by the benchmark for its
own children only), every role first turns the database settings into a naive
SQLite setup: rollback journal, DEFERRED transactions, 5 s busy timeout, and
Quarry's start-up check switched off because it would refuse exactly that.
"""

import json
import logging
import os
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NAIVE_ENV = "QUARRY_BENCH_NAIVE"
USERNAME = "bench"
PASSWORD = "bench-contention-pw-1"
# Periodic entries use an action no other code writes for these operations,
# so the summary can count exactly the ones the writer wrote.
PERIODIC_AUDIT_ACTION = "operation.requested"
FINISH_ATTEMPTS = 5


def setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webui.settings")
    import django

    django.setup()
    if os.environ.get(NAIVE_ENV) == "1":
        make_naive()


def make_naive() -> None:
    """Patch the shared settings dict before any connection opens.

    Every thread's connection is built from this same dict, so daphne's
    request threads get the naive options too.
    """
    from django.db import connection
    from django.db.backends.signals import connection_created

    connection_created.disconnect(dispatch_uid="quarry-sqlite-pragmas")
    options = connection.settings_dict["OPTIONS"]
    options.pop("transaction_mode", None)
    options["init_command"] = "PRAGMA journal_mode=DELETE"
    options["timeout"] = 5


def live_pragmas() -> dict[str, object]:
    """What a real connection runs with; options can be silently ignored."""
    from django.db import connection

    from webui.sqlite import read_pragmas

    connection.ensure_connection()
    values = read_pragmas(connection)
    values["journal_mode"] = str(values["journal_mode"]).lower()
    values["transaction_mode"] = connection.transaction_mode
    return values


def emit(tag: str, value: object) -> None:
    print(f"{tag} {json.dumps(value)}", flush=True)


def error_key(exc: BaseException) -> str:
    """The error and the innermost project frames that led to it."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if frame.filename.startswith(str(ROOT))
        and "/.venv/" not in frame.filename
        and "/bench/" not in frame.filename
    ]
    where = " > ".join(
        f"{Path(f.filename).relative_to(ROOT)}:{f.lineno} {f.name}" for f in frames[-3:]
    )
    return f"{type(exc).__name__}: {exc} [{where or 'no project frame'}]"


class LostAuditEntries(logging.Handler):
    """Collects what `record_guarded` logs when it swallows a failed write."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        _, _, entry = message.partition("entry: ")
        try:
            error = json.loads(entry).get("error", message)
        except ValueError:
            error = message
        self.errors.append(
            f"{error} [audit/services.py record_guarded, swallowed and logged]"
        )


class Tally:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.write_seconds: list[float] = []

    def failed(self, key: str) -> None:
        self.counts["locked" if "database is locked" in key else "other"] += 1
        self.errors[key] += 1

    def committed(self, kind: str) -> None:
        self.counts[kind] += 1


def count_commits(tally: Tally) -> None:
    """Count each progress event and periodic audit entry once it is committed.

    `on_commit` inside a savepoint is dropped when the savepoint rolls back, so
    a row that never reached the database is never counted.
    """
    from django.db import transaction
    from django.db.models.signals import post_save

    from audit.models import AuditLog
    from operations.models import OperationEvent

    def on_event(sender, instance, created: bool, **kwargs) -> None:
        if created and instance.kind == "progress":
            transaction.on_commit(lambda: tally.committed("progress"))

    def on_entry(sender, instance, created: bool, **kwargs) -> None:
        if created and instance.action == PERIODIC_AUDIT_ACTION:
            transaction.on_commit(lambda: tally.committed("audit"))

    post_save.connect(on_event, sender=OperationEvent, weak=False)
    post_save.connect(on_entry, sender=AuditLog, weak=False)


def watched_progress(operation):
    """A `Progress` that keeps the error its `update` logs and swallows."""
    from operations import lifecycle

    class WatchedProgress(lifecycle.Progress):
        swallowed: BaseException | None = None

        def flush(self) -> None:
            try:
                super().flush()
            except Exception as exc:
                self.swallowed = exc
                raise

    return WatchedProgress(operation)


def read_then_write(operation_id: str, write):
    """Read the operation's row, then return `write()`, in one transaction."""
    from django.db import transaction

    from operations.models import Operation

    with transaction.atomic():
        Operation.objects.filter(id=operation_id).values_list(
            "status", "cancel_requested"
        ).get()
        return write()


def settle(tally: Tally, kind: str, before: int, causes: list[str]) -> None:
    """Count a failure of `kind` unless a row of it was committed since `before`."""
    if tally.counts[kind] == before:
        cause = causes[0] if causes else f"no {kind} row committed and no error seen"
        tally.failed(f"{kind}: {cause}")


def prepare(out: Path, workers: int) -> None:
    setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from collections_app.models import Collection
    from operations.models import Operation

    call_command("migrate", verbosity=0, interactive=False)
    user = get_user_model().objects.create_user(USERNAME, password=PASSWORD)
    operations = []
    for number in range(workers):
        collection = Collection.objects.create(owner=user, name=f"contention-{number}")
        operation = Operation.objects.create(
            collection=collection,
            collection_name=collection.name,
            owner=user,
            type=Operation.Type.INDEX,
            requested_by=user,
        )
        operations.append(str(operation.id))
    out.write_text(
        json.dumps(
            {
                "username": USERNAME,
                "password": PASSWORD,
                "operations": operations,
                "pragmas": live_pragmas(),
            }
        )
    )


def claim(operation_id: str, deadline: float, tally: Tally):
    from operations import lifecycle

    while time.time() < deadline:
        try:
            operation = read_then_write(
                operation_id, lambda: lifecycle.claim(operation_id)
            )
        except Exception as exc:  # noqa: BLE001 - counted, then tried again
            tally.failed("claim: " + error_key(exc))
            time.sleep(0.1)
            continue
        if operation is None:
            raise SystemExit(f"operation {operation_id} was already claimed")
        return operation
    return None


def write(operation_id: str, seconds: float, interval: float, audit_every: int) -> None:
    setup()
    from operations import lifecycle

    lost = LostAuditEntries()
    logging.getLogger("audit.services").addHandler(lost)
    tally = Tally()
    count_commits(tally)
    emit("READY", live_pragmas())
    start_at = float(sys.stdin.readline())
    time.sleep(max(0.0, start_at - time.time()))
    deadline = start_at + seconds

    operation = claim(operation_id, deadline, tally)
    writes_ended_at = time.time()
    if operation is not None:
        progress = watched_progress(operation)
        total = max(1, int(seconds / interval))
        # Workers are not in step: each starts at its own moment and drifts.
        beat = time.time() + random.uniform(0, interval)
        time.sleep(max(0.0, beat - time.time()))
        done = 0
        while time.time() < deadline:
            done += 1
            write_progress(operation_id, progress, tally, total=total, done=done)
            if done % audit_every == 0:
                write_audit(operation, done, tally, lost)
            # The cadence is kept, so a slow write is not followed by a fast one.
            beat += interval * random.uniform(0.5, 1.5)
            time.sleep(max(0.0, beat - time.time()))
        writes_ended_at = time.time()
        for _ in range(FINISH_ATTEMPTS):
            try:
                read_then_write(
                    operation_id, lambda: lifecycle.finish(operation, "completed")
                )
            except Exception as exc:  # noqa: BLE001 - counted, then tried again
                tally.failed("finish: " + error_key(exc))
                time.sleep(0.5)
            else:
                tally.counts["finished"] += 1
                break
    emit(
        "RESULT",
        {
            "counts": dict(tally.counts),
            "errors": dict(tally.errors),
            "write_seconds": sorted(tally.write_seconds),
            "started_at": start_at,
            "writes_ended_at": writes_ended_at,
        },
    )


def write_progress(operation_id: str, progress, tally: Tally, **fields) -> None:
    before = tally.counts["progress"]
    progress.swallowed = None
    raised = None
    began = time.perf_counter()
    try:
        read_then_write(
            operation_id,
            lambda: progress.update(force=True, step="embedding", **fields),
        )
    except Exception as exc:  # noqa: BLE001 - the count is the point
        raised = exc
    tally.write_seconds.append(time.perf_counter() - began)
    causes = [error_key(raised)] if raised else []
    if progress.swallowed is not None:
        causes.insert(0, error_key(progress.swallowed) + " (swallowed by update)")
    settle(tally, "progress", before, causes)


def write_audit(operation, done: int, tally: Tally, lost: LostAuditEntries) -> None:
    from audit.services import record_guarded

    before, logged = tally.counts["audit"], len(lost.errors)
    raised = None
    began = time.perf_counter()
    try:
        read_then_write(
            str(operation.id),
            lambda: record_guarded(
                PERIODIC_AUDIT_ACTION,
                operation=operation,
                collection=operation.collection,
                details={"benchmark": "db_contention", "done": done},
            ),
        )
    except Exception as exc:  # noqa: BLE001 - the count is the point
        raised = exc
    tally.write_seconds.append(time.perf_counter() - began)
    causes = lost.errors[logged:] + ([error_key(raised)] if raised else [])
    settle(tally, "audit", before, causes)


def serve(port: int, pragmas_out: Path) -> None:
    # daphne installs its asyncio reactor on import; that has to come first.
    from daphne.cli import CommandLineInterface

    setup()
    from django.db import connection

    pragmas_out.write_text(json.dumps(live_pragmas()))
    connection.close()
    CommandLineInterface().run(
        ["-b", "127.0.0.1", "-p", str(port), "webui.asgi:application"]
    )


def summary() -> None:
    setup()
    from django.db.models import Count, Q

    from audit.models import AuditLog
    from operations.models import Operation

    rows = {}
    for operation in Operation.objects.annotate(
        progress_events=Count("events", filter=Q(events__kind="progress"))
    ):
        rows[str(operation.id)] = {
            "status": operation.status,
            "progress_events": operation.progress_events,
            "audit_entries": AuditLog.objects.filter(
                operation_uuid=operation.id, action=PERIODIC_AUDIT_ACTION
            ).count(),
        }
    emit("SUMMARY", rows)


def main() -> None:
    role, args = sys.argv[1], sys.argv[2:]
    if role == "prepare":
        prepare(Path(args[0]), int(args[1]))
    elif role == "write":
        write(args[0], float(args[1]), float(args[2]), int(args[3]))
    elif role == "serve":
        serve(int(args[0]), Path(args[1]))
    elif role == "summary":
        summary()
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main()
