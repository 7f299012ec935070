from django.apps import AppConfig
from django.db.models.signals import post_migrate


class OperationsConfig(AppConfig):
    name = "operations"
    verbose_name = "Operations"

    def ready(self) -> None:
        post_migrate.connect(ensure_sweep_schedule, sender=self)


def ensure_sweep_schedule(**kwargs) -> None:
    """The queue's scheduler runs the stale-operation sweeper every minute."""
    from django_q.models import Schedule

    Schedule.objects.update_or_create(
        name="quarry-sweep-stale-operations",
        defaults={
            "func": "operations.tasks.sweep",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )
