"""Embeddings with transformers in this process: the checkpoint's own pooling (pooling.py) over
its last hidden state, texts batched by length so a batch carries little padding."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from selfinstruct_local.embed.pooling import Pooling, read_pooling
from selfinstruct_local.engines.base import cpu_dtype
from selfinstruct_local.models import ModelSpec

_DTYPES = {"bfloat16", "float16", "float32"}


class TransformersEmbedder:
    backend = "transformers"

    def __init__(self, spec: ModelSpec, *, gpus: int = 0, batch_size: int = 32) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        # Its "Loading weights" bar is noise between sigen's own lines (a run's, a report's).
        transformers_logging.disable_progress_bar()

        self._torch = torch
        self.name = spec.name
        self.pooling: Pooling = read_pooling(spec.path)
        self.batch_size = max(1, batch_size)
        self.device = "cuda" if gpus > 0 else "cpu"
        dtype = spec.dtype if gpus > 0 else cpu_dtype(spec.dtype)
        start = time.perf_counter()
        where = self.pooling.model_dir or spec.path
        self.tokenizer = AutoTokenizer.from_pretrained(where)
        self.tokenizer.padding_side = "right"  # the last token of row i is at mask.sum - 1
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        # AutoModel: the encoder or decoder without its head (LlamaModel for a causal LM).
        self.model = AutoModel.from_pretrained(
            where, dtype=getattr(torch, dtype) if dtype in _DTYPES else "auto").to(self.device)
        self.model.eval()
        self.dim = int(self.model.config.hidden_size)
        self.load_seconds = time.perf_counter() - start

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, in order: float32, L2-normalized (each row has norm 1)."""
        from selfinstruct_local.embed import normalized

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for at in range(0, len(order), self.batch_size):
            rows = order[at:at + self.batch_size]
            out[rows] = self._pooled([self.pooling.prefix + texts[i] for i in rows])
        return normalized(out, self.name)

    def _pooled(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                               max_length=self.pooling.max_tokens).to(self.device)
        with torch.inference_mode():
            states = self.model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"]
        if self.pooling.mode == "cls":
            pooled = states[:, 0]
        elif self.pooling.mode == "last":
            pooled = states[torch.arange(len(texts)), mask.sum(dim=1) - 1]
        else:
            weights = mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
        return pooled.cpu().numpy()

    def close(self) -> None:
        self.model = None
