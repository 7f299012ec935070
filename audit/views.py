"""Audit pages: one collection's trail for its owner, the whole trail for staff."""

import uuid

from django.contrib.auth.decorators import login_required
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from audit.forms import AuditFilterForm
from audit.models import AuditLog
from collections_app.models import Collection

ENTRIES_PER_PAGE = 50


def _page(request: HttpRequest, entries: QuerySet) -> Page:
    entries = entries.order_by("-created_at", "-id")
    return Paginator(entries, ENTRIES_PER_PAGE).get_page(request.GET.get("page"))


@login_required
def entry_list(request: HttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        # Rendered, not raised: an expected refusal needs no traceback in the log.
        message = "The audit trail of all collections is for staff."
        return render(request, "403.html", {"message": message}, status=403)
    form = AuditFilterForm(request.GET)
    entries = form.filter(AuditLog.objects.all())
    context = {"form": form, "entries": _page(request, entries)}
    return render(request, "audit/list.html", context)


def _collection_trail(
    request: HttpRequest, collection_id: uuid.UUID
) -> tuple[Collection | None, QuerySet]:
    """The collection (None once deleted) and its entries, or 404 for others."""
    collection = Collection.objects.filter(id=collection_id).first()
    entries = AuditLog.objects.for_collection(collection_id)
    if collection is not None:
        if not (request.user.is_staff or collection.owner_id == request.user.id):
            raise Http404("No such collection")
    elif not request.user.is_staff or not entries.exists():
        # Only the snapshots know a deleted collection, and not its owner.
        raise Http404("No such collection")
    return collection, entries


@login_required
def collection_entries(request: HttpRequest, collection_id: uuid.UUID) -> HttpResponse:
    collection, entries = _collection_trail(request, collection_id)
    form = AuditFilterForm(request.GET, with_collection=False)
    latest = entries.order_by("-created_at", "-id").first()
    context = {
        "collection": collection,
        "collection_id": collection_id,
        "collection_name": collection.name if collection else latest.collection_name,
        "form": form,
        "entries": _page(request, form.filter(entries)),
    }
    return render(request, "audit/collection.html", context)
