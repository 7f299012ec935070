"""Operation pages: what is running, what finished lately, and one operation's history.

Pages render from the database and are complete without JavaScript; the
`data-*` attributes they carry let `static/js/live.js` keep them current.
"""

import uuid
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Max
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from collections_app.services import Request, ServiceError
from operations import services
from operations.models import Operation, OperationEvent


def format_duration(seconds: float | None) -> str:
    """`1 min 5 s`, `2 h 3 min`, or an em dash when there is nothing to say."""
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def decorate_operations(operations: Iterable[Operation]) -> list[Operation]:
    """Attach the display times templates show; they change with the clock."""
    decorated = list(operations)
    for operation in decorated:
        operation.elapsed_text = format_duration(operation.elapsed_seconds())
        operation.remaining_text = format_duration(operation.remaining_seconds())
    return decorated


def last_visible_event_id(user) -> int:
    """The newest event the user may see; live updates resume after it."""
    visible = Operation.objects.visible_to(user)
    events = OperationEvent.objects.all()
    if not user.is_staff:
        events = events.filter(operation__in=visible)
    return events.aggregate(last=Max("id"))["last"] or 0


def summarize_event(event: OperationEvent) -> str:
    """One line from an event's payload: step, progress and anything extra."""
    payload = event.payload or {}
    snapshot = payload.get("operation") or {}
    parts = []
    if snapshot.get("step"):
        parts.append(f"step {snapshot['step']}")
    progress = snapshot.get("progress") or {}
    if progress.get("total"):
        parts.append(f"{progress.get('done', 0)}/{progress['total']}")
    for key, value in payload.items():
        if key != "operation" and value not in ("", None):
            parts.append(f"{key}: {value}")
    return ", ".join(parts)


def _get_operation_or_404(request: HttpRequest, operation_id: uuid.UUID) -> Operation:
    visible = Operation.objects.visible_to(request.user)
    return get_object_or_404(
        visible.select_related("collection", "requested_by"), id=operation_id
    )


def _redirect_back(request: HttpRequest, default: str) -> HttpResponse:
    target = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(target)
    return redirect(default)


@login_required
def operation_list(request: HttpRequest) -> HttpResponse:
    visible = Operation.objects.visible_to(request.user).select_related(
        "collection", "requested_by"
    )
    since = timezone.now() - timedelta(hours=settings.RECENT_OPERATIONS_HOURS)
    recent = visible.filter(
        status__in=Operation.TERMINAL, finished_at__gte=since, dismissed=False
    ).order_by("-finished_at", "-created_at")
    context = {
        "active": decorate_operations(visible.active().order_by("-created_at")),
        "recent": decorate_operations(recent),
        "last_event_id": last_visible_event_id(request.user),
    }
    return render(request, "operations/list.html", context)


@login_required
def operation_detail(request: HttpRequest, operation_id: uuid.UUID) -> HttpResponse:
    operation = _get_operation_or_404(request, operation_id)
    decorate_operations([operation])
    events = list(operation.events.all())
    for event in events:
        event.summary = summarize_event(event)
    context = {
        "op": operation,
        "events": events,
        "last_event_id": last_visible_event_id(request.user),
    }
    return render(request, "operations/detail.html", context)


@login_required
@require_POST
def operation_cancel(request: HttpRequest, operation_id: uuid.UUID) -> HttpResponse:
    operation = _get_operation_or_404(request, operation_id)
    service_request = Request(
        user=request.user, remote_addr=request.META.get("REMOTE_ADDR")
    )
    try:
        operation = services.cancel_operation(service_request, operation)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        if operation.status == Operation.Status.CANCELLED:
            messages.success(request, "Operation cancelled.")
        else:
            messages.success(
                request, "Cancelling: the operation stops after its current file."
            )
    return _redirect_back(request, operation.get_absolute_url())


@login_required
@require_POST
def operation_dismiss(request: HttpRequest, operation_id: uuid.UUID) -> HttpResponse:
    operation = _get_operation_or_404(request, operation_id)
    try:
        services.dismiss_operation(operation)
    except ServiceError as exc:
        messages.error(request, exc.message)
    return _redirect_back(request, reverse("operations:list"))
