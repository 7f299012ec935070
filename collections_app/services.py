"""The rules for changing collections. Views and commands call only these.

Each function checks the rules, writes the change, its pending operation and
its audit entries in one transaction, and enqueues the operation on commit.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction

from audit.models import AuditLog
from audit.services import record
from collections_app.models import Collection, Source
from operations import lifecycle
from operations.models import Operation

MIN_CHUNK_SIZE = 100
MAX_CHUNK_SIZE = 8000


class ServiceError(Exception):
    """A request the rules refuse; `field` names the form field at fault."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class Conflict(ServiceError):
    pass


@dataclass
class Request:
    """Who asks, and from where (for the audit trail)."""

    user: object
    remote_addr: str | None = None


def document_roots() -> list[Path]:
    return [Path(root).resolve() for root in settings.DOCUMENT_ROOTS]


def resolve_source_path(raw: str) -> Path:
    """The real directory a source path names, refused unless inside a root."""
    text = (raw or "").strip()
    if not text:
        raise ServiceError("Enter the path of a folder.", "source")
    if "\x00" in text:
        raise ServiceError("The folder path contains a NUL character.", "source")
    path = Path(text).expanduser()
    if not path.is_absolute():
        raise ServiceError(f"Use an absolute path, not “{text}”.", "source")
    roots = document_roots()
    outside = ServiceError(
        f"The folder {text} is outside the document roots "
        f"({', '.join(str(r) for r in roots)}).",
        "source",
    )
    # Judged on the path as written first, so that whether a folder outside
    # the roots exists, or may be opened, is never told to the user.
    if not _written_inside(path, roots):
        raise outside
    try:
        resolved = path.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise ServiceError(f"The folder {text} does not exist.", "source") from None
    except (OSError, RuntimeError) as exc:
        raise ServiceError(
            f"The folder {text} cannot be opened: {exc}.", "source"
        ) from None
    if not any(resolved.is_relative_to(root) for root in roots):
        raise outside
    if not resolved.is_dir():
        raise ServiceError(f"{text} is not a folder.", "source")
    _refuse_undecodable(resolved)
    return resolved


def _written_inside(path: Path, roots: list[Path]) -> bool:
    """`path`, with `..` folded away, lies inside a root as configured or resolved."""
    # POSIX keeps a leading "//" apart from "/"; here both mean the root.
    folded = Path("/" + os.path.normpath(path).lstrip("/"))
    written = [
        Path(os.path.normpath(Path(r).expanduser())) for r in settings.DOCUMENT_ROOTS
    ]
    return any(folded.is_relative_to(root) for root in [*roots, *written])


def _refuse_undecodable(path: Path) -> None:
    """A path with bytes that are not UTF-8 cannot be stored as a source.

    Files with such names inside a source are fine (stored with \\xNN escapes),
    but the source folder itself must be opened by its exact name.
    """
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = bytes(path).decode("utf-8", "backslashreplace")
        raise ServiceError(
            f"The folder {shown} has a name that is not valid UTF-8; rename it "
            "to index it.",
            "source",
        ) from None


def validate_chunking(size: int | None, overlap: int | None) -> tuple[int, int]:
    size = settings.DEFAULT_CHUNK_SIZE if size is None else int(size)
    overlap = settings.DEFAULT_CHUNK_OVERLAP if overlap is None else int(overlap)
    if not MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE:
        raise ServiceError(
            f"Chunk size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} characters.",
            "chunk_size",
        )
    if not 0 <= overlap < size // 2:
        raise ServiceError(
            "Chunk overlap must be at least 0 and less than half the chunk size.",
            "chunk_overlap",
        )
    return size, overlap


def validate_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ServiceError("Enter a name.", "name")
    if len(name) > 200 or not _storable(name):
        raise ServiceError("Use a name of at most 200 printable characters.", "name")
    return name


def validate_description(description: str | None) -> str:
    description = description or ""
    if not _storable(description):
        raise ServiceError(
            "The description holds a NUL character or bytes that are not text.",
            "description",
        )
    return description


def _storable(text: str) -> bool:
    """False for NUL, and for lone surrogates (bytes a terminal passed on that
    are not UTF-8): no column takes them as they are (webui.text)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _lock(collection: Collection) -> Collection:
    """Re-read the collection under a write lock (SQLite: the IMMEDIATE transaction)."""
    try:
        return Collection.objects.select_for_update().get(id=collection.id)
    except Collection.DoesNotExist:
        raise Conflict("This collection no longer exists.") from None


def _refuse_if_busy(collection: Collection) -> None:
    active = collection.operations.filter(status__in=Operation.ACTIVE).first()
    if active is not None:
        raise Conflict(
            f"Collection “{collection.name}” already has an active "
            f"{active.get_type_display().lower()} operation ({active.status}); "
            "wait for it to finish or cancel it."
        )


def create_collection(
    request: Request,
    *,
    name: str,
    source: str,
    description: str = "",
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    owner=None,
) -> Operation:
    owner = owner or request.user
    name = validate_name(name)
    description = validate_description(description)
    size, overlap = validate_chunking(chunk_size, chunk_overlap)
    path = resolve_source_path(source)
    with transaction.atomic():
        if Collection.objects.filter(owner=owner, name=name).exists():
            raise ServiceError(f"You already have a collection named “{name}”.", "name")
        try:
            collection = Collection.objects.create(
                owner=owner,
                name=name,
                description=description or "",
                chunk_size=size,
                chunk_overlap=overlap,
            )
        except IntegrityError:
            raise ServiceError(
                f"You already have a collection named “{name}”.", "name"
            ) from None
        Source.objects.create(collection=collection, path=str(path))
        record(
            AuditLog.Action.COLLECTION_CREATED,
            actor=request.user,
            collection=collection,
            details={
                "source": str(path),
                "requested_path": source,
                "description": description or "",
                "chunk_size": size,
                "chunk_overlap": overlap,
                "embedding_model": collection.embedding_model,
            },
            remote_addr=request.remote_addr,
        )
        return lifecycle.create_pending(
            collection=collection,
            type=Operation.Type.INDEX,
            requested_by=request.user,
            config={"source": str(path)},
            remote_addr=request.remote_addr,
        )


def update_collection(
    request: Request, collection: Collection, *, name: str, description: str
) -> Collection:
    name = validate_name(name)
    description = validate_description(description)
    with transaction.atomic():
        collection = _lock(collection)
        old = collection.name
        if (
            name != old
            and Collection.objects.filter(owner=collection.owner, name=name).exists()
        ):
            raise ServiceError(f"You already have a collection named “{name}”.", "name")
        collection.name = name
        collection.description = description or ""
        collection.save(update_fields=["name", "description", "updated_at"])
        if name != old:
            record(
                AuditLog.Action.COLLECTION_RENAMED,
                actor=request.user,
                collection=collection,
                details={"old_name": old, "new_name": name},
                remote_addr=request.remote_addr,
            )
    return collection


def add_source(request: Request, collection: Collection, source: str) -> Operation:
    path = resolve_source_path(source)
    with transaction.atomic():
        collection = _lock(collection)
        _refuse_if_busy(collection)
        if collection.sources.filter(path=str(path)).exists():
            raise ServiceError(
                f"{path} is already a source of this collection.", "source"
            )
        _refuse_overlap(collection, path)
        added = Source.objects.create(collection=collection, path=str(path))
        record(
            AuditLog.Action.SOURCE_ADDED,
            actor=request.user,
            collection=collection,
            details={"source": str(path), "requested_path": source},
            remote_addr=request.remote_addr,
        )
        return lifecycle.create_pending(
            collection=collection,
            type=Operation.Type.APPEND,
            requested_by=request.user,
            config={"source_id": added.id, "source": str(path)},
            remote_addr=request.remote_addr,
        )


def _refuse_overlap(collection: Collection, path: Path) -> None:
    """A folder inside a source, or holding one, would only add duplicates."""
    for existing in collection.sources.all():
        other = Path(existing.path)
        if path.is_relative_to(other):
            raise ServiceError(
                f"{path} is inside {other}, already a source of this collection: "
                "its files are indexed through that source.",
                "source",
            )
        if other.is_relative_to(path):
            raise ServiceError(
                f"{path} holds {other}, already a source of this collection: remove "
                "that source first, then add this folder.",
                "source",
            )


def reindex(request: Request, collection: Collection) -> Operation:
    with transaction.atomic():
        collection = _lock(collection)
        _refuse_if_busy(collection)
        record(
            AuditLog.Action.REINDEX_REQUESTED,
            actor=request.user,
            collection=collection,
            details={"sources": [s.path for s in collection.sources.all()]},
            remote_addr=request.remote_addr,
        )
        return lifecycle.create_pending(
            collection=collection,
            type=Operation.Type.REINDEX,
            requested_by=request.user,
            remote_addr=request.remote_addr,
        )


def remove_source(
    request: Request, collection: Collection, source: Source
) -> Operation:
    with transaction.atomic():
        collection = _lock(collection)
        _refuse_if_busy(collection)
        if source.collection_id != collection.id:
            raise ServiceError(
                "That folder is not a source of this collection.", "source"
            )
        record(
            AuditLog.Action.SOURCE_REMOVE_REQUESTED,
            actor=request.user,
            collection=collection,
            details={"source": source.path},
            remote_addr=request.remote_addr,
        )
        return lifecycle.create_pending(
            collection=collection,
            type=Operation.Type.REMOVE_SOURCE,
            requested_by=request.user,
            config={"source_id": source.id, "source": source.path},
            remote_addr=request.remote_addr,
        )


def delete_collection(request: Request, collection: Collection) -> Operation:
    with transaction.atomic():
        collection = _lock(collection)
        _refuse_if_busy(collection)
        record(
            AuditLog.Action.COLLECTION_DELETE_REQUESTED,
            actor=request.user,
            collection=collection,
            details={
                "documents": collection.document_count,
                "chunks": collection.chunk_count,
            },
            remote_addr=request.remote_addr,
        )
        return lifecycle.create_pending(
            collection=collection,
            type=Operation.Type.DELETE,
            requested_by=request.user,
            remote_addr=request.remote_addr,
        )


def find_source(collection: Collection, raw: str) -> Source:
    """The source a user names by the path they typed or its resolved form."""
    candidates = {raw.strip()}
    try:
        candidates.add(str(Path(raw.strip()).expanduser().resolve()))
    except (OSError, RuntimeError):
        pass
    source = collection.sources.filter(path__in=candidates).first()
    if source is None:
        raise ServiceError(
            f"{raw} is not a source of collection “{collection.name}”.", "source"
        )
    return source
