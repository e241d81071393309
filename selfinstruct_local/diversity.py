"""How diverse a run's instructions are, as figures two runs can be compared on: diversity.json
(written by `sigen stats`), the tables of report.md and `sigen stats --compare`.

- distinct-1/2/3: distinct n-grams over all n-grams of the accepted instructions (Li et al.,
  2016), tokens from text.py (a CJK character is a token, other text is split into words);
- verb-object pairs (verb_object.py): the 20 most common verbs and their 4 most common objects;
- with embeddings (the run's embeddings.jsonl, or `--embed-model` computing them): each
  instruction's nearest-neighbour cosine, k-means clusters and a 2-D PCA map (vector_stats.py).

No model is loaded unless `--embed-model` asks for one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from selfinstruct_local.errors import SigenError
from selfinstruct_local.readable import align, num
from selfinstruct_local.runstore import DIVERSITY, Run, RunStore, load_run, write_atomic
from selfinstruct_local.semantic_rows import EMBEDDINGS, decode_vector
from selfinstruct_local.text import tokenize
from selfinstruct_local.vector_stats import (
    NN_EXACT_LIMIT,
    cluster_count,
    kmeans,
    nearest_neighbour_similarities,
    pca_2d,
)
from selfinstruct_local.verb_object import top_verb_objects, uses_jieba, verb_object

FORMAT = 1  # diversity.json's layout; a file of another is measured again
NGRAMS = (1, 2, 3)
EXAMPLE_CHARS = 90


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Embeddings:
    vectors: np.ndarray  # one L2-normalized row per instruction of `rows`
    rows: list[int]  # positions in run.instructions of the vectors' instructions
    model: str
    source: str  # "embeddings.jsonl" or "--embed-model"


@dataclass
class EmbeddingView:
    """What the map and the histogram draw, beside the figures."""
    points: np.ndarray  # (n, 2) PCA coordinates
    explained: tuple[float, float]
    labels: np.ndarray | None  # cluster of each point (0 = largest), None when not clustered
    similarities: np.ndarray  # nearest-neighbour cosines (all items, or a sample)


@dataclass
class Diversity:
    figures: dict  # diversity.json
    view: EmbeddingView | None


# -- vectors -------------------------------------------------------------------------------


def stored_embeddings(run: Run, warn: Callable[[str], None] = _stderr) -> Embeddings | None:
    """The vectors of the run's accepted instructions in its embeddings.jsonl (the semantic
    screen's), None when it has none. Rows are only read, as the rest of the run."""
    rows = RunStore(run.root).read(EMBEDDINGS, warn, repair=False)
    if not rows:
        return None
    by_id = {row.get("id"): row for row in rows}
    positions, vectors = [], []
    for position, instruction in enumerate(run.instructions):
        row = by_id.get(instruction.get("id"))
        if row is None:
            continue
        try:
            vectors.append(decode_vector(row))
        except ValueError as exc:
            raise SigenError(f"{run.root / EMBEDDINGS}: the vector of {row.get('id')!r} is "
                             f"damaged ({exc}); pass --embed-model to compute the vectors "
                             "again instead.") from None
        positions.append(position)
    if not vectors:
        return None
    if len({len(v) for v in vectors}) > 1:
        raise SigenError(f"{run.root / EMBEDDINGS} holds vectors of different sizes; pass "
                         "--embed-model to compute the vectors again instead.")
    if len(positions) < len(run.instructions):
        warn(f"note: {len(run.instructions) - len(positions)} of {len(run.instructions)} "
             f"instructions have no vector in {EMBEDDINGS}; the embedding figures leave them out")
    config = run.manifest.get("config") or {}
    model = config.get("embed_model") or "the run's embedding model"
    return Embeddings(np.vstack(vectors), positions, str(model), EMBEDDINGS)


def computed_embeddings(run: Run, model: str, models_file: Path | None = None,
                        log: Callable[[str], None] = _stderr) -> Embeddings:
    """The instructions embedded now by `model` (a registry name or a checkpoint directory)."""
    from selfinstruct_local.embed import embed_with_progress, load_embedder
    from selfinstruct_local.models import load_registry

    texts = [row["instruction"] for row in run.instructions]
    embedder = load_embedder(model, registry=load_registry(models_file), log=log)
    try:
        log(f"embedding {len(texts)} instructions with {embedder.name}")
        vectors = embed_with_progress(embedder, texts, log) if texts else \
            np.zeros((0, 1), dtype=np.float32)
    finally:
        embedder.close()
    return Embeddings(vectors, list(range(len(texts))), embedder.name, "--embed-model")


# -- the figures ---------------------------------------------------------------------------


def distinct_ngrams(texts: Sequence[str], n: int) -> dict:
    """Distinct n-grams, all n-grams and their ratio (None without any), over all texts."""
    seen, total = set(), 0
    for text in texts:
        tokens = tokenize(text)
        grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return {"distinct": len(seen), "total": total,
            "ratio": round(len(seen) / total, 4) if total else None}


def _taggers(instructions: Sequence[str]) -> list[str]:
    def named(package: str, what: str) -> str:
        try:
            return f"{package} {version(package)} ({what})"
        except PackageNotFoundError:
            return f"{package} ({what})"

    chinese = [uses_jieba(text) for text in instructions]
    used = []
    if not all(chinese):
        used.append(named("textblob", "Pattern's tagger, with the README's rule"))
    if any(chinese):
        used.append(named("jieba", "jieba.posseg, with the README's rule"))
    return used


def measure(run: Run, embeddings: Embeddings | None = None) -> Diversity:
    """The figures of diversity.json and, with embeddings, what the plots draw."""
    texts = [row["instruction"] for row in run.instructions]
    pairs = [verb_object(text) for text in texts]
    with_verb = [p for p in pairs if p[0] is not None]
    figures = {
        "format": FORMAT,
        "run_dir": str(run.root),
        "lang": (run.manifest.get("config") or {}).get("lang"),
        "instructions": len(texts),
        "distinct": {f"distinct_{n}": distinct_ngrams(texts, n) for n in NGRAMS},
        "verb_object": {
            "taggers": _taggers(texts),
            "with_verb": len(with_verb),
            "with_object": sum(p[1] is not None for p in with_verb),
            "distinct_verbs": len({p[0] for p in with_verb}),
            "distinct_pairs": len({p for p in with_verb if p[1] is not None}),
            "top": top_verb_objects(pairs),
        },
        "embeddings": None,
    }
    view = None
    if embeddings is not None and len(embeddings.rows) >= 2:
        figures["embeddings"], view = _embedding_figures(embeddings, texts)
    return Diversity(figures, view)


def _embedding_figures(e: Embeddings, texts: list[str]) -> tuple[dict, EmbeddingView]:
    nn = nearest_neighbour_similarities(e.vectors)
    values = nn.similarities
    projection = pca_2d(e.vectors)
    k = cluster_count(len(e.rows))
    clusters = kmeans(e.vectors, k) if k else None
    figures = {
        "model": e.model,
        "source": e.source,
        "dim": int(e.vectors.shape[1]),
        "vectors": len(e.rows),
        "nearest_neighbour": {
            "mean": round(float(values.mean()), 4),
            "median": round(float(np.median(values)), 4),
            **{f"p{q}": round(float(np.percentile(values, q, method="nearest")), 4)
               for q in (10, 90)},
            "min": round(float(values.min()), 4),
            "max": round(float(values.max()), 4),
            "exact": nn.exact,
            "items": len(values),  # every vector, or the sample past NN_EXACT_LIMIT
        },
        "pca_explained": [round(v, 4) for v in projection.explained],
        "clusters": None if clusters is None else {
            "k": len(clusters.sizes),
            "sizes": clusters.sizes,
            "largest_share": round(clusters.sizes[0] / len(e.rows), 4),
            "examples": [texts[e.rows[c]] if c >= 0 else None for c in clusters.centres],
        },
    }
    view = EmbeddingView(projection.points, projection.explained,
                         None if clusters is None else clusters.labels, values)
    return figures, view


# -- diversity.json ------------------------------------------------------------------------


def save_figures(run: Run, figures: dict) -> Path:
    path = run.root / DIVERSITY
    write_atomic(path, (json.dumps(figures, ensure_ascii=False, indent=2) + "\n").encode())
    return path


def read_figures(run_dir: Path) -> dict | None:
    """diversity.json as `sigen stats` wrote it; None when missing or not of this format."""
    try:
        figures = json.loads((Path(run_dir) / DIVERSITY).read_bytes())
    except (OSError, ValueError):
        return None
    return figures if isinstance(figures, dict) and figures.get("format") == FORMAT else None


def figures_for(run_dir: Path, embed_model: str | None = None,
                models_file: Path | None = None, log: Callable[[str], None] = _stderr) -> dict:
    """A run's figures for --compare: its diversity.json while it still describes the run (the
    same number of instructions, and the embedding model asked for), else measured now and
    saved (diversity.json is `sigen stats`'s own file)."""
    run = load_run(run_dir)
    figures = read_figures(run_dir)
    embedded = (figures or {}).get("embeddings") or {}
    if (figures is not None and figures.get("instructions") == len(run.instructions)
            and (embed_model is None or embedded.get("model") == embed_model)):
        return figures
    embeddings = (computed_embeddings(run, embed_model, models_file, log) if embed_model
                  else stored_embeddings(run))
    figures = measure(run, embeddings).figures
    log(f"measured {run_dir} -> {save_figures(run, figures)}")
    return figures


# -- tables --------------------------------------------------------------------------------

Table = tuple[str, list[str], list[list[str]]]


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def diversity_tables(figures: dict) -> list[Table]:
    """The figures as (title, header, rows) tables, for the terminal and report.md."""
    n = figures["instructions"]
    d = figures["distinct"]
    tables: list[Table] = [(
        "Distinct n-grams (CJK characters, other words)", ["", "distinct", "all", "ratio"],
        [[f"distinct-{k}", num(d[f"distinct_{k}"]["distinct"]), num(d[f"distinct_{k}"]["total"]),
          _ratio(d[f"distinct_{k}"]["ratio"])] for k in NGRAMS])]
    vo = figures["verb_object"]
    rows = [[t["verb"], str(t["count"]), _pct(t["count"], n),
             ", ".join(f"{o['object']} {o['count']}" for o in t["objects"]) or "-"]
            for t in vo["top"]]
    tables.append((f"Verbs and their objects ({vo['with_verb']} of {n} instructions open with "
                   f"a verb, {vo['with_object']} with an object)",
                   ["verb", "count", "share", "top objects"], rows or [["(none)", "0", "-", "-"]]))
    e = figures.get("embeddings")
    if e is None:
        return tables
    nn = e["nearest_neighbour"]
    sample = "" if nn["exact"] else f" (a sample of {num(nn['items'])} instructions)"
    tables.append((f"Embeddings ({e['model']}, {e['source']})", ["", ""], [
        ["vectors", f"{num(e['vectors'])} of {num(n)} instructions, {e['dim']} dimensions"],
        ["nearest-neighbour cosine" + sample,
         f"mean {nn['mean']:.3f}, median {nn['median']:.3f}, p10 {nn['p10']:.3f}, "
         f"p90 {nn['p90']:.3f}, max {nn['max']:.3f}"],
        ["clusters (k-means)", "-" if e["clusters"] is None else
         f"{e['clusters']['k']}, largest {_pct(e['clusters']['sizes'][0], e['vectors'])}"],
    ]))
    if e["clusters"] is not None:
        tables.append(("Clusters", ["cluster", "size", "share", "instruction nearest its centre"],
                       [[str(i + 1), str(size), _pct(size, e["vectors"]), _short(example)]
                        for i, (size, example) in enumerate(zip(
                            e["clusters"]["sizes"], e["clusters"]["examples"], strict=True))]))
    return tables


def _short(text: str | None) -> str:
    if text is None:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS - 1] + "…"


# -- --compare -----------------------------------------------------------------------------


def format_comparison(a: dict, b: dict) -> str:
    """Two runs' figures side by side."""
    def column(f: dict) -> list[str]:
        vo, e = f["verb_object"], f.get("embeddings")
        nn = (e or {}).get("nearest_neighbour") or {}
        clusters = (e or {}).get("clusters")
        return [
            num(f["instructions"]),
            *(_ratio(f["distinct"][f"distinct_{k}"]["ratio"]) for k in NGRAMS),
            f"{vo['with_verb']} ({_pct(vo['with_verb'], f['instructions'])})",
            num(vo["distinct_verbs"]),
            num(vo["distinct_pairs"]),
            ", ".join(t["verb"] for t in vo["top"][:5]) or "-",
            "-" if e is None else e["model"],
            "-" if not nn else f"{nn['mean']:.3f}",
            "-" if not nn else f"{nn['median']:.3f}",
            "-" if clusters is None
            else f"{clusters['k']} (largest {clusters['largest_share']:.1%})",
        ]

    names = ["instructions", *(f"distinct-{k}" for k in NGRAMS), "open with a verb",
             "distinct verbs", "distinct verb-object pairs", "top verbs", "embedding model",
             "nearest-neighbour cosine, mean", "nearest-neighbour cosine, median", "clusters"]
    rows = [[name, x, y] for name, x, y in zip(names, column(a), column(b), strict=True)]
    lines = align(["", a["run_dir"], b["run_dir"]], rows)
    ea, eb = a.get("embeddings"), b.get("embeddings")
    if ea and eb and ea["model"] != eb["model"]:
        lines.append(f"note: the runs' vectors come from different models ({ea['model']}, "
                     f"{eb['model']}): their cosines are not comparable. Pass --embed-model to "
                     "measure both with one model.")
    elif not (ea and eb):
        lines.append("note: without vectors for both runs there are no embedding figures to "
                     "compare; pass --embed-model NAME to compute them.")
    if any(not (f.get("embeddings") or {}).get("nearest_neighbour", {}).get("exact", True)
           for f in (a, b)):
        lines.append(f"note: past {NN_EXACT_LIMIT:,} instructions the nearest-neighbour cosine "
                     "is measured on a sample of them (each against the whole run).")
    return "\n".join(lines) + "\n"

