"""Start the task queue's cluster after failing operations orphaned by a crash."""

import logging

from django.core.management import call_command
from django.core.management.base import BaseCommand

from operations.lifecycle import sweep_stale

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Sweep stale operations, then run `qcluster`."

    def handle(self, *args, **options) -> None:
        swept = sweep_stale()
        if swept:
            logger.info("Marked %d stale operation(s) as failed before starting", swept)
        call_command("qcluster")
