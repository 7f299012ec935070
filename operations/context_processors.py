"""The active-operations count shown in the navigation of every page."""

from operations.models import Operation


def active_operations(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "active_operation_count": Operation.objects.visible_to(user).active().count()
    }
