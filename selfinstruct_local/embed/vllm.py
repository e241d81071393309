"""Embeddings with vLLM's pooling runner in this process (`vllm.LLM(runner="pooling")`).

The engine is the generation engine's (engines/vllm.py: its watchdog, engine.log, shutdown),
started with the checkpoint's pooling. Measured on the 2-core CPU with the packaged SmolLM2: the
same vectors as the transformers backend (cosine >= 0.9999997 on 1,024 sentences) at about 4x
its speed (8.1 against 2.0 English sentences per second on a loaded machine), after a start of
about 100 s against 6 s; worth it for many texts (`sigen dedup` of a large file), not for a few.
On a GPU shared with a generating vLLM engine in the same process, leave it room: vLLM takes
most of the GPU's memory for the first engine it starts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from selfinstruct_local.embed.pooling import Pooling, read_pooling
from selfinstruct_local.engines.base import EngineOptions
from selfinstruct_local.models import ModelSpec


class VLLMEmbedder:
    backend = "vllm"

    def __init__(self, spec: ModelSpec, options: EngineOptions) -> None:
        from selfinstruct_local.engines.vllm import VLLMEngine

        self.name = spec.name
        self.pooling: Pooling = read_pooling(spec.path)
        self.dim = self.pooling.dim
        self.engine = VLLMEngine(spec, options, pooling=self.pooling.mode.upper())
        self.load_seconds = self.engine.stats.load_seconds

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, in order: float32, L2-normalized."""
        from selfinstruct_local.embed import normalized

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        outputs = self.engine.llm.embed(
            [self.pooling.prefix + t for t in texts], use_tqdm=False,
            tokenization_kwargs={"truncation": True, "max_length": self.pooling.max_tokens})
        return normalized(np.array([o.outputs.embedding for o in outputs], dtype=np.float32),
                          self.name)

    def close(self) -> None:
        self.engine.close()
