"""`sigen stats`: what a run produced, as a terminal table and as report.md with PNG plots
(drawn by plots.py).

The run directory is only read (runstore.load_run), never repaired: a report may be taken while
`sigen run` is still appending to it, so a torn last line is skipped here instead of being cut
from the file (which a resume does). The only files written are report.md, its plots and
diversity.json (diversity.py), each replaced atomically.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from selfinstruct_local.diversity import (
    Diversity,
    diversity_tables,
    measure,
    save_figures,
    stored_embeddings,
)
from selfinstruct_local.errors import SigenError
from selfinstruct_local.plots import render_plots
from selfinstruct_local.quality.gate import contamination_summary, judge_summary, task_ids
from selfinstruct_local.readable import align, num, numeric_columns
from selfinstruct_local.runstore import REPORT, Run, load_run, write_atomic
from selfinstruct_local.text import count_words, is_cjk_char, tokenize

PLOTS = {
    "similarity": "report-max-rouge.png",
    "instruction_length": "report-instruction-length.png",
    "output_length": "report-output-length.png",
    "rejections": "report-rejections-per-round.png",
    "scores": "report-judge-scores.png",  # only for a judged run
    "verb_object": "report-verb-object.png",
    "embedding_map": "report-embedding-map.png",  # only with embeddings
    "neighbours": "report-nearest-neighbour.png",  # only with embeddings
}
SIM_BIN_WIDTH = 0.1
SIM_BINS = 7  # 0.0-0.1 ... 0.6-0.7: accepted instructions are below the 0.7 ROUGE-L threshold
TOP_VERBS = 10


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the summary ---------------------------------------------------------------------------


def _distribution(values: list[int]) -> dict:
    """min/median/mean/p90/max; p90 is the nearest-rank percentile (an observed value)."""
    if not values:
        return {"n": 0, "min": None, "median": None, "mean": None, "p90": None, "max": None}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "min": ordered[0],
        "median": statistics.median(ordered),
        "mean": round(statistics.fmean(ordered), 2),
        "p90": ordered[math.ceil(0.9 * len(ordered)) - 1],
        "max": ordered[-1],
    }


def leading_verb(instruction: str) -> str | None:
    """First token, lowercased; for CJK text the first two characters (there are no spaces)."""
    tokens = tokenize(instruction)
    if not tokens:
        return None
    if not is_cjk_char(tokens[0]):
        return tokens[0]
    # Each CJK character is a token of its own: "请写一首诗" gives "请写", "写 Python" gives "写".
    if len(tokens) > 1 and is_cjk_char(tokens[1]):
        return tokens[0] + tokens[1]
    return tokens[0]


def _reason(row: dict) -> str:
    # "blacklist:plot" and "blacklist:draw" are one reason; the detail only names the word.
    return str(row.get("reason", "unknown")).split(":", 1)[0]


def _similarity_bins(values: list[float]) -> list[dict]:
    counts = [0] * SIM_BINS
    for value in values:
        # The epsilon keeps 0.3 in 0.3-0.4 (0.3 / 0.1 is 2.9999...); above 0.7 goes in the top bin.
        counts[min(max(math.floor(value / SIM_BIN_WIDTH + 1e-9), 0), SIM_BINS - 1)] += 1
    return [{"low": round(i * SIM_BIN_WIDTH, 1), "high": round((i + 1) * SIM_BIN_WIDTH, 1),
             "count": c} for i, c in enumerate(counts)]


def _by_round(rows: list[dict]) -> dict[int, dict[str, int]]:
    table: dict[int, Counter] = defaultdict(Counter)
    for row in rows:
        if isinstance(row.get("round"), int):
            table[row["round"]][_reason(row)] += 1
    return {r: dict(table[r].most_common()) for r in sorted(table)}


def summarize(run_dir: Path | str, warn: Callable[[str], None] = _stderr) -> dict:
    """Counts, reasons, classification share, lengths, leading verbs and diversity of a run
    (JSON-serializable: `sigen run` stores it in manifest.json)."""
    return summary_of(load_run(run_dir, warn), warn)


def summary_of(run: Run, warn: Callable[[str], None] = _stderr) -> dict:
    """`summarize` for a run already read."""
    manifest, instructions, instances = run.manifest, run.instructions, run.instances
    rejected = [r for r in run.rejected if r.get("stage") != "instance"]
    dropped = [r for r in run.rejected if r.get("stage") == "instance"]

    labels = Counter(row.get("is_classification") for row in instructions)
    known = labels[True] + labels[False]
    per_instruction = Counter(r["instruction_id"] for r in instances)
    n_each = [per_instruction[row.get("id")] for row in instructions]
    verbs = Counter(v for v in map(leading_verb, (r["instruction"] for r in instructions)) if v)
    config, tokens = manifest.get("config") or {}, manifest.get("tokens") or {}
    return {
        "run_dir": str(run.root),
        "status": manifest.get("status"),
        "method": config.get("method"),
        "lang": config.get("lang"),
        "num_instructions": config.get("num_instructions"),
        "model": (manifest.get("model") or {}).get("name"),
        "engine": (manifest.get("engine") or {}).get("name"),
        "counts": {
            "accepted_instructions": len(instructions),
            "instances": len(instances),
            "rejected_instructions": len(rejected),
            "dropped_instances": len(dropped),
        },
        "rejected_by_reason": dict(Counter(map(_reason, rejected)).most_common()),
        "dropped_by_reason": dict(Counter(map(_reason, dropped)).most_common()),
        "rejected_by_round": _by_round(rejected),
        "dropped_by_round": _by_round(dropped),
        "classification": {
            "yes": labels[True], "no": labels[False], "unknown": len(instructions) - known,
            # Share among the instructions that were classified (the Alpaca method does not).
            "share": round(labels[True] / known, 4) if known else None,
        },
        "instances_per_instruction": {
            "mean": round(statistics.fmean(n_each), 2) if n_each else None,
            "min": min(n_each, default=None),
            "max": max(n_each, default=None),
        },
        "instruction_length": _distribution([count_words(r["instruction"]) for r in instructions]),
        "output_length": _distribution([count_words(r.get("output", "")) for r in instances]),
        # Ties broken alphabetically so that the table does not depend on file order.
        "leading_verbs": sorted(verbs.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_VERBS],
        "max_similarity": _similarity_bins(
            [float(r.get("max_similarity") or 0.0) for r in instructions]),
        # None unless `sigen judge` / `sigen decontaminate` ran on the run.
        "judge": judge_summary(run.root, task_ids(instances), warn),
        "contamination": contamination_summary(run.root, warn),
        "evolution": evolution_summary(run),  # None unless --method evol
        "tokens_generated": tokens.get("generated"),
        "tokens_prompt": tokens.get("prompt"),
        "engine_seconds": manifest.get("engine_seconds"),
        "wall_seconds": manifest.get("wall_seconds"),
    }


def evolution_summary(run: Run) -> dict | None:
    """--method evol: per generation and per operation, the evolutions decided (accepted, or
    rejected for a reason; those kept out only by the target are left out) and how many
    survived. None for a run whose rows record no generation."""
    decided = run.instructions + [r for r in run.rejected if r.get("stage") == "instruction"
                                  and r.get("reason") != "target_reached"]
    decided = [r for r in decided if isinstance(r.get("generation"), int)
               and isinstance(r.get("operation"), str)]
    if not decided:
        return None
    survived = {r.get("id") for r in run.instructions}

    def by(key: str) -> list[dict]:
        tried, kept = Counter(r[key] for r in decided), Counter(
            r[key] for r in decided if "reason" not in r and r.get("id") in survived)
        return [{key: k, "evolved": tried[k], "survived": kept[k]} for k in sorted(tried)]

    return {"by_generation": by("generation"), "by_operation": by("operation")}


# -- rendering -----------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    minutes, secs = divmod(int(round(value)), 60)
    return f"{value:,.1f} s ({minutes}m{secs:02d}s)" if minutes else f"{value:.1f} s"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


Table = tuple[str, list[str], list[list[str]]]


def _tables(s: dict) -> list[Table]:
    """The summary as (title, header, rows) tables, rendered as text or as Markdown."""
    c, cls, ipi = s["counts"], s["classification"], s["instances_per_instruction"]
    classified = cls["yes"] + cls["no"]
    share = "-" if cls["share"] is None else f"{cls['yes']} of {classified} ({cls['share']:.1%})"
    tables: list[Table] = [
        ("Run", ["", ""], [
            ["status", num(s["status"])],
            ["method / lang", f"{num(s['method'])} / {num(s['lang'])}"],
            ["model / engine", f"{num(s['model'])} / {num(s['engine'])}"],
            ["accepted instructions", f"{c['accepted_instructions']} of "
                                      f"{num(s['num_instructions'])} asked"],
            ["instances", num(c["instances"])],
            ["rejected instructions", num(c["rejected_instructions"])],
            ["dropped instances", num(c["dropped_instances"])],
            ["classification tasks", share + (f", {cls['unknown']} unknown"
                                              if cls["unknown"] else "")],
            ["instances per instruction", f"mean {num(ipi['mean'])}, min {num(ipi['min'])}, "
                                          f"max {num(ipi['max'])}"],
            ["tokens generated", f"{num(s['tokens_generated'])} "
                                 f"(prompt tokens {num(s['tokens_prompt'])})"],
            ["engine time", _seconds(s["engine_seconds"])],
            ["wall time", _seconds(s["wall_seconds"])],
        ]),
    ]
    for title, key, total in (("Rejected instructions", "rejected_by_reason",
                               c["rejected_instructions"]),
                              ("Dropped instances", "dropped_by_reason", c["dropped_instances"])):
        rows = [[reason, str(n), _pct(n, total)] for reason, n in s[key].items()]
        tables.append((title, ["reason", "count", "share"], rows or [["(none)", "0", "-"]]))
    tables.append(("Length in tokens", ["", "n", "min", "median", "mean", "p90", "max"], [
        [name, *(num(s[key][k]) for k in ("n", "min", "median", "mean", "p90", "max"))]
        for name, key in (("instruction", "instruction_length"), ("output", "output_length"))
    ]))
    n = c["accepted_instructions"]
    verbs = [[v, str(k), _pct(k, n)] for v, k in s["leading_verbs"]]
    tables.append(("Leading verbs", ["verb", "count", "share"], verbs or [["(none)", "0", "-"]]))
    tables.append(("Highest ROUGE-L with the pool", ["ROUGE-L", "count", "share"], [
        [f"{b['low']:.1f}-{b['high']:.1f}", str(b["count"]), _pct(b["count"], n)]
        for b in s["max_similarity"]
    ]))
    return tables + _evolution_tables(s) + _quality_tables(s)


def _evolution_tables(s: dict) -> list[Table]:
    if (e := s.get("evolution")) is None:
        return []
    return [(f"Evolutions by {key}", [key, "evolved", "survived", "share"],
             [[str(row[key]), str(row["evolved"]), str(row["survived"]),
               _pct(row["survived"], row["evolved"])] for row in e[f"by_{key}"]])
            for key in ("generation", "operation")]


def _quality_tables(s: dict) -> list[Table]:
    tables: list[Table] = []
    if (j := s.get("judge")) is not None:
        rows = [[str(h["score"]), str(h["count"]), _pct(h["count"], j["judged"])]
                for h in j["histogram"]]
        rows += [["unparsed", str(j["unparsed"]), _pct(j["unparsed"], j["judged"])],
                 ["not judged", str(j["tasks"] - j["judged"]), "-"]]
        judges = ", ".join(j["judges"]) or "-"
        tables.append((f"Judge scores ({judges})", ["score", "tasks", "share"], rows))
        tables.append(("Kept by export --min-score", ["min score", "tasks", "share of all"], [
            [f">= {a['score']}", str(a["count"]), _pct(a["count"], j["tasks"])]
            for a in j["at_least"]]))
    if (c := s.get("contamination")) is not None:
        rows = [[b["file"], str(b["tasks"]), _ngram_size(b)] for b in c["benchmarks"]]
        rows.append(["any", f"{c['contaminated']} of {num(c['tasks_checked'])} checked", ""])
        tables.append(("Benchmark overlap", ["benchmark", "tasks", "n-gram"], rows))
    return tables


def _ngram_size(check: dict) -> str:
    if check["n_words"] is None:
        return "-"  # a file whose check was not recorded (see quality/flags.py)
    return f"{check['n_words']} words / {check['n_chars']} characters"


def format_summary(summary: dict) -> str:
    """A plain-text rendering of `summarize`'s result for the terminal."""
    return f"Run directory: {summary['run_dir']}\n\n" + _text(_tables(summary))


def format_diversity(figures: dict) -> str:
    """The diversity figures (diversity.json) as text tables for the terminal."""
    return _text(diversity_tables(figures))


def _text(tables: list[Table]) -> str:
    return "\n\n".join("\n".join([title, *("  " + line for line in align(header, rows))])
                       for title, header, rows in tables) + "\n"


def _markdown(summary: dict, figures: dict | None = None, drawn: set[str] | None = None,
              notes: list[str] | None = None) -> str:
    def md(header: list[str], rows: list[list[str]]) -> list[str]:
        rule = ["--:" if r else "---" for r in numeric_columns(rows)]
        cells = [[h or " " for h in header], rule, *rows]
        return ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]

    out = [f"# Run report: `{summary['run_dir']}`", ""]
    diversity = [] if figures is None else diversity_tables(figures)
    for title, header, rows in _tables(summary) + diversity:
        if diversity and title == diversity[0][0]:
            out += ["# Diversity", "", *(f"{note}\n" for note in notes or [])]
        out += [f"## {title}", "", *md(header, rows), ""]
        plots = _PLOTS_AFTER.get(title.split(" (")[0], [])  # "Judge scores (judge-name)"
        out += [f"![{caption}]({PLOTS[key]})\n" for key, caption in plots
                if drawn is None or key in drawn]
    return "\n".join(out)


# Which plots follow which table in report.md, with their alt text.
_PLOTS_AFTER = {
    "Dropped instances": [("rejections", "Rejected instructions and dropped instances per round")],
    "Length in tokens": [("instruction_length", "Instruction length"),
                         ("output_length", "Output length")],
    "Judge scores": [("scores", "Judge scores of the run's tasks")],
    "Highest ROUGE-L with the pool": [(
        "similarity", "Highest ROUGE-L of each accepted instruction with the pool (seeds and "
        "earlier instructions), as in the Self-Instruct paper's diversity figure")],
    "Verbs and their objects": [(
        "verb_object", "The most common verbs of the instructions (inner ring) and their most "
        "common objects (outer ring), as in the Self-Instruct paper's Figure 2")],
    "Embeddings": [("embedding_map", "The instructions' embeddings on their two principal "
                    "axes, coloured by k-means cluster"),
                   ("neighbours", "Nearest-neighbour cosine of each instruction, and the "
                    "cluster sizes")],
}


# -- files ---------------------------------------------------------------------------------


def require_matplotlib() -> None:
    """SigenError saying what to install when matplotlib (the [report] extra) is missing."""
    try:
        import matplotlib  # noqa: F401  (only to fail early with a helpful message)
    except ImportError:
        raise SigenError(
            "the report's plots need matplotlib: pip install 'selfinstruct-local[report]'"
        ) from None


def write_report(run_dir: Path | str) -> Path:
    """Write report.md, its PNG plots and diversity.json into the run directory (embedding
    figures from the run's own embeddings.jsonl, if any); return report.md's path."""
    run = load_run(run_dir)
    return save_report(run, summary_of(run))


def save_report(run: Run, summary: dict, diversity: Diversity | None = None) -> Path:
    """Write report.md, its plots and diversity.json for a run already read and summarized
    (`diversity`: measured already, else now with the run's stored embeddings). A plot of an
    earlier report that this one does not draw (judge scores, embeddings) is removed."""
    require_matplotlib()
    from selfinstruct_local.diversity_plots import font_note, render_diversity_plots

    if diversity is None:
        diversity = measure(run, stored_embeddings(run))
    save_figures(run, diversity.figures)
    plots = render_plots(summary,
                         [count_words(r["instruction"]) for r in run.instructions],
                         [count_words(r.get("output", "")) for r in run.instances])
    plots.update(render_diversity_plots(diversity.figures, diversity.view))
    for key, data in plots.items():
        write_atomic(run.root / PLOTS[key], data)
    for key in PLOTS.keys() - plots.keys():
        (run.root / PLOTS[key]).unlink(missing_ok=True)
    path = run.root / REPORT
    notes = [note for note in (font_note(diversity.figures), _embedding_note(diversity.figures))
             if note]
    write_atomic(path, _markdown(summary, diversity.figures, set(plots), notes).encode("utf-8"))
    return path


def _embedding_note(figures: dict) -> str | None:
    if figures.get("embeddings") is not None:
        return None
    return ("No embedding figures: the run has no embeddings.jsonl (written by the semantic "
            "screen). `sigen stats DIR --embed-model NAME` computes them (NAME: an embedding "
            "model of models.yaml or a checkpoint directory; smollm2-135m works offline but "
            "is a weak embedder).")
