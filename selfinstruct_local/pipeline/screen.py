"""Screening one candidate instruction: the filters, the method's own check, then the
near-duplicate index the method names for it, then (with --semantic-threshold) the pool's
embeddings.

A plain function over the run's context: a candidate either becomes a pending task (with an id,
its most similar pool instructions and its average similarity to the pool) or a rejected row
with the reason. Its cost does not grow with the pool: the index's exact check is near-linear
over the run, and the similarity figures come from `NearDupIndex.neighbours` (the items that
share the instruction's rare tokens, plus a fixed-size uniform sample of the pool).
"""

from __future__ import annotations

from selfinstruct_local.pipeline.filters import check_instruction
from selfinstruct_local.pipeline.semantic_screen import REASON as SEMANTIC_DUPLICATE
from selfinstruct_local.pipeline.stages import Context, Method

TOP_SIMILAR = 10


def screen(ctx: Context, method: Method, candidate: dict, round_: int) -> dict:
    """A rejected row (it has "reason") or a pending row for one candidate."""
    text = candidate["instruction"]
    row: dict = {"stage": "instruction", "round": round_, "instruction": text,
                 **{k: candidate[k] for k in method.lineage if k in candidate}}
    reason = check_instruction(text, ctx.config.lang) or method.check(ctx, candidate)
    index = method.index_for(ctx, candidate)
    vector = None
    if reason is None:
        decision = index.check(text)  # adds nothing: the text joins once every check passed
        reason = None if decision.kept else decision.reason or "near_duplicate"
        match = None if decision.match_id is None else (index.text(decision.match_id),
                                                        decision.match_score)
        if reason is None and ctx.semantic is not None:  # ROUGE-L passed: now by meaning
            vector = ctx.semantic.vector_of(text)
            if (hit := ctx.semantic.duplicate_of(vector)) is not None:
                reason, match = SEMANTIC_DUPLICATE, hit
        if match is not None:
            row["most_similar"] = [{"instruction": match[0], "score": round(match[1], 4)}]
    if reason is not None:
        ctx.state.reject(reason)
        method.dropped(ctx, candidate)
        return {**row, "reason": reason}
    index.add(text)
    row_id = ctx.state.next_id()
    if ctx.semantic is not None:
        ctx.semantic.add(row_id, text, vector)
    method.accepted(ctx, candidate)
    similar, average = index.neighbours(text, k=TOP_SIMILAR, exclude=len(index) - 1)
    return {
        **row,
        **{k: v for k, v in candidate.items() if k != "instruction"},
        "id": row_id,
        "most_similar": [{"instruction": index.text(i), "score": round(s, 4)}
                         for i, s in similar],
        "avg_similarity": round(average, 4),
        "max_similarity": round(similar[0][1], 4) if similar else 0.0,
    }


def embed_ahead(ctx: Context, candidates: list[dict]) -> None:
    """With --semantic-threshold: embed together the candidates that pass the filters, before
    they are screened one by one (SemanticScreen.embed_ahead)."""
    if ctx.semantic is not None:
        ctx.semantic.embed_ahead([c["instruction"] for c in candidates
                                  if check_instruction(c["instruction"], ctx.config.lang) is None])


def admit(ctx: Context, method: Method, row: dict) -> None:
    """Put a task accepted before (a pending row read back on resume) where screening put it:
    into its near-duplicate index, and into what the method keeps of accepted tasks."""
    method.index_for(ctx, row).add(row["instruction"])
    method.accepted(ctx, row)
