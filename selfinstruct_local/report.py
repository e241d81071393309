"""`sigen stats`: what a run produced, as a terminal table and as report.md with PNG plots.

The run directory is only read, never repaired: a report may be taken while `sigen run` is still
appending to it, so a torn last line is skipped here instead of being cut from the file (which is
what `RunStore.read` does, and what a resume does anyway). The only files written are report.md
and its plots, each replaced atomically.
"""

from __future__ import annotations

import io
import json
import math
import re
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from selfinstruct_local.errors import SigenError
from selfinstruct_local.runstore import (
    INSTANCES,
    INSTRUCTIONS,
    MANIFEST,
    REJECTED,
    RunStore,
    write_atomic,
)
from selfinstruct_local.text import count_words, is_cjk_char, tokenize

REPORT = "report.md"
PLOTS = {
    "similarity": "report-max-rouge.png",
    "instruction_length": "report-instruction-length.png",
    "output_length": "report-output-length.png",
    "rejections": "report-rejections-per-round.png",
}
SIM_BIN_WIDTH = 0.1
SIM_BINS = 7  # 0.0-0.1 ... 0.6-0.7: accepted instructions are below the 0.7 ROUGE-L threshold
TOP_VERBS = 10


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- reading a run -------------------------------------------------------------------------


def read_rows(path: Path, warn: Callable[[str], None] = _stderr) -> list[dict]:
    """Rows of a JSONL file without modifying it; a torn last line is skipped with a warning."""
    return RunStore(path.parent).read(path.name, warn, repair=False)


@dataclass
class Run:
    root: Path
    manifest: dict
    instructions: list[dict]  # accepted, in file order
    instances: list[dict]  # only those of accepted instructions
    rejected: list[dict]


def load_run(run_dir: Path | str, warn: Callable[[str], None] = _stderr) -> Run:
    """Read a run directory; SigenError if it is not one."""
    root = Path(run_dir)
    if not root.is_dir():
        raise SigenError(f"{root} is not a directory; give the run directory of `sigen run`")
    manifest_path, instructions_path = root / MANIFEST, root / INSTRUCTIONS
    manifest: dict | None = None
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except ValueError:
            raise SigenError(f"{manifest_path}: not valid JSON; the run directory is "
                             "damaged") from None
    # The pipeline creates machine_instructions.jsonl with its first accepted instruction, so a
    # run that has accepted nothing yet legitimately lacks it; the manifest tells which case it is.
    empty_run = manifest is not None and (manifest.get("counts") or {}).get("accepted") == 0
    missing = [p.name for p in (manifest_path, instructions_path)
               if not p.exists() and not (p is instructions_path and empty_run)]
    if missing:
        raise SigenError(f"{root} is not a complete sigen run directory: {' and '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} missing")
    if not isinstance(manifest, dict):
        raise SigenError(f"{manifest_path}: not a JSON object; the run directory is damaged")
    instructions = read_rows(instructions_path, warn)
    accepted = {row.get("id") for row in instructions}
    # Instance rows are written just before their instruction row: rows whose instruction is not
    # (yet) accepted belong to work in flight or cut short by a crash, and are not part of the data.
    instances = [r for r in read_rows(root / INSTANCES, warn)
                 if r.get("instruction_id") in accepted]
    return Run(root, manifest, instructions, instances, read_rows(root / REJECTED, warn))


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
    return _summary(load_run(run_dir, warn))


def _summary(run: Run) -> dict:
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
        "tokens_generated": tokens.get("generated"),
        "tokens_prompt": tokens.get("prompt"),
        "engine_seconds": manifest.get("engine_seconds"),
        "wall_seconds": manifest.get("wall_seconds"),
    }


# -- rendering -----------------------------------------------------------------------------


def _num(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".") if value % 1 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    minutes, secs = divmod(int(round(value)), 60)
    return f"{value:,.1f} s ({minutes}m{secs:02d}s)" if minutes else f"{value:.1f} s"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


Table = tuple[str, list[str], list[list[str]]]
_NUMBER = re.compile(r"-|[\d.,]+%?")


def _tables(s: dict) -> list[Table]:
    """The summary as (title, header, rows) tables, rendered as text or as Markdown."""
    c, cls, ipi = s["counts"], s["classification"], s["instances_per_instruction"]
    classified = cls["yes"] + cls["no"]
    share = "-" if cls["share"] is None else f"{cls['yes']} of {classified} ({cls['share']:.1%})"
    tables: list[Table] = [
        ("Run", ["", ""], [
            ["status", _num(s["status"])],
            ["method / lang", f"{_num(s['method'])} / {_num(s['lang'])}"],
            ["model / engine", f"{_num(s['model'])} / {_num(s['engine'])}"],
            ["accepted instructions", f"{c['accepted_instructions']} of "
                                      f"{_num(s['num_instructions'])} asked"],
            ["instances", _num(c["instances"])],
            ["rejected instructions", _num(c["rejected_instructions"])],
            ["dropped instances", _num(c["dropped_instances"])],
            ["classification tasks", share + (f", {cls['unknown']} unknown"
                                              if cls["unknown"] else "")],
            ["instances per instruction", f"mean {_num(ipi['mean'])}, min {_num(ipi['min'])}, "
                                          f"max {_num(ipi['max'])}"],
            ["tokens generated", f"{_num(s['tokens_generated'])} "
                                 f"(prompt tokens {_num(s['tokens_prompt'])})"],
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
        [name, *(_num(s[key][k]) for k in ("n", "min", "median", "mean", "p90", "max"))]
        for name, key in (("instruction", "instruction_length"), ("output", "output_length"))
    ]))
    n = c["accepted_instructions"]
    verbs = [[v, str(k), _pct(k, n)] for v, k in s["leading_verbs"]]
    tables.append(("Leading verbs", ["verb", "count", "share"], verbs or [["(none)", "0", "-"]]))
    tables.append(("Highest ROUGE-L with the pool", ["ROUGE-L", "count", "share"], [
        [f"{b['low']:.1f}-{b['high']:.1f}", str(b["count"]), _pct(b["count"], n)]
        for b in s["max_similarity"]
    ]))
    return tables


def _numeric_columns(rows: list[list[str]]) -> list[bool]:
    """Columns holding only numbers, which read best right-aligned."""
    return [all(_NUMBER.fullmatch(row[i]) for row in rows) for i in range(len(rows[0]))]


def _align(header: list[str], rows: list[list[str]]) -> list[str]:
    right = _numeric_columns(rows)
    shown = [header, *rows] if any(header) else rows
    widths = [max(len(r[i]) for r in shown) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w)
                         for c, w, r in zip(cells, widths, right, strict=True)).rstrip()

    return [line(r) for r in shown]


def format_summary(summary: dict) -> str:
    """A plain-text rendering of `summarize`'s result for the terminal."""
    parts = [f"Run directory: {summary['run_dir']}"]
    for title, header, rows in _tables(summary):
        parts.append("\n".join([title, *("  " + line for line in _align(header, rows))]))
    return "\n\n".join(parts) + "\n"


def _markdown(summary: dict) -> str:
    def md(header: list[str], rows: list[list[str]]) -> list[str]:
        rule = ["--:" if r else "---" for r in _numeric_columns(rows)]
        cells = [[h or " " for h in header], rule, *rows]
        return ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]

    out = [f"# Run report: `{summary['run_dir']}`", ""]
    for title, header, rows in _tables(summary):
        out += [f"## {title}", "", *md(header, rows), ""]
        out += [f"![{caption}]({PLOTS[key]})\n" for key, caption in _PLOTS_AFTER.get(title, [])]
    return "\n".join(out)


# Which plots follow which table in report.md, with their alt text.
_PLOTS_AFTER = {
    "Dropped instances": [("rejections", "Rejected instructions and dropped instances per round")],
    "Length in tokens": [("instruction_length", "Instruction length"),
                         ("output_length", "Output length")],
    "Highest ROUGE-L with the pool": [(
        "similarity", "Highest ROUGE-L of each accepted instruction with the pool (seeds and "
        "earlier instructions), as in the Self-Instruct paper's diversity figure")],
}


# -- files ---------------------------------------------------------------------------------


def _figure(width: float, height: float):
    # The object-oriented API with an explicit Agg canvas: no pyplot global state, no GUI backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _counts_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 0.5 ticks


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    # No "Software" stamp: the same run then gives byte-identical plots.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _no_data(ax, message: str = "no data") -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_ylim(0, 1)
    ax.set_yticks([])  # autoscaling with nothing to show gives a meaningless -0.06..0.06


def _similarity_plot(summary: dict) -> bytes:
    figure = _figure(7, 4)
    ax = figure.add_subplot()
    bins = summary["max_similarity"]
    total = sum(b["count"] for b in bins)
    bars = ax.bar([b["low"] for b in bins], [b["count"] for b in bins], width=SIM_BIN_WIDTH,
                  align="edge", color="#4c72b0", edgecolor="white")
    ax.bar_label(bars, labels=[str(b["count"]) if b["count"] else "" for b in bins], padding=2)
    ax.set_xlim(0, SIM_BINS * SIM_BIN_WIDTH)
    ax.set_xticks([round(i * SIM_BIN_WIDTH, 1) for i in range(SIM_BINS + 1)])
    ax.set_xlabel("ROUGE-L F of the most similar instruction in the pool (seeds + earlier ones)")
    ax.set_ylabel("accepted instructions")
    ax.set_title(f"Highest ROUGE-L with the pool (n={total})")
    ax.margins(y=0.12)
    _counts_axis(ax)
    if not total:
        _no_data(ax, "no accepted instructions")
    return _png(figure)


def _length_plot(values: list[int], dist: dict, what: str) -> bytes:
    from matplotlib.ticker import MaxNLocator

    figure = _figure(7, 4)
    ax = figure.add_subplot()
    ax.set_title(f"{what.capitalize()} length (n={len(values)})")
    ax.set_xlabel(f"{what} length in tokens (a CJK character counts as one)")
    ax.set_ylabel(f"{what}s")
    if not values:
        _no_data(ax)
        return _png(figure)
    low, high = min(values), max(values)
    # One bar per length while that stays readable, else 40 equal bins.
    bins = [x - 0.5 for x in range(low, high + 2)] if high - low <= 50 else 40
    ax.hist(values, bins=bins, color="#55a868", edgecolor="white")
    _counts_axis(ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # lengths are whole tokens
    ax.axvline(dist["median"], color="black", linestyle="--",
               label=f"median {_num(dist['median'])}")
    ax.axvline(dist["p90"], color="#c44e52", linestyle=":", label=f"p90 {_num(dist['p90'])}")
    ax.legend(loc="upper right")
    return _png(figure)


def _rejections_plot(summary: dict) -> bytes:
    from matplotlib.ticker import MaxNLocator

    figure = _figure(11, 4.2)
    panels = (("Rejected instructions", summary["rejected_by_round"]),
              ("Dropped instances", summary["dropped_by_round"]))
    rounds = sorted({r for _, table in panels for r in table})
    # Room for at least three bars, so that a run of one or two rounds has no giant slab.
    pad = 0.6 + max(0, 3 - len(rounds)) / 2
    for index, (title, table) in enumerate(panels, start=1):
        ax = figure.add_subplot(1, 2, index)
        ax.set_title(f"{title} per round")
        ax.set_xlabel("round")
        ax.set_ylabel("rows")
        totals = Counter[str]()
        for counts in table.values():
            totals.update(counts)
        if not totals:
            _no_data(ax, "none")
            continue
        bottom = [0] * len(rounds)
        colors = [f"C{i % 10}" for i in range(len(totals))]
        for (reason, total), color in zip(totals.most_common(), colors, strict=True):
            heights = [table.get(r, {}).get(reason, 0) for r in rounds]
            ax.bar(rounds, heights, bottom=bottom, color=color, label=f"{reason} ({total})")
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        if len(rounds) <= 20:
            ax.set_xticks(rounds)  # each round labeled, and no tick for a round 0 that is not
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(rounds[0] - pad, rounds[-1] + pad)
        _counts_axis(ax)
        # Headroom for the legend above the tallest bar, one line per reason. set_ylim, not
        # margins: zero-height segments on top of a stack would pin the autoscaled limit.
        ax.set_ylim(0, max(bottom) * (1.15 + 0.08 * len(totals)))
        ax.legend(fontsize="small", loc="upper right")
    return _png(figure)


def write_report(run_dir: Path | str) -> Path:
    """Write report.md and its PNG plots into the run directory; return report.md's path."""
    run = load_run(run_dir)
    try:
        import matplotlib  # noqa: F401  (only to fail early with a helpful message)
    except ImportError:
        raise SigenError(
            "the report's plots need matplotlib: pip install 'selfinstruct-local[report]'"
        ) from None
    summary = _summary(run)
    instruction_lengths = [count_words(r["instruction"]) for r in run.instructions]
    output_lengths = [count_words(r.get("output", "")) for r in run.instances]
    plots = {
        "similarity": _similarity_plot(summary),
        "instruction_length": _length_plot(instruction_lengths, summary["instruction_length"],
                                           "instruction"),
        "output_length": _length_plot(output_lengths, summary["output_length"], "output"),
        "rejections": _rejections_plot(summary),
    }
    for key, data in plots.items():
        write_atomic(run.root / PLOTS[key], data)
    path = run.root / REPORT
    write_atomic(path, _markdown(summary).encode("utf-8"))
    return path
