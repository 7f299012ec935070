"""Collection pages: list, create, inspect, change and search collections.

Views parse the request and check who may see what; every change is decided
by `collections_app.services`.
"""

import uuid

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Page, Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from collections_app import services
from collections_app.forms import CollectionCreateForm, CollectionEditForm, SourceForm
from collections_app.models import Collection, Document
from collections_app.search import clean_query, visible_collections
from collections_app.search import search as run_search
from collections_app.services import Request, ServiceError
from operations.views import decorate_operations, last_visible_event_id

DOCUMENTS_PER_PAGE = 50
HISTORY_LENGTH = 20
SEARCH_LIMIT = 20


def _service_request(request: HttpRequest) -> Request:
    return Request(user=request.user, remote_addr=request.META.get("REMOTE_ADDR"))


def _get_collection_or_404(
    request: HttpRequest, collection_id: uuid.UUID
) -> Collection:
    return get_object_or_404(visible_collections(request.user), id=collection_id)


def _to_operation(request: HttpRequest, operation, message: str) -> HttpResponse:
    """To the operation's page, saying what was asked and whether it is queued."""
    operation.refresh_from_db()
    if operation.awaits_queue:
        messages.warning(
            request,
            f"{message} The task queue did not answer, so the operation waits; it "
            "is queued again within a minute of the queue answering.",
        )
    else:
        messages.success(request, message)
    return redirect(operation)


def _apply_error(form: forms.Form, exc: ServiceError) -> None:
    field = exc.field if exc.field in form.fields else None
    form.add_error(field, exc.message)


@login_required
def collection_list(request: HttpRequest) -> HttpResponse:
    collections = visible_collections(request.user).select_related("owner")
    return render(request, "collections_app/list.html", {"collections": collections})


@login_required
@require_http_methods(["GET", "POST"])
def collection_create(request: HttpRequest) -> HttpResponse:
    form = CollectionCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            operation = services.create_collection(
                _service_request(request), **form.cleaned_data
            )
        except ServiceError as exc:
            _apply_error(form, exc)
        else:
            return _to_operation(
                request,
                operation,
                f"Collection {operation.collection_name} is being indexed.",
            )
    return render(request, "collections_app/create.html", {"form": form})


def _documents_page(request: HttpRequest, collection: Collection) -> tuple[Page, str]:
    documents = collection.documents.select_related("source")
    status = request.GET.get("status", "")
    if status in Document.Status.values:
        documents = documents.filter(status=status)
    else:
        status = ""
    page = Paginator(documents, DOCUMENTS_PER_PAGE).get_page(request.GET.get("page"))
    return page, status


def _render_detail(
    request: HttpRequest,
    collection: Collection,
    edit_form: CollectionEditForm | None = None,
    source_form: SourceForm | None = None,
) -> HttpResponse:
    page, document_status = _documents_page(request, collection)
    history = collection.operations.select_related("collection", "requested_by")
    context = {
        "collection": collection,
        "sources": collection.sources.all(),
        "documents": page,
        "document_status": document_status,
        "document_statuses": Document.Status.choices,
        "operations": decorate_operations(history[:HISTORY_LENGTH]),
        "edit_form": edit_form
        or CollectionEditForm(
            initial={"name": collection.name, "description": collection.description}
        ),
        "source_form": source_form or SourceForm(),
        "last_event_id": last_visible_event_id(request.user),
    }
    return render(request, "collections_app/detail.html", context)


@login_required
def collection_detail(request: HttpRequest, collection_id: uuid.UUID) -> HttpResponse:
    return _render_detail(request, _get_collection_or_404(request, collection_id))


@login_required
@require_POST
def collection_update(request: HttpRequest, collection_id: uuid.UUID) -> HttpResponse:
    collection = _get_collection_or_404(request, collection_id)
    form = CollectionEditForm(request.POST)
    if form.is_valid():
        try:
            services.update_collection(
                _service_request(request), collection, **form.cleaned_data
            )
        except ServiceError as exc:
            _apply_error(form, exc)
        else:
            messages.success(request, "Saved.")
            return redirect(collection)
    return _render_detail(request, collection, edit_form=form)


@login_required
@require_POST
def source_add(request: HttpRequest, collection_id: uuid.UUID) -> HttpResponse:
    collection = _get_collection_or_404(request, collection_id)
    form = SourceForm(request.POST)
    if form.is_valid():
        try:
            operation = services.add_source(
                _service_request(request), collection, form.cleaned_data["source"]
            )
        except ServiceError as exc:
            _apply_error(form, exc)
        else:
            return _to_operation(request, operation, "The folder is being added.")
    return _render_detail(request, collection, source_form=form)


@login_required
@require_POST
def source_remove(request: HttpRequest, collection_id: uuid.UUID) -> HttpResponse:
    collection = _get_collection_or_404(request, collection_id)
    try:
        source_id = int(request.POST.get("source", ""))
    except ValueError:
        raise Http404("No such source") from None
    source = get_object_or_404(collection.sources, id=source_id)
    try:
        operation = services.remove_source(
            _service_request(request), collection, source
        )
    except ServiceError as exc:
        messages.error(request, exc.message)
        return redirect(collection)
    return _to_operation(
        request, operation, f"The folder {source.path} is being removed."
    )


@login_required
@require_POST
def collection_reindex(request: HttpRequest, collection_id: uuid.UUID) -> HttpResponse:
    collection = _get_collection_or_404(request, collection_id)
    try:
        operation = services.reindex(_service_request(request), collection)
    except ServiceError as exc:
        messages.error(request, exc.message)
        return redirect(collection)
    return _to_operation(request, operation, "Reindexing started.")


@login_required
@require_http_methods(["GET", "POST"])
def collection_delete(request: HttpRequest, collection_id: uuid.UUID) -> HttpResponse:
    collection = _get_collection_or_404(request, collection_id)
    if request.method == "GET":
        return render(
            request, "collections_app/delete.html", {"collection": collection}
        )

    try:
        operation = services.delete_collection(_service_request(request), collection)
    except ServiceError as exc:
        messages.error(request, exc.message)
        return redirect(collection)
    return _to_operation(
        request, operation, f"Collection {collection.name} is being deleted."
    )


def _selected_collection(request: HttpRequest) -> Collection | None:
    raw = request.GET.get("collection", "").strip()
    if not raw:
        return None
    try:
        collection_id = uuid.UUID(raw)
    except ValueError:
        raise Http404("No such collection") from None
    return _get_collection_or_404(request, collection_id)


@login_required
def search(request: HttpRequest) -> HttpResponse:
    collection = _selected_collection(request)
    query = clean_query(request.GET.get("q", ""))
    results = run_search(
        request.user, query, collection=collection, limit=SEARCH_LIMIT, via="web"
    )
    context = {
        "query": query,
        "selected": collection,
        "collections": visible_collections(request.user).only("id", "name"),
        "results": results,
    }
    return render(request, "collections_app/search.html", context)
