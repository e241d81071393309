#!/usr/bin/env python3
"""Benchmark the exact near-duplicate index against brute force and rouge_score.

For each size N (the first N rows of POOL.jsonl) it times ``greedy_dedup`` (the prefix index)
and ``brute_force_dedup`` (rapidfuzz, every pair), checks that both keep exactly the same rows,
and extrapolates rouge_score to the same greedy pass: its per-pair cost, measured on random
pairs, times the number of pairs a greedy pass scores (each row against every row kept before
it). rouge_score gets its own tokenizer for English; for CJK text, where it sees no tokens at
all, it gets ours. ``--near-threshold`` runs the same on a pool derived from the sentences so
that many pairs land around F = 0.7 (interleaved deletions and insertions, repeated tokens,
reordered halves). All timings are single-threaded.

    python scripts/bench_dedup.py /work/shared/bench/pool_en.jsonl --sizes 10000,20000,40000,60000
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfinstruct_local.dedup import NearDupIndex, brute_force_dedup, greedy_dedup  # noqa: E402
from selfinstruct_local.text import is_cjk_char, tokenize  # noqa: E402


def load_texts(path: Path, field: str) -> list[str]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line)[field] for line in handle if line.strip()]


def is_cjk_corpus(texts: Sequence[str]) -> bool:
    sample = "".join(texts[:500])
    letters = [ch for ch in sample if ch.isalnum()]
    return sum(map(is_cjk_char, letters)) > 0.3 * max(len(letters), 1)


def near_threshold_pool(texts: Sequence[str], size: int, seed: int = 0) -> list[str]:
    """Sentences plus edited copies whose ROUGE-L with the original is around 0.7."""
    rng = random.Random(seed)
    sep = "" if is_cjk_corpus(texts) else " "
    out: list[str] = []
    while len(out) < size:
        tokens = tokenize(rng.choice(texts))
        out.append(sep.join(tokens))
        for _ in range(rng.randint(1, 4)):
            edited = list(tokens)
            for _ in range(rng.randint(1, 2)):
                edited = _edit(rng, edited)
            out.append(sep.join(edited))
    rng.shuffle(out)
    return out[:size]


def _edit(rng: random.Random, tokens: list[str]) -> list[str]:
    kind = rng.randrange(4)
    if kind == 0:  # interleaved deletions: drop every k-th token
        k = rng.randint(3, 6)
        return [t for i, t in enumerate(tokens) if i % k != k - 1]
    if kind == 1:  # interleaved insertions: repeat a neighbour every k tokens
        k = rng.randint(3, 6)
        return [u for i, t in enumerate(tokens) for u in ([t, tokens[i - 1]][: 1 + (i % k == 0)])]
    if kind == 2:  # repeated tokens
        return [u for t in tokens for u in ([t, t] if rng.random() < 0.25 else [t])]
    cut = rng.randint(1, max(1, len(tokens) - 1))  # reordered halves, uneven split
    return tokens[cut:] + tokens[:cut]


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def streaming_pass(texts: Sequence[str]) -> list[bool]:
    """What the pipeline does: check_and_add one by one, no order known in advance."""
    index = NearDupIndex()
    return [index.check_and_add(t).kept for t in texts]


EXTRAS: dict[str, Callable[[Sequence[str]], list[bool]]] = {
    "streaming": streaming_pass,
    "lsh": lambda texts: [d.kept for d in greedy_dedup(texts, use_lsh=True)],
}


def rouge_pair_seconds(texts: Sequence[str], cjk: bool, pairs: int, seed: int = 1) -> float:
    """rouge_score's cost for one ROUGE-L pair, tokenizing both texts as it does per call."""
    from rouge_score import rouge_scorer

    class OurTokenizer:
        def tokenize(self, text: str) -> list[str]:
            return tokenize(text)

    scorer = rouge_scorer.RougeScorer(
        ["rougeL"], use_stemmer=False, tokenizer=OurTokenizer() if cjk else None
    )
    rng = random.Random(seed)
    sample = [(rng.choice(texts), rng.choice(texts)) for _ in range(pairs)]
    start = time.perf_counter()
    for a, b in sample:
        scorer.score(a, b)
    return (time.perf_counter() - start) / pairs


def greedy_pairs(kept: Sequence[bool], texts: Sequence[str]) -> int:
    """Pairs a plain greedy pass scores: each non-empty row against every row kept so far."""
    total = pool = 0
    for keep, text in zip(kept, texts, strict=True):
        if tokenize(text):
            total += pool
        pool += keep
    return total


def calibration_ms() -> float:
    """A fixed pure-Python workload, to compare timings taken on busy and idle machines."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        sum(i * i for i in range(200_000))
        best = min(best, time.perf_counter() - start)
    return best * 1000


def near_threshold_report(pool: Sequence[str]) -> None:
    """How hard the pool is: rejections at exactly F = 0.7, and kept rows that only just
    escaped (best F against the rows kept before them in [0.65, 0.7))."""
    index = NearDupIndex()
    ties = close_calls = 0
    for text in pool:
        best = index.most_similar(text, k=1)[0] if len(index) else []
        decision = index.check_and_add(text)
        if decision.reason == "near_duplicate" and decision.match_score == 0.7:
            ties += 1
        if decision.kept and best and 0.65 <= best[0][1] < 0.7:
            close_calls += 1
    print(f"rejected at exactly F = 0.7: {ties}; kept with best F in [0.65, 0.7): {close_calls}")


def run(
    texts: Sequence[str],
    sizes: Sequence[int],
    skip_brute_above: int,
    rouge_cost: float,
    extras: Sequence[str],
) -> None:
    header = "| N | index s | kept | brute s | kept | identical | speed-up | rouge_score est. s |"
    header += "".join(f" {x} s |" for x in extras)
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    base = None
    for n in sizes:
        part = texts[:n]
        seconds, decisions = timed(lambda part=part: greedy_dedup(part))
        kept = [d.kept for d in decisions]
        base = base or (n, seconds)
        row = f"| {n} | {seconds:.2f} | {sum(kept)} |"
        if n <= skip_brute_above:
            brute_s, brute = timed(lambda part=part: brute_force_dedup(part))
            same = "yes" if brute == kept else "NO"
            row += f" {brute_s:.1f} | {sum(brute)} | {same} | {brute_s / seconds:.0f}x |"
        else:
            row += " - | - | - | - |"
        row += f" {rouge_cost * greedy_pairs(kept, part):.0f} |"
        for extra in extras:
            extra_s, extra_kept = timed(lambda part=part, extra=extra: EXTRAS[extra](part))
            row += f" {extra_s:.2f}{'' if extra_kept == kept else ' (DIFFERS)'} |"
        print(row, flush=True)
    if base and len(sizes) > 1:
        growth = seconds / base[1]
        print(f"\nindex time grew {growth:.1f}x for {n / base[0]:.0f}x the rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pool", type=Path, help="JSONL file, one row per line")
    parser.add_argument("--field", default="instruction")
    parser.add_argument("--sizes", default="10000,20000,40000,60000")
    parser.add_argument("--skip-brute-above", type=int, default=10**9, metavar="N")
    parser.add_argument("--rouge-pairs", type=int, default=3000, help="pairs timed for rouge")
    parser.add_argument(
        "--near-threshold",
        type=int,
        default=0,
        metavar="N",
        help="also run on an N-row pool built to have many pairs near F=0.7",
    )
    parser.add_argument("--lsh", action="store_true", help="also time use_lsh=True")
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="also time check_and_add one by one (the pipeline's path)",
    )
    args = parser.parse_args()

    texts = load_texts(args.pool, args.field)
    sizes = [int(s) for s in args.sizes.split(",") if int(s) <= len(texts)] or [len(texts)]
    cjk = is_cjk_corpus(texts)
    rouge_cost = rouge_pair_seconds(texts, cjk, args.rouge_pairs)
    extras = ["streaming"] * args.streaming + ["lsh"] * args.lsh
    print(
        f"{args.pool} ({len(texts)} rows, {'CJK' if cjk else 'non-CJK'}); rouge_score "
        f"{rouge_cost * 1e6:.0f} us/pair with {'our' if cjk else 'its own'} tokenizer; "
        f"calibration {calibration_ms():.0f} ms\n"
    )
    run(texts, sizes, args.skip_brute_above, rouge_cost, extras)
    if args.near_threshold:
        pool = near_threshold_pool(texts, args.near_threshold)
        print(f"\nnear-threshold pool: {len(pool)} rows derived from the sentences")
        run(pool, [len(pool)], args.skip_brute_above, rouge_cost, extras)
        near_threshold_report(pool)


if __name__ == "__main__":
    main()
