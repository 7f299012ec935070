"""Indexing throughput against raw embedding speed, and search latency.

Run by hand from the project root (not part of the tests):

    .venv/bin/python bench/index_throughput.py [--corpus DIR] [--files N]

1. Index the corpus (default: the Python 3.11 HTML docs) through the real
   pipeline, inline: scan, hash, extract, chunk, embed, store. Chunks/s.
2. Embed a sample of the same chunks directly with the same model: chunks/s.
   The ratio of the two is the pipeline's efficiency (target >= 0.85).
3. Grow the collection to at least --min-chunks chunks (copies of real chunks
   with their vectors), then time 50+ searches: p50 / p95 (target p95 <= 50 ms).
Everything runs in a temporary data directory, measured in one run.
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUERIES = [
    "sort a list of dictionaries by a key",
    "read a file line by line",
    "what does the walrus operator do",
    "assignment expressions",
    "format a string with f-strings",
    "remove duplicates from a list",
    "merge two dictionaries",
    "check if a file exists",
    "create a virtual environment",
    "parse command line arguments",
    "run a subprocess and capture output",
    "read a csv file",
    "write json to a file",
    "current date and time",
    "convert a string to an integer",
    "default values of function arguments",
    "iterate over a dictionary",
    "list comprehension with condition",
    "catch multiple exceptions",
    "define a class with properties",
    "what is a generator",
    "use a context manager",
    "regular expression search and replace",
    "join a list of strings",
    "split a string on whitespace",
    "random number between two values",
    "copy a list",
    "deep copy an object",
    "count occurrences in a list",
    "reverse a string",
    "async and await coroutines",
    "threads and locks",
    "multiprocessing pool",
    "logging configuration",
    "unit testing with unittest",
    "type hints for functions",
    "data classes",
    "enumerate with index",
    "zip two lists together",
    "lambda functions",
    "decorators with arguments",
    "string to bytes encoding",
    "open a url and read the response",
    "sqlite database queries",
    "pathlib join paths",
    "environment variables",
    "exit a program with a status code",
    "sort in descending order",
    "match statement pattern matching",
    "global and nonlocal variables",
    "set operations union intersection",
    "named tuples",
]


def setup_django(data_dir: Path, roots: str) -> None:
    os.environ.update(
        SECRET_KEY="bench",
        DATA_DIR=str(data_dir),
        DOCUMENT_ROOTS=roots,
        QUEUE_SYNC="true",
        QUARRY_ENV_FILE=str(data_dir / "none.env"),
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="webui.settings",
    )
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def index_corpus(corpus: Path, files: int | None, data_dir: Path):
    from django.contrib.auth import get_user_model

    from collections_app import services
    from operations.models import Operation

    source = corpus
    if files:
        source = data_dir / "corpus"
        for path in sorted(corpus.rglob("*.html"))[:files]:
            target = source / path.relative_to(corpus)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    user = get_user_model().objects.create_superuser("bench", password="bench-pw-1")
    started = time.perf_counter()
    operation = services.create_collection(
        services.Request(user=user), name="bench", source=str(source)
    )
    elapsed = time.perf_counter() - started
    operation = Operation.objects.get(id=operation.id)
    return user, operation, elapsed


def raw_embedding_rate(sample: list[str]) -> float:
    from collections_app.embedding import get_embedder

    embedder = get_embedder()
    embedder.embed(sample[:8])
    started = time.perf_counter()
    embedder.embed(sample)
    return len(sample) / (time.perf_counter() - started)


def grow(collection, minimum: int) -> int:
    from collections_app.models import Chunk, Document

    originals = list(
        Chunk.objects.filter(collection=collection).values(
            "text", "start", "end", "vector"
        )
    )
    count = len(originals)
    copy = 0
    while count < minimum:
        copy += 1
        source = collection.sources.first()
        document = Document.objects.create(
            collection=collection,
            source=source,
            path=f"copy-{copy}",
            status=Document.Status.SKIPPED,
            error_reason="benchmark copy",
        )
        Chunk.objects.bulk_create(
            Chunk(collection=collection, document=document, ordinal=i, **row)
            for i, row in enumerate(originals)
        )
        count += len(originals)
    return count


def time_searches(user, collection, rounds: int) -> tuple[list[float], dict]:
    from collections_app.search import search

    search(user, "warm up the caches", collection=collection)
    timings = []
    top = {}
    for round_ in range(rounds):
        for query in QUERIES:
            started = time.perf_counter()
            results = search(user, query, collection=collection, limit=5)
            timings.append((time.perf_counter() - started) * 1000)
            if round_ == 0:
                top[query] = [r.document for r in results]
    return timings, top


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="/usr/share/doc/python3.11/html")
    parser.add_argument(
        "--files", type=int, default=None, help="index only the first N HTML files"
    )
    parser.add_argument(
        "--sample", type=int, default=400, help="chunks for the raw rate"
    )
    parser.add_argument("--min-chunks", type=int, default=20000)
    parser.add_argument(
        "--rounds", type=int, default=2, help="passes over the query list"
    )
    args = parser.parse_args()
    corpus = Path(args.corpus)
    if not corpus.is_dir():
        sys.exit(f"Corpus {corpus} not found (apt-get install python3.11-doc)")

    with tempfile.TemporaryDirectory(prefix="quarry-bench-") as tmp:
        data_dir = Path(tmp)
        setup_django(data_dir, f"{corpus},{data_dir}")
        from collections_app.models import Chunk

        user, operation, elapsed = index_corpus(corpus, args.files, data_dir)
        pipeline = operation.chunks / elapsed
        texts = list(Chunk.objects.values_list("text", flat=True))
        random.Random(7).shuffle(texts)
        raw = raw_embedding_rate(texts[: args.sample])
        print(f"operation      {operation.status}: {operation.counts()}")
        print(
            f"indexing       {elapsed:.1f} s for {operation.found} files, {operation.chunks} chunks"
        )
        print(f"pipeline       {pipeline:.1f} chunks/s")
        print(
            f"raw embedding  {raw:.1f} chunks/s (sample of {min(args.sample, len(texts))})"
        )
        print(f"ratio          {pipeline / raw:.2f}  (target >= 0.85)")

        collection = operation.collection
        total = grow(collection, args.min_chunks)
        timings, top = time_searches(user, collection, args.rounds)
        p50, p95 = statistics.median(timings), percentile(timings, 0.95)
        print(
            f"search         {len(timings)} queries on {total} chunks: "
            f"p50 {p50:.1f} ms, p95 {p95:.1f} ms  (target p95 <= 50 ms)"
        )
        for query in QUERIES[:6]:
            print(f"  {query!r}: {top[query][:3]}")


if __name__ == "__main__":
    main()
