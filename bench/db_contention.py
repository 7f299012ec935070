"""SQLite under several writing processes while the web serves pages.

Run by hand from the project root (not part of the tests):

    .venv/bin/python bench/db_contention.py [--seconds 60] [--workers 4]
        [--interval 1] [--audit-every 10] [--clients 4] [--only NAME] [--keep]

For each configuration, Quarry's own and a naive one (rollback journal,
DEFERRED transactions, Django's default 5 s busy timeout), in one run:

1. Make a fresh DATA_DIR with its own SQLite file; a child process migrates it
   and creates a user, one collection and one pending operation per writer.
2. Start a real daphne on a free port against that database. The naive setup
   cannot be applied to daphne from outside, so daphne runs inside
   `bench/_contention_writer.py serve`, which patches the settings before the
   first connection. Both configurations use that same launcher and the same
   HTTP load generator, so their numbers compare.
3. Log N HTTP clients in through the login form (urllib, one cookie jar per
   thread); /metrics joins the pages when it answers 200 or 403.
4. Start --workers writer processes together, as a queue's workers handed
   several operations at once. Each claims its operation with
   `lifecycle.claim`, writes `lifecycle.Progress(op).update(force=True, ...)`
   about every --interval seconds (default 1 s, the real
   PROGRESS_INTERVAL_SECONDS; each writer has its own phase and drifts, as
   real workers do) plus an `audit.services.record_guarded` entry
   ("operation.requested", which nothing else writes for these operations, so
   the rows can be counted) every --audit-every progress writes, and ends with
   `lifecycle.finish`. Each of these is one transaction that reads the
   operation's row and then writes, as naive code (and `update_or_create`)
   does. The naive setup cannot survive that: a DEFERRED transaction that has
   read holds a SHARED lock, and its upgrade to the write lock while another
   connection writes fails at once with "database is locked", whatever the
   busy timeout. The same code runs in both configurations; only the
   database settings differ. At the real rate most naive errors come from
   the claims, which meet at the start; drifting progress writes collide
   about once in 20 s, so a longer run shows more of them.
   Meanwhile the clients GET /operations/, /collections/ and /metrics in a
   loop.
5. After --seconds, collect the writers' counts, the HTTP statuses and the
   tracebacks daphne logged, and compare the rows in the database with what
   the writers say they wrote. A writer counts a write only once its row is
   committed, because `Progress.update` and `record_guarded` log and swallow
   database errors; a write that left no row is an error, named by what was
   swallowed or raised.
Then print one table: "database is locked" errors and other errors for the
writers and the web, writes/s (committed progress and audit transactions
together) and pages/s, the ratio naive/quarry of writes/s, and every distinct
error with the project frames that raised it.

The settings of each configuration are read back from live connections of
the web and of every writer; the run stops if they are not what it meant to
measure. The machine may be busy with other work: compare the two rows of one
run, not numbers across runs.
"""

import argparse
import http.cookiejar
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = ROOT / "bench" / "_contention_writer.py"
NAIVE_ENV = "QUARRY_BENCH_NAIVE"
PAGES = ["/operations/", "/collections/"]
METRICS_PATHS = ["/metrics", "/metrics/"]
REQUEST_TIMEOUT = 60.0
LOCKED = "database is locked"

EXPECTED_PRAGMAS = {
    "quarry": {
        "journal_mode": "wal",
        "synchronous": 1,
        "transaction_mode": "IMMEDIATE",
    },
    "naive": {"journal_mode": "delete", "busy_timeout": 5000, "transaction_mode": None},
}


@dataclass
class WebTally:
    statuses: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    last_answer_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, path: str, outcome: str, seconds: float) -> None:
        with self.lock:
            self.statuses[outcome] += 1
            self.latencies.append(seconds)
            self.last_answer_at = max(self.last_answer_at, time.time())
            if outcome != "ok":
                self.failures[f"{path} -> {outcome}"] += 1


@dataclass
class Result:
    name: str
    seconds: float
    writer_counts: Counter
    writer_errors: Counter
    write_seconds: list[float]
    web: WebTally
    web_seconds: float
    web_errors: Counter
    pages: list[str]
    pragmas: dict
    database_check: str


def child_env(data_dir: Path, naive: bool) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("REDIS_URL", "DATABASE_URL", NAIVE_ENV)
    }
    env.update(
        SECRET_KEY="bench-only-secret-key-db-contention",
        DATA_DIR=str(data_dir),
        DOCUMENT_ROOTS=str(data_dir),
        DATABASE_URL=f"sqlite:///{data_dir / 'quarry.sqlite3'}",
        QUARRY_ENV_FILE=str(data_dir / "no.env"),
        DJANGO_SETTINGS_MODULE="webui.settings",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    if naive:
        env[NAIVE_ENV] = "1"
    return env


def run_child(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(CHILD), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise SystemExit(f"{args[0]} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def tagged(output: str, tag: str) -> object:
    for line in output.splitlines():
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1 :])
    raise SystemExit(f"no {tag} line in child output:\n{output[-2000:]}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"daphne exited:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"daphne did not answer on port {port}")


def check_pragmas(name: str, who: str, values: dict) -> None:
    wrong = {
        key: values.get(key)
        for key, want in EXPECTED_PRAGMAS[name].items()
        if values.get(key) != want
    }
    if name == "quarry" and int(values.get("busy_timeout", 0)) < 20000:
        wrong["busy_timeout"] = values.get("busy_timeout")
    if wrong:
        raise SystemExit(f"{name}: {who} runs with {wrong}, not the intended setup")


class Browser:
    """One signed-in HTTP client with its own cookies; no keep-alive."""

    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> tuple[str, str]:
        """(outcome, final path): outcome is "ok", an HTTP status or an error name."""
        try:
            with self.opener.open(
                self.base + path, timeout=REQUEST_TIMEOUT
            ) as response:
                response.read()
                final = urllib.parse.urlsplit(response.url).path
                return ("ok" if response.status == 200 else str(response.status)), final
        except urllib.error.HTTPError as exc:
            exc.read()
            return str(exc.code), path
        except OSError as exc:
            return type(exc).__name__, path

    def log_in(self, username: str, password: str) -> None:
        with self.opener.open(
            self.base + "/login/", timeout=REQUEST_TIMEOUT
        ) as response:
            page = response.read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        if not token:
            raise SystemExit("no CSRF token on the login page")
        form = urllib.parse.urlencode(
            {
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": token[1],
            }
        ).encode()
        with self.opener.open(
            self.base + "/login/", form, timeout=REQUEST_TIMEOUT
        ) as response:
            response.read()
            if urllib.parse.urlsplit(response.url).path.startswith("/login"):
                raise SystemExit("logging in failed")


def metrics_path(browser: Browser) -> str | None:
    for path in METRICS_PATHS:
        outcome, _ = browser.get(path)
        if outcome in ("ok", "403"):
            return path
    return None


def hammer(
    browser: Browser,
    pages: list[str],
    accepted: dict[str, set[str]],
    start_at: float,
    end_at: float,
    tally: WebTally,
) -> None:
    time.sleep(max(0.0, start_at - time.time()))
    number = 0
    while time.time() < end_at:
        path = pages[number % len(pages)]
        number += 1
        began = time.perf_counter()
        outcome, final = browser.get(path)
        if outcome == "ok" and final.startswith("/login"):
            outcome = "signed out"
        elif outcome in accepted.get(path, set()):
            outcome = "ok"
        tally.add(path, outcome, time.perf_counter() - began)


def web_errors(log: str) -> Counter:
    """Each logged error record: its last exception line and project frames."""
    errors: Counter = Counter()
    record_start = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ")
    access_line = re.compile(r"^\S+:\d+ - - \[")
    frame = re.compile(r'^\s+File "([^"]+)", line (\d+), in (\S+)')
    exception_line = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")
    records: list[list[str]] = []
    inside = False
    for line in log.splitlines():
        if record_start.match(line):
            records.append([line])
            inside = True
        elif access_line.match(line):
            inside = False
        elif inside:
            records[-1].append(line)
    for record in records:
        head = record[0]
        if " ERROR " not in head and " CRITICAL " not in head:
            continue
        frames, exception = [], head.split(": ", 1)[-1]
        for line in record[1:]:
            if match := frame.match(line):
                path = match[1]
                if path.startswith(str(ROOT)) and "/.venv/" not in path:
                    relative = Path(path).relative_to(ROOT)
                    frames.append(f"{relative}:{match[2]} {match[3]}")
            elif exception_line.match(line):
                exception = line
        where = " > ".join(dict.fromkeys(frames[-3:])) or "no project frame"
        logged = head.split(": ", 1)[-1][:60]
        errors[f"{exception} [{where}] ({logged})"] += 1
    return errors


def measure(name: str, data_dir: Path, args: argparse.Namespace) -> Result:
    naive = name == "naive"
    data_dir.mkdir(parents=True)
    env = child_env(data_dir, naive)
    ready_file = data_dir / "prepared.json"
    run_child(env, "prepare", str(ready_file), str(args.workers))
    prepared = json.loads(ready_file.read_text())
    check_pragmas(name, "the prepare step", prepared["pragmas"])

    port = free_port()
    daphne_log = data_dir / "daphne.log"
    web_pragmas = data_dir / "web-pragmas.json"
    with open(daphne_log, "w") as log:
        daphne = subprocess.Popen(
            [sys.executable, str(CHILD), "serve", str(port), str(web_pragmas)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    writers: list[subprocess.Popen] = []
    try:
        wait_for_port(port, daphne, daphne_log)
        check_pragmas(name, "daphne", json.loads(web_pragmas.read_text()))
        base = f"http://127.0.0.1:{port}"
        browsers = [Browser(base) for _ in range(args.clients)]
        for browser in browsers:
            browser.log_in(prepared["username"], prepared["password"])
        pages = list(PAGES)
        accepted: dict[str, set[str]] = {}
        if found := metrics_path(browsers[0]):
            pages.append(found)
            accepted[found] = {"403"}

        for number, operation_id in enumerate(prepared["operations"]):
            stderr = open(data_dir / f"writer-{number}.log", "w")
            writers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(CHILD),
                        "write",
                        operation_id,
                        str(args.seconds),
                        str(args.interval),
                        str(args.audit_every),
                    ],
                    cwd=ROOT,
                    env=env,
                    text=True,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                )
            )
            stderr.close()
        for writer in writers:
            line = writer.stdout.readline()
            if not line.startswith("READY "):
                raise SystemExit(f"a writer did not start; see {data_dir}/writer-*.log")
            check_pragmas(name, "a writer", json.loads(line[len("READY ") :]))

        # Everyone starts together, once the slowest child is ready.
        start_at = time.time() + 1.0
        end_at = start_at + args.seconds
        for writer in writers:
            writer.stdin.write(f"{start_at}\n")
            writer.stdin.flush()
        web = WebTally()
        threads = [
            threading.Thread(
                target=hammer, args=(browser, pages, accepted, start_at, end_at, web)
            )
            for browser in browsers
        ]
        for thread in threads:
            thread.start()
        outputs = []
        for writer in writers:
            out, _ = writer.communicate(timeout=args.seconds + 300)
            outputs.append(tagged(out, "RESULT"))
        for thread in threads:
            thread.join()
        web_seconds = max(web.last_answer_at, end_at) - start_at
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
        daphne.terminate()
        try:
            daphne.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daphne.kill()

    counts: Counter = Counter()
    errors: Counter = Counter()
    write_seconds: list[float] = []
    for output in outputs:
        counts.update(output["counts"])
        errors.update(output["errors"])
        write_seconds.extend(output["write_seconds"])
    writer_seconds = max(o["writes_ended_at"] for o in outputs) - start_at
    database = tagged(run_child(env, "summary"), "SUMMARY")
    in_db = Counter()
    for row in database.values():
        in_db["progress"] += row["progress_events"]
        in_db["audit"] += row["audit_entries"]
        in_db["completed"] += row["status"] == "completed"
    agrees = all(in_db[k] == counts.get(k, 0) for k in ("progress", "audit"))
    written = f"{counts.get('progress', 0)} / {counts.get('audit', 0)}"
    database_check = (
        f"database holds {in_db['progress']} progress events / {in_db['audit']} audit "
        f"entries, writers counted {written} "
        f"({'match' if agrees else 'MISMATCH'}); {in_db['completed']} of "
        f"{len(database)} operations completed"
    )
    return Result(
        name=name,
        seconds=writer_seconds,
        writer_counts=counts,
        writer_errors=errors,
        write_seconds=write_seconds,
        web=web,
        web_seconds=web_seconds,
        web_errors=web_errors(daphne_log.read_text(errors="replace")),
        pages=pages,
        pragmas=prepared["pragmas"],
        database_check=database_check,
    )


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@dataclass
class Row:
    writer_locked: int
    writer_other: int
    web_locked: int
    web_other: int
    http_500: int
    writes: int
    writes_per_s: float
    pages: int
    pages_per_s: float
    write_p95_ms: float
    write_max_ms: float
    page_p95_ms: float

    @property
    def errors(self) -> int:
        return self.writer_locked + self.writer_other + self.web_locked + self.web_other


def summarize(result: Result) -> Row:
    counts, web = result.writer_counts, result.web
    web_locked = sum(n for key, n in result.web_errors.items() if LOCKED in key)
    http_500 = web.statuses.get("500", 0)
    not_ok = sum(n for outcome, n in web.statuses.items() if outcome != "ok")
    writes = counts.get("progress", 0) + counts.get("audit", 0)
    pages = web.statuses.get("ok", 0)
    return Row(
        writer_locked=counts.get("locked", 0),
        writer_other=counts.get("other", 0),
        web_locked=web_locked,
        # A 500 whose logged traceback says "locked" is already counted as locked.
        web_other=not_ok - min(web_locked, http_500),
        http_500=http_500,
        writes=writes,
        writes_per_s=writes / result.seconds,
        pages=pages,
        pages_per_s=pages / result.web_seconds,
        write_p95_ms=1000 * percentile(result.write_seconds, 0.95),
        write_max_ms=1000 * max(result.write_seconds, default=float("nan")),
        page_p95_ms=1000 * percentile(web.latencies, 0.95),
    )


def report(results: list[Result], args: argparse.Namespace) -> None:
    offered = args.workers / args.interval * (1 + 1 / args.audit_every)
    print()
    print(
        f"{args.workers} writers, one progress write per {args.interval} s each plus "
        f"an audit entry every {args.audit_every} (offered ~{offered:.0f} writes/s); "
        f"{args.clients} HTTP clients on {', '.join(results[0].pages)}; "
        f"{args.seconds:.0f} s per configuration"
    )
    for result in results:
        p = result.pragmas
        print(
            f"  {result.name:<7} live connection: journal_mode={p['journal_mode']} "
            f"synchronous={p['synchronous']} busy_timeout={p['busy_timeout']} ms "
            f"transaction_mode={p['transaction_mode'] or 'DEFERRED (default)'}"
        )
    print()
    header = (
        f"{'configuration':<14}{'locked (wr/web)':>17}{'other (wr/web)':>16}"
        f"{'HTTP 500':>10}{'writes':>8}{'writes/s':>10}{'pages':>7}{'pages/s':>9}"
        f"{'write p95/max ms':>18}{'page p95 ms':>13}"
    )
    print(header)
    print("-" * len(header))
    rows = {result.name: summarize(result) for result in results}
    for name, row in rows.items():
        print(
            f"{name:<14}{f'{row.writer_locked} / {row.web_locked}':>17}"
            f"{f'{row.writer_other} / {row.web_other}':>16}{row.http_500:>10}"
            f"{row.writes:>8}{row.writes_per_s:>10.1f}{row.pages:>7}"
            f"{row.pages_per_s:>9.1f}"
            f"{f'{row.write_p95_ms:.0f} / {row.write_max_ms:.0f}':>18}"
            f"{row.page_p95_ms:>13.0f}"
        )
    print()
    if {"quarry", "naive"} <= rows.keys() and rows["quarry"].writes_per_s:
        ratio = rows["naive"].writes_per_s / rows["quarry"].writes_per_s
        print(f"writes/s naive/quarry: {ratio:.2f}")
    if "quarry" in rows:
        met = rows["quarry"].errors == 0
        print(f"target, quarry has 0 errors: {'met' if met else 'MISSED'}")
    if "naive" in rows:
        seen = rows["naive"].writer_locked + rows["naive"].web_locked > 0
        print(
            "target, naive shows 'database is locked': "
            + ("met" if seen else "MISSED (the benchmark did not see the failure)")
        )
    for result in results:
        print(f"{result.name}: {result.database_check}")
    for result in results:
        lines = [
            *(
                f"  writers {n:>5} x {key}"
                for key, n in result.writer_errors.most_common()
            ),
            *(
                f"  web     {n:>5} x {key}"
                for key, n in result.web_errors.most_common()
            ),
            *(
                f"  clients {n:>5} x {key}"
                for key, n in result.web.failures.most_common()
            ),
        ]
        print(f"\nErrors, {result.name}: {'none' if not lines else ''}")
        for line in lines:
            print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=4, help="writer processes")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between progress writes"
    )
    parser.add_argument("--audit-every", type=int, default=10)
    parser.add_argument(
        "--clients", type=int, default=4, help="concurrent HTTP clients"
    )
    parser.add_argument(
        "--only", choices=["quarry", "naive"], help="measure one configuration"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data and logs")
    args = parser.parse_args()

    names = [args.only] if args.only else ["quarry", "naive"]
    top = Path(tempfile.mkdtemp(prefix="quarry-contention-"))
    results = []
    try:
        for name in names:
            print(f"measuring {name} ({args.seconds:.0f} s) ...", flush=True)
            results.append(measure(name, top / name, args))
        report(results, args)
    finally:
        if args.keep:
            print(f"\ndata and logs kept in {top}")
        else:
            import shutil

            shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
