"""Health endpoints for load balancers and orchestrators; no login, no secrets.

`/healthz` says the web process answers. `/readyz` says it can do its work:
the database answers, the task broker answers, and a worker cluster reported
within `WORKER_SILENCE_SECONDS`. It answers 503 while any check fails. Error
texts go to the log (once per change of state), never into the response,
since they can name hosts and users.
"""

import logging
import threading
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)

# The cluster writes its stats every half second and they expire after 3 s,
# so a live cluster is never close to this bound.
WORKER_SILENCE_SECONDS = 30
REDIS_TIMEOUT_SECONDS = 2.0

_last_failing: frozenset[str] | None = None
_transition_lock = threading.Lock()


@dataclass
class Check:
    ok: bool
    detail: str = ""
    cause: str = ""  # for the log only
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        body = {"state": "ok" if self.ok else "failing"}
        if self.detail:
            body["detail"] = self.detail
        body.update(self.extra)
        return body


@require_safe
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive and serving requests."""
    return JsonResponse({"status": "ok"})


@require_safe
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Database, broker and a worker: each check's state; 503 if one fails."""
    checks = {"database": check_database(), "broker": check_broker()}
    checks["worker"] = check_worker(checks["broker"])
    ready = all(check.ok for check in checks.values())
    _log_transition(checks)
    response = JsonResponse(
        {
            "status": "ok" if ready else "failing",
            "checks": {name: check.to_dict() for name, check in checks.items()},
        },
        status=200 if ready else 503,
    )
    # The state is logged when it changes; Django would log an ERROR per poll.
    response._has_been_logged = True
    return response


def check_database() -> Check:
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return Check(False, "the database does not answer", _cause(exc))
    except ImproperlyConfigured as exc:
        # webui.sqlite refuses a connection whose PRAGMAs did not take effect.
        return Check(False, "the database settings are not in force", _cause(exc))
    return Check(True)


def check_broker() -> Check:
    if settings.REDIS_URL:
        return _check_redis()
    return _check_orm_broker()


def _check_redis() -> Check:
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
    )
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        return Check(False, "Redis does not answer", _cause(exc), {"kind": "redis"})
    finally:
        client.close()
    return Check(True, extra={"kind": "redis"})


def _check_orm_broker() -> Check:
    from django_q.models import OrmQ

    alias = settings.Q_CLUSTER.get("orm", "default")
    try:
        OrmQ.objects.using(alias).exists()
    except DatabaseError as exc:
        return Check(
            False, "the queue table does not answer", _cause(exc), {"kind": "database"}
        )
    return Check(True, extra={"kind": "database"})


def check_worker(broker: Check) -> Check:
    """A worker cluster reported within WORKER_SILENCE_SECONDS."""
    if not broker.ok:
        return Check(False, "unknown while the broker does not answer")
    from django_q.conf import Conf
    from django_q.status import Stat

    try:
        stats = Stat.get_all()
    except Exception as exc:  # noqa: BLE001 - cache and Redis raise many kinds
        return Check(False, "cluster stats cannot be read", _cause(exc))
    now = timezone.now()
    recent = [
        stat
        for stat in stats
        if stat.status not in (Conf.STOPPING, Conf.STOPPED)
        and (now - stat.timestamp).total_seconds() <= WORKER_SILENCE_SECONDS
    ]
    if not recent:
        return Check(
            False,
            f"no worker cluster reported in the last {WORKER_SILENCE_SECONDS} s",
            extra={"clusters": 0},
        )
    newest = max(stat.timestamp for stat in recent)
    return Check(
        True,
        extra={
            "clusters": len(recent),
            "last_report_seconds": round(max((now - newest).total_seconds(), 0.0), 1),
        },
    )


def _cause(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _log_transition(checks: dict[str, Check]) -> None:
    """One line when readiness changes, with what failed and why."""
    global _last_failing
    failing = frozenset(name for name, check in checks.items() if not check.ok)
    with _transition_lock:
        previous, _last_failing = _last_failing, failing
    if failing == previous or (previous is None and not failing):
        return
    if not failing:
        logger.info("Ready again: database, broker and worker all answer")
        return
    reasons = "; ".join(
        f"{name}: {check.detail}" + (f" ({check.cause})" if check.cause else "")
        for name, check in checks.items()
        if not check.ok
    )
    # Not being ready before the first worker reports is expected at start-up.
    log = logger.info if previous is None else logger.warning
    log("Not ready: %s", reasons)
