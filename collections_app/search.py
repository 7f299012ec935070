"""Hybrid search: dense vectors and keywords, fused by reciprocal rank fusion.

Dense: each collection's vectors are held in memory as one matrix per process,
reloaded when the collection's chunks change. Keywords: SQLite FTS5 (bm25) or
PostgreSQL full-text search (ts_rank), depending on the database.
"""

import re
import threading
import time
from dataclasses import dataclass

import numpy as np
from django.db import connection
from django.db.models import Count, Max

from collections_app.embedding import DIMENSIONS, get_embedder
from collections_app.models import Chunk, Collection
from operations import metrics

RRF_K = 60
CANDIDATES = 50
MAX_QUERY_CHARS = 1000
_WORD = re.compile(r"\w+", re.UNICODE)
STOPWORDS = frozenset(
    "a an and are as at be by can do does for from how i in is it of on or that the "
    "this to what when where which who why with you your".split()
)


@dataclass
class Result:
    chunk_id: int
    collection: str
    collection_id: str
    source: str
    document: str
    passage: str
    start: int
    end: int
    score: float
    highlighted: list[tuple[str, bool]]

    def to_dict(self) -> dict:
        return {
            "collection": self.collection,
            "document": self.document,
            "source": self.source,
            "passage": self.passage,
            "start": self.start,
            "end": self.end,
            "score": round(self.score, 6),
        }


def visible_collections(user):
    """Collections a user may search: their own; staff may search all."""
    qs = Collection.objects.all()
    if not user.is_staff:
        qs = qs.filter(owner=user)
    return qs


def clean_query(query: str) -> str:
    """NUL and other control characters become spaces; length is bounded."""
    text = "".join(
        ch if ch.isprintable() else " " for ch in (query or "")[:MAX_QUERY_CHARS]
    )
    return " ".join(text.split())


def search(
    user,
    query: str,
    collection: Collection | None = None,
    limit: int = 10,
    via: str = "web",
) -> list[Result]:
    started = time.perf_counter()
    query = clean_query(query)
    if not query.strip():
        return []
    collections = (
        [collection] if collection is not None else list(visible_collections(user))
    )
    results = _ranked(query, [c.id for c in collections], limit) if collections else []
    # Counted whenever a query was answered, even by "nothing to search".
    metrics.SEARCH_REQUESTS.labels(via).inc()
    metrics.SEARCH_LATENCY.observe(time.perf_counter() - started)
    return results


def _ranked(query: str, ids: list[int], limit: int) -> list[Result]:
    dense = dense_ranking(query, ids)
    keyword = keyword_ranking(query, ids)
    return _load_results(best_per_document(fuse([dense, keyword]), limit), query)


def best_per_document(
    fused: list[tuple[int, float]], limit: int
) -> list[tuple[int, float]]:
    """The best passage of each document, best first: a page that matches in
    many places fills one result, not five, and the next pages get a turn."""
    document_of = dict(
        Chunk.objects.filter(id__in=[i for i, _ in fused]).values_list(
            "id", "document_id"
        )
    )
    seen: set[int] = set()
    best = []
    for chunk_id, score in fused:
        document = document_of.get(chunk_id)
        if document is None or document in seen:
            continue
        seen.add(document)
        best.append((chunk_id, score))
        if len(best) == limit:
            break
    return best


def fuse(rankings: list[list[int]]) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: each list adds 1 / (RRF_K + rank) to an item's score."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, chunk_id in enumerate(ranking, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


class _VectorIndex:
    def __init__(self, signature, ids: np.ndarray, matrix: np.ndarray):
        self.signature = signature
        self.ids = ids
        self.matrix = matrix


_indexes: dict[str, _VectorIndex] = {}
_indexes_lock = threading.Lock()


def _vector_index(collection_id) -> _VectorIndex:
    signature = tuple(
        Chunk.objects.filter(collection_id=collection_id)
        .aggregate(n=Count("id"), m=Max("id"))
        .values()
    )
    key = str(collection_id)
    with _indexes_lock:
        cached = _indexes.get(key)
    if cached is not None and cached.signature == signature:
        return cached
    rows = (
        Chunk.objects.filter(collection_id=collection_id)
        .order_by("id")
        .values_list("id", "vector")
    )
    ids = np.empty(signature[0] or 0, dtype=np.int64)
    matrix = np.empty((signature[0] or 0, DIMENSIONS), dtype=np.float32)
    count = 0
    for count, (chunk_id, vector) in enumerate(rows.iterator(chunk_size=2000), start=1):
        if count > len(ids):
            break
        ids[count - 1] = chunk_id
        matrix[count - 1] = np.frombuffer(bytes(vector), dtype=np.float32)
    index = _VectorIndex(signature, ids[:count], matrix[:count])
    with _indexes_lock:
        _indexes[key] = index
    return index


def dense_ranking(query: str, collection_ids: list) -> list[int]:
    vector = get_embedder().embed([query])[0]
    best_ids, best_scores = [], []
    for collection_id in collection_ids:
        index = _vector_index(collection_id)
        if not len(index.ids):
            continue
        scores = index.matrix @ vector
        k = min(CANDIDATES, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        best_ids.append(index.ids[top])
        best_scores.append(scores[top])
    if not best_ids:
        return []
    ids = np.concatenate(best_ids)
    scores = np.concatenate(best_scores)
    order = np.argsort(-scores, kind="stable")[:CANDIDATES]
    return [int(i) for i in ids[order]]


def query_words(query: str) -> list[str]:
    seen: list[str] = []
    for word in _WORD.findall(query.lower()):
        if word not in seen:
            seen.append(word)
    return seen[:32]


def keyword_ranking(query: str, collection_ids: list) -> list[int]:
    words = query_words(query)
    # Words such as "a" or "the" match nearly every passage, and ranking every
    # match is what makes a word search slow; meaning covers what they add.
    words = [w for w in words if w not in STOPWORDS] or words
    if not words:
        return []
    placeholders = ", ".join(["%s"] * len(collection_ids))
    params_ids = [_db_id(c) for c in collection_ids]
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            match = " OR ".join(f'"{w}"' for w in words)
            cursor.execute(
                "SELECT c.id FROM collections_app_chunk_fts f "
                # The covering index (migration 0003) spares reading each
                # match's text and vector just to learn its collection.
                "JOIN collections_app_chunk c "
                "INDEXED BY collections_app_chunk_id_collection ON c.id = f.rowid "
                f"WHERE collections_app_chunk_fts MATCH %s AND c.collection_id IN ({placeholders}) "
                "ORDER BY bm25(collections_app_chunk_fts) LIMIT %s",
                [match, *params_ids, CANDIDATES],
            )
        else:
            # websearch_to_tsquery never raises on odd input; "or" widens recall.
            tsquery = " or ".join(words)
            cursor.execute(
                "SELECT id FROM collections_app_chunk "
                "WHERE to_tsvector('english', text) @@ websearch_to_tsquery('english', %s) "
                f"AND collection_id IN ({placeholders}) "
                "ORDER BY ts_rank(to_tsvector('english', text), "
                "websearch_to_tsquery('english', %s)) DESC, id LIMIT %s",
                [tsquery, *params_ids, tsquery, CANDIDATES],
            )
        return [row[0] for row in cursor.fetchall()]


def _db_id(collection_id) -> str:
    """UUIDs as the backend stores them (SQLite: 32 hex digits)."""
    return collection_id.hex if connection.vendor == "sqlite" else str(collection_id)


def _load_results(fused: list[tuple[int, float]], query: str) -> list[Result]:
    chunks = Chunk.objects.filter(id__in=[i for i, _ in fused]).select_related(
        "document__source", "collection"
    )
    by_id = {c.id: c for c in chunks}
    words = query_words(query)
    results = []
    for chunk_id, score in fused:
        chunk = by_id.get(chunk_id)
        if chunk is None:
            continue
        results.append(
            Result(
                chunk_id=chunk.id,
                collection=chunk.collection.name,
                collection_id=str(chunk.collection_id),
                source=chunk.document.source.path,
                document=chunk.document.path,
                passage=chunk.text,
                start=chunk.start,
                end=chunk.end,
                score=score,
                highlighted=highlight(chunk.text, words),
            )
        )
    return results


def highlight(text: str, words: list[str]) -> list[tuple[str, bool]]:
    """Split text into (segment, is_match) pairs; templates escape each segment.

    Matching uses the words escaped as literals and never builds replacement
    text from them, so a query such as `C:\\Users` is shown as typed.
    """
    words = [w for w in words if w not in STOPWORDS and (len(w) > 2 or w.isdigit())]
    if not words:
        return [(text, False)]
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    # Whole words that start with a query word, so "tomato" marks "tomatoes".
    pattern = re.compile(rf"(?<!\w)(?:{alternatives})\w*", re.IGNORECASE)
    segments: list[tuple[str, bool]] = []
    position = 0
    for match in pattern.finditer(text):
        if match.start() > position:
            segments.append((text[position : match.start()], False))
        segments.append((match.group(0), True))
        position = match.end()
    if position < len(text):
        segments.append((text[position:], False))
    return segments
