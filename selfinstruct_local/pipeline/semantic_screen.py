"""The semantic screen of a run (`--embed-model M --semantic-threshold T`): a candidate that
passes ROUGE-L is also embedded, and rejected as `semantic_duplicate` when its cosine with a
pool instruction's vector is at least T.

The pool is the run's whole pool, whatever near-duplicate index the method keeps (one per
passage for grounded runs, one per generation for evol): the seeds, embedded when the run
opens, then every instruction accepted, in the order it was accepted. Each accepted
instruction's vector is written to embeddings.jsonl right after its pending row (see
semantic_rows), so a resume rebuilds the index from the file and embeds again only what a kill
cut off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from selfinstruct_local.errors import SigenError
from selfinstruct_local.redact import redact_url
from selfinstruct_local.semantic import REASON, SemanticIndex, semantic_threshold
from selfinstruct_local.semantic_rows import embedding_row, rebuild_vectors

__all__ = ["REASON", "SemanticPlan", "SemanticScreen", "load_plan_embedder",
           "open_semantic_screen", "resolve_semantic"]


@dataclass(frozen=True)
class SemanticPlan:
    """The screen as resolved from the command line; `base_url` and `api_key` as given (the
    RunConfig keeps the URL without its credentials, and no key)."""

    model: str
    threshold: float
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    models_file: object = None


def resolve_semantic(embed_model: str | None, threshold: float | None,
                     base_url: str | None, api_key: str | None,
                     models_file=None) -> SemanticPlan | None:
    """The screen the options ask for, checked before anything is written; None when off."""
    if embed_model is None and threshold is None:
        if base_url:
            raise SigenError("--embed-base-url names the server of an --embed-model: pass "
                             "--embed-model NAME and --semantic-threshold T with it")
        return None
    if embed_model is None:
        raise SigenError("--semantic-threshold needs --embed-model NAME|PATH, the model that "
                         "embeds the instructions (e.g. bge-m3, or the packaged smollm2-135m "
                         "as a weak stand-in)")
    if threshold is None:
        raise SigenError(f"--embed-model {embed_model} screens by meaning only with "
                         "--semantic-threshold T (a cosine; suggested: 0.90 for bge, 0.95 for "
                         "e5, 0.99 for smollm2-135m on English; see the README)")
    threshold = semantic_threshold(threshold)
    if base_url:
        from selfinstruct_local.engines.openai import url_problem

        if problem := url_problem(base_url.strip().rstrip("/")):
            raise SigenError(f"--embed-base-url {redact_url(base_url)!r} {problem}: give the "
                             "embedding server's API root, such as http://gpu01:8001/v1")
    else:  # a model run here must be known now, not after the engine has loaded
        from selfinstruct_local.models import load_registry

        load_registry(models_file).resolve(embed_model)
    return SemanticPlan(embed_model, threshold, base_url, api_key, models_file)


class SemanticScreen:
    """The pool's vectors, their index, and the embedding rows not yet handed to the store."""

    def __init__(self, plan: SemanticPlan, embedder) -> None:
        self.plan = plan
        self.embedder = embedder
        self.index = SemanticIndex(plan.threshold)
        self.texts: list[str] = []  # item id -> instruction
        self.embed_seconds = 0.0
        self.embedded = 0
        self._unsaved: list[dict] = []
        self._ahead: dict[str, np.ndarray] = {}  # text -> vector, embedded by embed_ahead

    def embed_ahead(self, texts: list[str]) -> None:
        """Embed in one call the candidates of one completion that may reach the check (a
        server or a GPU embeds a batch in about the time of one text); `vector_of` takes
        them. Those ROUGE-L then rejects were embedded for nothing: cheaper than a call each."""
        self._ahead = {}
        distinct = list(dict.fromkeys(texts))
        if len(distinct) > 1:
            self._ahead = dict(zip(distinct, self.embed(distinct), strict=True))

    def vector_of(self, text: str) -> np.ndarray:
        """The text's vector: embedded ahead, or now."""
        vector = self._ahead.pop(text, None)
        return vector if vector is not None else self.embed([text])[0]

    def embed(self, texts: list[str]) -> np.ndarray:
        started = time.perf_counter()
        vectors = self.embedder.embed(texts)
        self.embed_seconds += time.perf_counter() - started
        self.embedded += len(texts)
        return vectors

    def duplicate_of(self, vector: np.ndarray) -> tuple[str, float] | None:
        """The pool instruction the vector duplicates (cosine >= threshold), with the cosine."""
        hit = self.index.find_duplicate(vector)
        return None if hit is None else (self.texts[hit[0]], hit[1])

    def add(self, item_id: str | None, text: str, vector: np.ndarray) -> None:
        """Put an instruction into the pool; `item_id` (its pending row's id) has its vector
        saved, a seed's (None) is computed again at each start."""
        self.index.add(vector)
        self.texts.append(text)
        if item_id is not None:
            self._unsaved.append(embedding_row(item_id, vector))

    def restore(self, journal: list[dict], stored: list[dict]) -> None:
        """On resume: the journal's instructions (the pending rows, in order) with their saved
        vectors; those a kill left without one are embedded again (and saved)."""
        if not journal:
            return
        ids = [row["id"] for row in journal]
        texts = [row["instruction"] for row in journal]
        started = time.perf_counter()
        vectors, fresh = rebuild_vectors(ids, texts, stored, self.embedder)
        self.embed_seconds += time.perf_counter() - started
        self.embedded += len(fresh)
        self.index.add_many(vectors)
        self.texts.extend(texts)
        self._unsaved.extend(fresh)

    def take_rows(self) -> list[dict]:
        rows, self._unsaved = self._unsaved, []
        return rows

    def record(self) -> dict:
        """The manifest's "semantic" section."""
        return {"embed_model": self.plan.model, "backend": self.embedder.backend,
                "dim": self.embedder.dim, "threshold": self.plan.threshold,
                "pool": len(self.index), "search": self.index.describe(),
                "texts_embedded": self.embedded, "embed_seconds": round(self.embed_seconds, 2)}

    def close(self) -> None:
        self.embedder.close()


def load_plan_embedder(plan: SemanticPlan, gpus: int, log: Callable[[str], None]):
    """The embedder the plan names: on its server, else run here from the registry."""
    from selfinstruct_local.embed import load_embedder
    from selfinstruct_local.models import load_registry

    registry = None if plan.base_url else load_registry(plan.models_file)  # type: ignore[arg-type]
    return load_embedder(plan.model, registry=registry, base_url=plan.base_url,
                         api_key=plan.api_key, gpus=gpus, log=log)


def open_semantic_screen(plan: SemanticPlan, seeds: list[str], gpus: int,
                         log: Callable[[str], None]) -> SemanticScreen:
    """Load the embedder and put the seeds into the pool."""
    started = time.perf_counter()
    embedder = load_plan_embedder(plan, gpus, log)
    screen = SemanticScreen(plan, embedder)
    try:
        if seeds:
            for text, vector in zip(seeds, screen.embed(seeds), strict=True):
                screen.add(None, text, vector)
    except BaseException:
        embedder.close()
        raise
    where = f"the server {redact_url(plan.base_url)}" if plan.base_url else embedder.backend
    log(f"Semantic screen: {plan.model} ({where}), cosine >= {plan.threshold} is a "
        f"duplicate; {len(seeds)} seed instructions embedded in "
        f"{time.perf_counter() - started:.1f} s.")
    return screen
