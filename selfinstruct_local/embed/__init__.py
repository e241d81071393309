"""Sentence embedders for the semantic screen: texts in, L2-normalized float32 vectors out.

`load_embedder(NAME|PATH)` runs the user's own model, offline: a registry entry (`kind: embed`
for embedding checkpoints; any other entry, a chat model included, is mean-pooled) or a
checkpoint directory (bge-m3, multilingual-e5, gte, any sentence-transformers checkpoint, or a
plain LLM). Backends:
- `transformers` (default): in this process; the checkpoint's own pooling (pooling.py);
- `vllm`: vLLM's pooling runner in this process, the same vectors, faster on many texts, slower
  to start (embed/vllm.py);
- a server's `/v1/embeddings` when `base_url` is given (embed/openai.py); NAME is then the
  server's model name.
Nothing is downloaded: a packaged model is prepared from its installed package, as for runs.

The packaged SmolLM2-135M, mean-pooled, is a weak embedder: its vectors sit in a narrow cone, so
it tells wording apart more than meaning, and Chinese hardly at all. Measured on the first 10,000
sentences of each ../shared/bench pool, the cosine of each with its nearest other sentence: median
0.963 in English (3.1% have one at 0.99 or more: mostly one word changed, "Get the Mistral
tokenizer v3." / "... v7."), median 0.993 in Chinese, where unrelated sentences score 0.99. It
keeps the code path real for tests and the demo; use a real embedding model for data.

Suggested `--semantic-threshold` (cosine; a candidate at or above it is a semantic duplicate),
per model family. The SmolLM2 value was measured here; the others are starting points taken from
where the families put paraphrases on their published score scales, not measured here, so check
them on a sample of your own pool:
- smollm2-135m (mean-pooled): 0.99 for English; no useful value for Chinese;
- bge-m3, bge-*-v1.5: 0.90;
- multilingual-e5-*, e5-*: 0.95 (their scores crowd into 0.7-1.0);
- gte-*: 0.90.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from selfinstruct_local.engines.base import DEFAULT_SERVER_TIMEOUT, EngineOptions
from selfinstruct_local.errors import SigenError
from selfinstruct_local.models import Registry, ensure_weights, load_registry

BACKENDS = ("transformers", "vllm")


class Embedder(Protocol):
    name: str  # the model, as a manifest records it
    backend: str  # "transformers", "vllm" or "openai"
    dim: int  # the vectors' size (0 until known, for a server before its first answer)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A (len(texts), dim) float32 array, one L2-normalized row per text, in order."""
        ...

    def close(self) -> None: ...


def normalized(vectors: np.ndarray, model: str) -> np.ndarray:
    """Rows scaled to norm 1 (float32), so a dot product is the cosine. A row that cannot be
    (all zeros, or not finite) is the model's fault, said as such."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
    bad = np.flatnonzero(~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0))
    if len(bad):
        raise SigenError(f"embedding model {model!r} gave {len(bad)} vector(s) that are zero or "
                         f"not finite (text {int(bad[0]) + 1} of the batch first); check the "
                         "model and its dtype (float16 can overflow: try float32).")
    return (vectors / norms).astype(np.float32)


PROGRESS_SECONDS = 10.0  # a line at most this often while many texts are embedded
PROGRESS_CHUNK = 1024  # texts per call while progress is reported


def embed_with_progress(embedder: Embedder, texts: Sequence[str], log,
                        every: float = PROGRESS_SECONDS) -> np.ndarray:
    """`embedder.embed(texts)`, in chunks, with a line to `log` every `every` seconds (how
    many, how fast, how long still): embedding a file of 100,000 rows takes minutes on a CPU."""
    from selfinstruct_local.progress import clock

    texts = list(texts)
    if len(texts) <= PROGRESS_CHUNK:
        return embedder.embed(texts)
    begun = last = time.perf_counter()
    parts: list[np.ndarray] = []
    done = 0
    for start in range(0, len(texts), PROGRESS_CHUNK):
        parts.append(embedder.embed(texts[start:start + PROGRESS_CHUNK]))
        done += len(parts[-1])
        now = time.perf_counter()
        if now - last >= every and done < len(texts):
            rate = done / max(now - begun, 1e-9)
            log(f"  embedded {done:,} of {len(texts):,} texts ({rate:,.0f}/s, about "
                f"{clock((len(texts) - done) / rate)} left)")
            last = now
    return np.concatenate(parts)


def load_embedder(name_or_path: str, *, registry: Registry | None = None,
                  backend: str = "transformers", base_url: str | None = None,
                  api_key: str | None = None, gpus: int = 0, batch_size: int = 32,
                  server_timeout: float = DEFAULT_SERVER_TIMEOUT, log=print,
                  engine_log: Path | None = None) -> Embedder:
    """The embedder `--embed-model NAME|PATH` names: the model a server serves under that name
    when `base_url` is given, else the checkpoint run in this process by `backend`.
    `batch_size`: texts per forward pass in this process (a server gets at least 64 a request);
    `engine_log`: where vLLM's own output goes (the run's engine.log)."""
    if base_url:
        from selfinstruct_local.embed.openai import OpenAIEmbedder

        return OpenAIEmbedder(base_url, name_or_path, api_key=api_key,
                              server_timeout=server_timeout, batch_size=max(batch_size, 64))
    if backend not in BACKENDS:
        raise SigenError(f"unknown embedding backend {backend!r}; choose one of "
                         f"{', '.join(BACKENDS)}, or pass --embed-base-url for a server")
    spec = (registry or load_registry()).resolve(name_or_path)
    ensure_weights(spec, log=log)  # a packaged model is prepared once; nothing is downloaded
    if backend == "vllm":
        from selfinstruct_local.embed.vllm import VLLMEmbedder

        return VLLMEmbedder(spec, EngineOptions(gpus=gpus, log=log, engine_log=engine_log))
    from selfinstruct_local.embed.transformers import TransformersEmbedder

    return TransformersEmbedder(spec, gpus=gpus, batch_size=batch_size)


__all__ = ["BACKENDS", "Embedder", "load_embedder", "normalized"]
