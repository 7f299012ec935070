"""Run the task queue's cluster under supervision, as the Procfile's worker.

0. Wait until the task broker answers (Redis may start after the worker).
1. Fail operations orphaned by a crash, and queue those whose enqueue failed.
2. Start `manage.py qcluster` as a child in a process group of its own.
   Process managers such as honcho stop a process by signalling its whole
   group; Django-Q2's sentinel and workers die at once on such a SIGTERM and
   leave the cluster's parent waiting for them forever. Here only this
   process gets that signal.
3. On SIGINT or SIGTERM: create the stop file, which a running operation
   checks between files (it then ends as failed, saying the worker was
   stopped), and send SIGTERM to the cluster's parent alone, which stops its
   processes in order.
4. Exit with the cluster's exit status.
"""

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connections

from operations import shutdown
from operations.lifecycle import requeue_unqueued, sweep_stale
from webui.health import check_broker

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
BROKER_WAIT_SECONDS = 2.0


class Command(BaseCommand):
    help = "Sweep stale operations, then run `qcluster` until asked to stop."

    def handle(self, *args, **options) -> None:
        if not _broker_answers():
            return
        swept = sweep_stale()
        if swept:
            logger.info("Marked %d stale operation(s) as failed before starting", swept)
        requeue_unqueued()
        connections.close_all()

        stop_file = Path(settings.DATA_DIR) / f"worker-{os.getpid()}.stop"
        stop_file.unlink(missing_ok=True)
        env = dict(os.environ)
        env[shutdown.STOP_FILE_VARIABLE] = str(stop_file)
        env[shutdown.SUPERVISOR_VARIABLE] = str(os.getpid())
        cluster = subprocess.Popen(
            [sys.executable, str(settings.BASE_DIR / "manage.py"), "qcluster"],
            env=env,
            process_group=0,
            preexec_fn=_dies_with_parent(),
        )

        def stop(signum: int, frame) -> None:
            stop_file.touch()
            if cluster.poll() is None:
                cluster.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            code = cluster.wait()
        finally:
            stop_file.unlink(missing_ok=True)
        if code not in (0, -signal.SIGTERM):
            sys.exit(code if code > 0 else 128 - code)


def _broker_answers() -> bool:
    """Wait for the broker (Redis may start after the worker); False on a signal.

    Django-Q2's cluster would otherwise fail its start with a long traceback.
    """
    stopping = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: stopping.append(signum))
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        check = check_broker()
        if not check.ok:
            logger.warning(
                "The task broker does not answer (%s; %s); the worker waits for it",
                check.detail,
                check.cause,
            )
        while not check.ok and not stopping:
            time.sleep(BROKER_WAIT_SECONDS)
            check = check_broker()
            if check.ok:
                logger.info("The task broker answers; starting the worker")
        return check.ok and not stopping
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _dies_with_parent():
    """A pre-exec step that ends the child if this process is killed outright.

    Linux only; elsewhere a killed supervisor leaves the cluster to finish its
    current operation, which then stops at the next file (operations.shutdown).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def set_parent_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return set_parent_death_signal
