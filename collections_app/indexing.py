"""Operation handlers: turn source folders into documents and chunks, or remove them.

Steps for an index run, per source:
1. Check the source folder still exists inside DOCUMENT_ROOTS; if not, fail
   the operation and delete nothing.
2. Scan it (symlinks followed only inside the roots, cycles cut, unreadable
   folders noted so their documents are kept).
3. For each file: hash it; skip it when unchanged; otherwise extract, chunk,
   and queue its chunks for embedding. Embed in batches and store each batch in
   one short transaction. No transaction is open while reading or embedding.
4. Forget documents whose files are gone.
Cancellation is checked between files, and progress doubles as the heartbeat.
"""

import fnmatch
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import CharField, Value
from django.db.models.functions import Cast, Concat
from django.utils import timezone

from audit.models import AuditLog
from audit.services import record_guarded
from collections_app.chunking import chunk_text
from collections_app.embedding import EmbeddingStopped, get_embedder, to_bytes
from collections_app.extract import ExtractionError, extract_text, is_supported
from collections_app.models import Chunk, Collection, Document, Source
from collections_app.services import document_roots
from operations import metrics, shutdown
from operations.lifecycle import OperationEnded, Progress, timed_out_message
from operations.models import Operation
from webui.text import storable_text

logger = logging.getLogger(__name__)

EMBED_BATCH_CHUNKS = 64
DELETE_BATCH = 500


class OperationFailed(Exception):
    """The operation cannot go on; its message is shown to the user."""


class Cancelled(Exception):
    pass


@dataclass
class Candidate:
    relpath: str
    path: Path | None
    problem: tuple[str, str] | None = None  # (reason, message) found while scanning

    def __post_init__(self) -> None:
        self.relpath = storable_path(self.relpath)
        if self.problem:
            self.problem = (self.problem[0], storable_text(self.problem[1]))


def storable_path(relpath: str) -> str:
    """A file name as stored and shown: bytes that are not UTF-8 become \\xNN.

    os.scandir hands undecodable bytes over as lone surrogates, which no
    database column accepts; the file itself is still opened by its real name.
    """
    raw = relpath.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace")


@dataclass
class Scan:
    files: list[Candidate] = field(default_factory=list)
    unreadable_dirs: list[str] = field(default_factory=list)


@dataclass
class Pending:
    """A changed file whose chunks wait for the next embedding batch."""

    candidate: Candidate
    size: int
    mtime: float
    digest: str
    pieces: list


def run(operation: Operation) -> tuple[str, str]:
    """Run the operation's handler; returns (terminal status, error)."""
    handler = {
        Operation.Type.INDEX: index_all,
        Operation.Type.REINDEX: reindex_all,
        Operation.Type.APPEND: index_one_source,
        Operation.Type.REMOVE_SOURCE: remove_source,
        Operation.Type.DELETE: delete_collection,
    }[operation.type]
    if operation.collection_id is None:
        return Operation.Status.FAILED, "The collection no longer exists."
    Collection.objects.filter(id=operation.collection_id).update(
        status=Collection.Status.PROCESSING
    )
    progress = Progress(operation)
    try:
        handler(operation, progress)
    except Cancelled:
        return Operation.Status.CANCELLED, "Cancelled by request"
    except OperationFailed as exc:
        return Operation.Status.FAILED, str(exc)
    except OperationEnded:
        operation.refresh_from_db()
        logger.info(
            "Operation %s (%s of %s) was %s elsewhere while it ran; its handler "
            "stopped",
            operation.id,
            operation.type,
            operation.collection_name,
            operation.status,
        )
        return operation.status, operation.error
    return Operation.Status.COMPLETED, ""


def index_all(operation: Operation, progress: Progress) -> None:
    _index_sources(
        operation, progress, list(operation.collection.sources.all()), force=False
    )


def reindex_all(operation: Operation, progress: Progress) -> None:
    _index_sources(
        operation, progress, list(operation.collection.sources.all()), force=True
    )


def index_one_source(operation: Operation, progress: Progress) -> None:
    source = Source.objects.filter(
        id=operation.config.get("source_id"), collection=operation.collection
    ).first()
    if source is None:
        raise OperationFailed("The source to add no longer exists.")
    _index_sources(operation, progress, [source], force=False)


def _index_sources(
    operation: Operation, progress: Progress, sources: list[Source], force: bool
) -> None:
    collection = operation.collection
    for source in sources:
        _check_source_root(source)
    progress.update(force=True, step="scanning")
    scans = [(source, scan_source(Path(source.path))) for source in sources]
    total = sum(len(scan.files) for _, scan in scans)
    progress.update(force=True, step="indexing", total=total, found=total)
    for source, scan in scans:
        _forget_missing(source, scan)
    for source, scan in scans:
        _index_files(collection, source, scan, progress, force)
    collection.refresh_counters()


def _check_source_root(source: Source) -> None:
    path = Path(source.path)
    if not path.is_dir():
        raise OperationFailed(
            f"Source folder {source.path} is missing or not a folder; nothing was "
            "deleted. Restore it, or remove the source."
        )
    if not os.access(path, os.R_OK | os.X_OK):
        raise OperationFailed(
            f"Source folder {source.path} cannot be read (permission denied); "
            "nothing was deleted."
        )
    resolved = path.resolve()
    if not any(resolved.is_relative_to(root) for root in document_roots()):
        raise OperationFailed(
            f"Source folder {source.path} is no longer inside DOCUMENT_ROOTS; "
            "nothing was deleted."
        )


def scan_source(root: Path) -> Scan:
    """Every supported file under root, in a stable order."""
    scan = Scan()
    roots = document_roots()
    seen_dirs: set[tuple[int, int]] = set()
    stack = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            info = directory.stat()
            if (info.st_dev, info.st_ino) in seen_dirs:
                continue
            seen_dirs.add((info.st_dev, info.st_ino))
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            scan.unreadable_dirs.append(storable_path(prefix))
            scan.files.append(
                Candidate(
                    prefix or ".",
                    None,
                    ("permission_denied", f"Folder unreadable: {exc.strerror}"),
                )
            )
            continue
        subdirs = []
        for entry in entries:
            if _ignored(entry.name):
                continue
            relpath = f"{prefix}{entry.name}"
            _scan_entry(scan, entry, relpath, roots, subdirs)
        stack.extend(reversed(subdirs))
    scan.files.sort(key=lambda c: c.relpath)
    return scan


def _ignored(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in settings.SCAN_IGNORE)


def _scan_entry(scan: Scan, entry: os.DirEntry, relpath: str, roots, subdirs) -> None:
    path = Path(entry.path)
    try:
        is_link = entry.is_symlink()
        if is_link:
            target = path.resolve(strict=True)
            if not any(target.is_relative_to(root) for root in roots):
                if is_supported(path) or target.is_dir():
                    scan.files.append(
                        Candidate(
                            relpath,
                            None,
                            (
                                "outside_roots",
                                "Symbolic link leads outside the document roots",
                            ),
                        )
                    )
                return
        if entry.is_dir():
            subdirs.append((path, relpath + "/"))
        elif entry.is_file() and is_supported(path):
            scan.files.append(Candidate(relpath, path))
    except (OSError, RuntimeError) as exc:
        if is_supported(path):
            reason = (
                "permission_denied"
                if isinstance(exc, PermissionError)
                else "unreadable"
            )
            scan.files.append(Candidate(relpath, None, (reason, f"Cannot open: {exc}")))


def _index_files(
    collection: Collection,
    source: Source,
    scan: Scan,
    progress: Progress,
    force: bool,
    interruptible: bool = True,
) -> None:
    existing = {d.path: d for d in source.documents.all()}
    batch: list[Pending] = []
    claimed: dict[str, str] = {}  # digest -> path, for files waiting in the batch
    for candidate in scan.files:
        if interruptible:
            _stop_if_asked(collection, source, batch, progress)
        pending = _prepare(
            collection,
            source,
            candidate,
            existing.get(candidate.relpath),
            progress,
            force,
            claimed,
        )
        if pending is not None:
            batch.append(pending)
            claimed[pending.digest] = candidate.relpath
        if sum(len(p.pieces) for p in batch) >= EMBED_BATCH_CHUNKS:
            _store_batch(collection, source, batch, progress, interruptible)
            batch = []
            claimed.clear()
        progress.update(done=progress.operation.done + (pending is None))
    _store_batch(collection, source, batch, progress, interruptible)
    progress.update(force=True)


def _stop_if_asked(
    collection: Collection, source: Source, batch: list[Pending], progress: Progress
) -> None:
    """Between files: end on a cancel, the time limit, or a stopping worker."""
    if progress.cancel_requested():
        _store_batch(collection, source, batch, progress)
        raise Cancelled()
    if progress.out_of_time():
        _store_batch(collection, source, batch, progress)
        raise OperationFailed(timed_out_message())
    if progress.worker_stopping():
        # Not stored: the files of this batch are read again by a rerun.
        raise OperationFailed(shutdown.stopped_message())


def _prepare(
    collection: Collection,
    source: Source,
    candidate: Candidate,
    document: Document | None,
    progress: Progress,
    force: bool,
    claimed: dict[str, str],
) -> Pending | None:
    """Hash and extract one file; returns work for the embedding batch, or None."""
    op = progress.operation
    if candidate.problem:
        _fail_document(
            collection, source, candidate.relpath, *candidate.problem, stat=None
        )
        op.failed += 1
        return None
    try:
        stat = candidate.path.stat()
        if stat.st_size > settings.MAX_FILE_BYTES:
            raise ExtractionError(
                "too_large",
                f"File is {stat.st_size} bytes, above MAX_FILE_BYTES ({settings.MAX_FILE_BYTES})",
            )
        digest = file_digest(candidate.path)
    except ExtractionError as exc:
        _fail_document(
            collection, source, candidate.relpath, exc.reason, exc.message, stat
        )
        op.failed += 1
        return None
    except OSError as exc:
        reason = (
            "permission_denied" if isinstance(exc, PermissionError) else "unreadable"
        )
        _fail_document(
            collection,
            source,
            candidate.relpath,
            reason,
            f"Cannot read: {exc.strerror}",
            None,
        )
        op.failed += 1
        return None
    if (
        not force
        and document is not None
        and document.status == Document.Status.INDEXED
        and document.content_hash == digest
    ):
        op.unchanged += 1
        metrics.DOCUMENTS.labels("unchanged", "").inc()
        return None
    twin = claimed.get(digest) or _indexed_twin(
        collection, source, candidate.relpath, digest
    )
    if twin is not None:
        _fail_document(
            collection,
            source,
            candidate.relpath,
            "duplicate",
            f"Same content as {twin}",
            stat,
            status=Document.Status.SKIPPED,
            digest=digest,
        )
        op.skipped += 1
        return None
    progress.update(step="extracting")
    try:
        text = extract_text(candidate.path, settings.MAX_FILE_BYTES)
    except ExtractionError as exc:
        _fail_document(
            collection, source, candidate.relpath, exc.reason, exc.message, stat
        )
        op.failed += 1
        return None
    except OSError as exc:
        _fail_document(
            collection,
            source,
            candidate.relpath,
            "unreadable",
            f"Cannot read: {exc}",
            stat,
        )
        op.failed += 1
        return None
    pieces = chunk_text(text, collection.chunk_size, collection.chunk_overlap)
    if not pieces:
        # An "indexed" document that no search can find would mislead; an empty
        # file, or a PDF without a text layer, is listed as skipped instead.
        _fail_document(
            collection,
            source,
            candidate.relpath,
            "empty",
            "No text to index",
            stat,
            status=Document.Status.SKIPPED,
            digest=digest,
        )
        op.skipped += 1
        return None
    return Pending(candidate, stat.st_size, stat.st_mtime, digest, pieces)


def _indexed_twin(
    collection: Collection, source: Source, relpath: str, digest: str
) -> str | None:
    """An indexed document whose file still holds this content, if any.

    The stored hash is the one from the twin's last indexing: a file changed
    since (two files that swapped contents) no longer holds it, so the file
    on disk is hashed again before this one is skipped as its duplicate.
    """
    twin = (
        Document.objects.filter(
            collection=collection, content_hash=digest, status=Document.Status.INDEXED
        )
        .exclude(source=source, path=relpath)
        .select_related("source")
        .first()
    )
    if twin is None:
        return None
    try:
        holds_it = file_digest(Path(twin.source.path) / twin.path) == digest
    except OSError:
        holds_it = False
    return twin.path if holds_it else None


def _store_batch(
    collection: Collection,
    source: Source,
    batch: list[Pending],
    progress: Progress,
    interruptible: bool = True,
) -> None:
    if not batch:
        return
    op = progress.operation
    progress.update(force=True, step="embedding")
    texts = [piece.text for pending in batch for piece in pending.pieces]
    try:
        vectors = get_embedder(collection.embedding_model).embed(
            texts, should_stop=progress.worker_stopping if interruptible else None
        )
    except EmbeddingStopped:
        raise OperationFailed(shutdown.stopped_message()) from None
    offset = 0
    with transaction.atomic():
        for pending in batch:
            count = len(pending.pieces)
            document = _save_document(collection, source, pending)
            Chunk.objects.bulk_create(
                Chunk(
                    collection=collection,
                    document=document,
                    ordinal=ordinal,
                    text=piece.text,
                    start=piece.start,
                    end=piece.end,
                    vector=to_bytes(vectors[offset + ordinal]),
                )
                for ordinal, piece in enumerate(pending.pieces)
            )
            offset += count
    metrics.DOCUMENTS.labels("indexed", "").inc(len(batch))
    op.indexed += len(batch)
    op.chunks += len(texts)
    progress.update(step="indexing", done=op.done + len(batch))


def _save_document(
    collection: Collection, source: Source, pending: Pending
) -> Document:
    # An indexed document still listed with this hash no longer holds it (else
    # this file would be its duplicate): its hash is forgotten, so its own file
    # is indexed again when the scan reaches it.
    # The placeholder is unique per row, as indexed hashes must be, and never
    # equal to a real SHA-256 digest.
    Document.objects.filter(
        collection=collection,
        content_hash=pending.digest,
        status=Document.Status.INDEXED,
    ).exclude(source=source, path=pending.candidate.relpath).update(
        content_hash=Concat(Value("stale:"), Cast("id", CharField()))
    )
    document, _ = Document.objects.update_or_create(
        source=source,
        path=pending.candidate.relpath,
        defaults={
            "collection": collection,
            "size": pending.size,
            "mtime": pending.mtime,
            "content_hash": pending.digest,
            "status": Document.Status.INDEXED,
            "error_reason": "",
            "error": "",
            "chunk_count": len(pending.pieces),
        },
    )
    document.chunks.all().delete()
    return document


def _fail_document(
    collection: Collection,
    source: Source,
    relpath: str,
    reason: str,
    message: str,
    stat: os.stat_result | None,
    status: str = Document.Status.FAILED,
    digest: str = "",
) -> None:
    """Record a file that is not indexed, with its reason; its old chunks go."""
    with transaction.atomic():
        document, _ = Document.objects.update_or_create(
            source=source,
            path=relpath,
            defaults={
                "collection": collection,
                "size": stat.st_size if stat else 0,
                "mtime": stat.st_mtime if stat else 0,
                "content_hash": digest,
                "status": status,
                "error_reason": reason,
                "error": storable_text(message),
                "chunk_count": 0,
            },
        )
        document.chunks.all().delete()
    metrics.DOCUMENTS.labels(status, reason).inc()
    # %r: a file name may hold a newline, which must not forge a log line.
    logger.info(
        "Document %r in %s not indexed (%s): %s",
        relpath,
        collection.name,
        reason,
        message,
    )


def _forget_missing(source: Source, scan: Scan) -> None:
    """Delete documents whose files are gone, except under unreadable folders."""
    present = {c.relpath for c in scan.files}
    kept_prefixes = tuple(p for p in scan.unreadable_dirs)
    gone = [
        d.id
        for d in source.documents.only("id", "path")
        if d.path not in present
        and not (kept_prefixes and d.path.startswith(kept_prefixes))
    ]
    for begin in range(0, len(gone), DELETE_BATCH):
        with transaction.atomic():
            Document.objects.filter(id__in=gone[begin : begin + DELETE_BATCH]).delete()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_source(operation: Operation, progress: Progress) -> None:
    source = Source.objects.filter(
        id=operation.config.get("source_id"), collection=operation.collection
    ).first()
    if source is None:
        return
    progress.update(force=True, step="removing", total=source.documents.count())
    _delete_documents(source.documents.all(), progress)
    with transaction.atomic():
        source.delete()
        record_guarded(
            AuditLog.Action.SOURCE_REMOVED,
            collection=operation.collection,
            operation=operation,
            details={"source": operation.config.get("source", "")},
        )
    _index_orphaned_duplicates(operation, progress)
    operation.collection.refresh_counters()


def _index_orphaned_duplicates(operation: Operation, progress: Progress) -> None:
    """Index files that were skipped as duplicates of documents now removed.

    Their content would otherwise be in no search result. Each source with
    such files is scanned again; its unchanged files cost only a hash.
    """
    collection = operation.collection
    indexed = Document.objects.filter(
        collection=collection, status=Document.Status.INDEXED
    ).values("content_hash")
    orphans = (
        Document.objects.filter(
            collection=collection,
            status=Document.Status.SKIPPED,
            error_reason="duplicate",
        )
        .exclude(content_hash__in=indexed)
        .order_by()
        .values_list("source_id", flat=True)
        .distinct()
    )
    for source in Source.objects.filter(id__in=list(orphans)):
        try:
            _check_source_root(source)
        except OperationFailed as exc:
            logger.info(
                "Duplicates in %s of %s stay skipped: %s", source.path, collection, exc
            )
            continue
        scan = scan_source(Path(source.path))
        progress.update(
            force=True,
            step="indexing",
            total=progress.operation.total + len(scan.files),
            found=progress.operation.found + len(scan.files),
        )
        # Its source is already gone: stopping here could not be run again.
        _index_files(
            collection, source, scan, progress, force=False, interruptible=False
        )


def delete_collection(operation: Operation, progress: Progress) -> None:
    collection = operation.collection
    progress.update(force=True, step="deleting", total=collection.documents.count())
    _delete_documents(collection.documents.all(), progress)
    details = {"sources": [s.path for s in collection.sources.all()]}
    with transaction.atomic():
        # Written first, while the entry may still reference the collection.
        record_guarded(
            AuditLog.Action.COLLECTION_DELETED,
            collection=collection,
            operation=operation,
            details=details,
        )
        collection.delete()
    operation.collection = None


def _delete_documents(documents, progress: Progress) -> None:
    """Delete in short transactions so other writers are not held up."""
    while True:
        ids = list(documents.values_list("id", flat=True)[:DELETE_BATCH])
        if not ids:
            return
        with transaction.atomic():
            Chunk.objects.filter(document_id__in=ids).delete()
            Document.objects.filter(id__in=ids).delete()
        progress.update(done=progress.operation.done + len(ids))


def settle_collection(operation: Operation) -> None:
    """Set the collection's status from the operation's outcome."""
    collection = Collection.objects.filter(id=operation.collection_id).first()
    if collection is None:
        return
    operation.refresh_from_db()
    collection.refresh_counters()
    if operation.status == Operation.Status.FAILED:
        status, message = Collection.Status.ERROR, operation.error
    elif collection.failed_count:
        status = Collection.Status.DEGRADED
        message = f"{collection.failed_count} document(s) could not be indexed"
    else:
        status, message = Collection.Status.READY, ""
    if operation.status == Operation.Status.CANCELLED and not collection.document_count:
        status, message = Collection.Status.PENDING, "The last operation was cancelled"
    Collection.objects.filter(id=collection.id).update(
        status=status, status_message=message, updated_at=timezone.now()
    )
