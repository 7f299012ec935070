"""One scrape per host: the /metrics view, who may read it, and the metric files.

Every Quarry process on a host (web, the queue's forked workers, commands)
writes its metrics into PROMETHEUS_MULTIPROC_DIR, which the settings export
before prometheus_client is imported. A scrape adds the files up, after
dropping the live gauges of processes that are gone, and the web process adds
the queue gauges read from the database. `manage.py metrics_exporter` serves
the same files (without the database gauges) on hosts that run no web process.

All processes sharing the directory must share one PID namespace (one host,
or one container), since the files are named by process id.
"""

import contextlib
import fcntl
import hmac
import ipaddress
import logging
import os
import re
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

import prometheus_client
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Min
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict

from operations.models import Operation

logger = logging.getLogger(__name__)

_METRIC_FILE = re.compile(r"^(?:counter|histogram|summary|gauge_[a-z]+)_(\d+)\.db$")
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")
FORGET_AFTER_SECONDS = 10.0
# The process id in the names of the files that hold exited processes' counts;
# no process has it.
FOLDED_PID = 0
# Refused addresses are logged once each; the bound keeps a scan from growing it.
_REFUSALS_REMEMBERED = 256
_refused: set[tuple[str, str]] = set()
_seen_exited: dict[int, float] = {}
_state_lock = threading.Lock()
_warned_single_process = False
_queue_failing = False


def multiprocess_directory() -> Path:
    return Path(
        os.environ.get("PROMETHEUS_MULTIPROC_DIR", settings.PROMETHEUS_MULTIPROC_DIR)
    )


def multiprocess_active() -> bool:
    """True when this process writes its metrics to the shared directory.

    False means prometheus_client was imported before the settings ran, so
    this process's metrics would reach no scrape but its own.
    """
    return bool(getattr(prometheus_client.values.ValueClass, "_multiprocess", False))


def writer_alive(pid: int, path: Path) -> bool:
    """Whether the process that wrote a metric file still runs.

    A process with that id which started after the file was last written is
    another process that reused the id (after a reboot, say), not the writer.
    """
    fields = _proc_stat(pid)
    if fields is None:
        return _signal_reaches(pid)
    if not fields or fields[0] in ("Z", "X"):
        return False
    started = _start_time(fields)
    try:
        written = path.stat().st_mtime
    except FileNotFoundError:
        return True
    # One second of slack: start times are rounded to clock ticks and boot time.
    return started is None or started <= written + 1


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name; [] when the
    process is gone; None where /proc cannot tell."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return [] if Path("/proc/self/stat").exists() else None
    except OSError:
        return None
    # The command name is in parentheses and may itself hold ")".
    return text.rpartition(")")[2].split()


def _start_time(fields: list[str]) -> float | None:
    try:
        ticks = int(fields[19])
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (IndexError, ValueError, StopIteration, OSError):
        return None


def _signal_reaches(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class HostCollector:
    """Every process's metrics from the directory, less the live gauges of
    processes that have exited."""

    def __init__(self, directory: Path):
        self.directory = directory

    def collect(self) -> Iterable[Metric]:
        with _directory_lock(self.directory) as exclusive:
            if exclusive:
                fold_exited_counts(self.directory)
            for attempt in range(3):
                try:
                    return self._merge()
                except struct.error:
                    # A process was creating its file as it was read (empty
                    # for an instant); a moment later it has its header.
                    time.sleep(0.01 * (attempt + 1))
            return self._merge()

    def _merge(self) -> Iterable[Metric]:
        files, exited = [], set()
        for path in self.directory.glob("*.db"):
            match = _LIVE_GAUGE_FILE.match(path.name)
            if match and not writer_alive(int(match.group(1)), path):
                exited.add(int(match.group(1)))
            else:
                files.append(str(path))
        forget_exited(self.directory, exited)
        return multiprocess.MultiProcessCollector.merge(files, accumulate=True)


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[bool]:
    """Held while files are read; True when this scrape may also fold files.

    Folding moves counts between files, so a reader must never see a file
    both before and after (a counter would seem to jump, then fall back).
    """
    with open(directory / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            exclusive = True
        except BlockingIOError:
            fcntl.flock(handle, fcntl.LOCK_SH)
            exclusive = False
        try:
            yield exclusive
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fold_exited_counts(directory: Path) -> int:
    """Add the counters and histograms of exited processes into one file each.

    Every command run (`collections list`, a search) leaves a file named by
    its process id; without this the folder, and the time a scrape takes,
    would grow with every command until the next `make run`. Call with the
    directory lock held exclusively. Returns how many files were folded.
    """
    folded = 0
    for kind in ("counter", "histogram"):
        exited = [
            path
            for path in directory.glob(f"{kind}_*.db")
            if (match := _METRIC_FILE.match(path.name))
            and int(match.group(1)) not in (FOLDED_PID, os.getpid())
            and not writer_alive(int(match.group(1)), path)
        ]
        if not exited:
            continue
        target = directory / f"{kind}_{FOLDED_PID}.db"
        scratch = directory / f".{kind}_{FOLDED_PID}.db.new"
        scratch.unlink(missing_ok=True)
        totals: dict[str, float] = {}
        for path in [target, *exited] if target.exists() else exited:
            for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
                totals[key] = totals.get(key, 0.0) + value
        merged = MmapedDict(str(scratch))
        for key, value in totals.items():
            merged.write_value(key, value, 0.0)
        merged.close()
        # Replaced first, so no count is ever lost. Known limit: a scraper
        # killed between this line and the next leaves the exited files to be
        # folded a second time, which doubles their counts for good.
        os.replace(scratch, target)
        for path in exited:
            path.unlink(missing_ok=True)
        folded += len(exited)
    if folded:
        logger.debug("Folded the metric files of %d exited processes", folded)
    return folded


def forget_exited(directory: Path, exited: set[int]) -> None:
    """Delete the live gauge files of processes seen exited FORGET_AFTER_SECONDS ago.

    Not at once: the queue's cluster deletes the files of a worker it replaces
    right after reaping it, and two deletions racing would raise in the
    cluster. Deleting them at all keeps a later process that reuses the id
    from starting with the old values.
    """
    now = time.monotonic()
    with _state_lock:
        for pid in set(_seen_exited) - exited:
            del _seen_exited[pid]
        due = [
            pid
            for pid in exited
            if now - _seen_exited.setdefault(pid, now) >= FORGET_AFTER_SECONDS
        ]
        for pid in due:
            del _seen_exited[pid]
    for pid in due:
        with contextlib.suppress(FileNotFoundError):
            multiprocess.mark_process_dead(pid, str(directory))
        logger.debug("Deleted the live gauges of process %d, which has exited", pid)


def clear_directory(directory: Path) -> int:
    """Delete every metric file, for a launcher about to start a host's processes.

    Refuses (ValueError naming the processes) while a process other than this
    one still writes there: its counters would vanish from every scrape.
    """
    files = {
        path: int(match.group(1))
        for path in directory.glob("*.db")
        if (match := _METRIC_FILE.match(path.name))
    }
    alive = sorted(
        {
            pid
            for path, pid in files.items()
            if pid != os.getpid() and writer_alive(pid, path)
        }
    )
    if alive:
        raise ValueError(
            f"processes {', '.join(map(str, alive))} still write metrics to "
            f"{directory}; stop them first"
        )
    for path in files:
        path.unlink(missing_ok=True)
    return len(files)


class QueueCollector:
    """Queue depth and the age of the oldest pending operation, read at scrape time.

    Values come from the database, so they are the same on every web host.
    """

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            depth, oldest = _queue_state()
        except DatabaseError as exc:
            _note_queue_failure(exc)
            return
        _note_queue_success()
        age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
        yield GaugeMetricFamily(
            "quarry_queue_depth", "Operations waiting for a worker", value=depth
        )
        yield GaugeMetricFamily(
            "quarry_queue_oldest_pending_age_seconds",
            "Seconds the oldest pending operation has waited; 0 when none waits",
            value=max(age, 0.0),
        )


def _queue_state() -> tuple[int, datetime | None]:
    summary = Operation.objects.filter(status=Operation.Status.PENDING).aggregate(
        depth=Count("id"), oldest=Min("created_at")
    )
    return summary["depth"], summary["oldest"]


def _note_queue_failure(exc: Exception) -> None:
    global _queue_failing
    with _state_lock:
        first, _queue_failing = not _queue_failing, True
    if first:
        logger.warning(
            "Metrics: queue gauges left out of the scrape, the database did not "
            "answer (%s: %s)",
            type(exc).__name__,
            exc,
        )


def _note_queue_success() -> None:
    global _queue_failing
    with _state_lock:
        recovered, _queue_failing = _queue_failing, False
    if recovered:
        logger.info("Metrics: queue gauges are back in the scrape")


def host_registry(*, include_queue: bool) -> CollectorRegistry:
    """A registry holding every process's metrics on this host."""
    global _warned_single_process
    registry = CollectorRegistry()
    if multiprocess_active():
        registry.register(HostCollector(multiprocess_directory()))
    else:
        if not _warned_single_process:
            _warned_single_process = True
            logger.warning(
                "Metrics: prometheus_client was imported before the settings set "
                "PROMETHEUS_MULTIPROC_DIR; serving this process's metrics only"
            )
        registry.register(_ThisProcess())
    if include_queue:
        registry.register(QueueCollector())
    return registry


class _ThisProcess:
    """The default registry of this process, for when no directory is shared."""

    def collect(self):
        return prometheus_client.REGISTRY.collect()


def exposition(*, include_queue: bool) -> bytes:
    return generate_latest(host_registry(include_queue=include_queue))


def client_may_scrape(
    remote_addr: str | None, authorization: str | None, forwarded: bool
) -> tuple[bool, str]:
    """Whether a client may read metrics, and why not.

    Allowed: a bearer token equal to METRICS_TOKEN (when one is set), or a
    direct connection from METRICS_ALLOWED_IPS. A request that carries
    X-Forwarded-For is not judged by address: daphne runs with
    --proxy-headers and takes the client address from that header, which
    anyone can write.
    """
    if _token_matches(authorization):
        return True, ""
    if forwarded:
        return False, (
            "it came through a proxy (X-Forwarded-For), so only a bearer token "
            "counts; give the scraper METRICS_TOKEN"
        )
    if _address_allowed(remote_addr):
        return True, ""
    return False, (
        "its address is not in METRICS_ALLOWED_IPS and it sent no valid bearer "
        "token; allow the address or give the scraper METRICS_TOKEN"
    )


def _token_matches(authorization: str | None) -> bool:
    expected = settings.METRICS_TOKEN
    if not expected or not authorization:
        return False
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def _address_allowed(remote_addr: str | None) -> bool:
    try:
        address = ipaddress.ip_address((remote_addr or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    for allowed in settings.METRICS_ALLOWED_IPS:
        network = ipaddress.ip_network(allowed, strict=False)
        if address.version == network.version and address in network:
            return True
    return False


def log_refusal(remote_addr: str | None, reason: str, where: str) -> None:
    """Log a refused scrape once per address and reason; repeats go to DEBUG."""
    key = (remote_addr or "unknown", reason)
    with _state_lock:
        first = key not in _refused and len(_refused) < _REFUSALS_REMEMBERED
        if first:
            _refused.add(key)
    log = logger.warning if first else logger.debug
    log(
        "Refused a metrics scrape at %s from %s: %s",
        where,
        remote_addr or "an unknown address",
        reason,
    )


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """This host's metrics in Prometheus text format, for allowed scrapers only."""
    remote_addr = request.META.get("REMOTE_ADDR")
    allowed, reason = client_may_scrape(
        remote_addr,
        request.headers.get("Authorization"),
        forwarded="HTTP_X_FORWARDED_FOR" in request.META,
    )
    if not allowed:
        log_refusal(remote_addr, reason, request.path)
        response = HttpResponse(
            "Forbidden: metrics answer only to METRICS_ALLOWED_IPS or a bearer "
            "token.\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
        # Logged above, once per client; Django would add a WARNING per scrape.
        response._has_been_logged = True
        return response
    return HttpResponse(
        exposition(include_queue=True),
        content_type=prometheus_client.CONTENT_TYPE_LATEST,
    )
