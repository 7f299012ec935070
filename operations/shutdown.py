"""How a running operation learns that its worker is being stopped.

`manage.py startworker` runs the queue's cluster as a child and names a stop
file for it in QUARRY_STOP_FILE; it creates that file when it is asked to stop.
It also passes its own process id, so an operation stops too when the process
that supervised its cluster is gone.
"""

import os

STOP_FILE_VARIABLE = "QUARRY_STOP_FILE"
SUPERVISOR_VARIABLE = "QUARRY_SUPERVISOR_PID"


def requested() -> bool:
    """True once the worker running this process should stop after its current file."""
    path = os.environ.get(STOP_FILE_VARIABLE)
    if path and os.path.exists(path):
        return True
    supervisor = os.environ.get(SUPERVISOR_VARIABLE)
    if supervisor:
        try:
            os.kill(int(supervisor), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            return False
    return False


def stopped_message() -> str:
    return (
        "The worker was stopped before the operation finished; reindex the "
        "collection to finish the work"
    )
