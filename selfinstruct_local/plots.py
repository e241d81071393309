"""The PNG plots of report.md, drawn from `report.summarize`'s result with matplotlib.

matplotlib is optional (the [report] extra): it is imported only while a plot is drawn, which
report.py does after checking that matplotlib is there. Everything a plot shows comes from the
summary (the similarity bins' edges included), so this module needs nothing from report.py.
"""

from __future__ import annotations

import io
from collections import Counter

from selfinstruct_local.readable import num


def render_plots(summary: dict, instruction_lengths: list[int],
                 output_lengths: list[int]) -> dict[str, bytes]:
    """PNG bytes by plot key (the keys of `report.PLOTS`; scores only for a judged run)."""
    plots = {
        "similarity": _similarity_plot(summary),
        "instruction_length": _length_plot(instruction_lengths, summary["instruction_length"],
                                           "instruction"),
        "output_length": _length_plot(output_lengths, summary["output_length"], "output"),
        "rejections": _rejections_plot(summary),
    }
    if summary.get("judge"):
        plots["scores"] = _scores_plot(summary["judge"])
    return plots


def new_figure(width: float, height: float):
    # The object-oriented API with an explicit Agg canvas: no pyplot global state, no GUI backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def counts_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 0.5 ticks


def png_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    # No "Software" stamp: the same run then gives byte-identical plots.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def no_data(ax, message: str = "no data") -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_ylim(0, 1)
    ax.set_yticks([])  # autoscaling with nothing to show gives a meaningless -0.06..0.06


def _similarity_plot(summary: dict) -> bytes:
    figure = new_figure(7, 4)
    ax = figure.add_subplot()
    bins = summary["max_similarity"]
    total = sum(b["count"] for b in bins)
    bars = ax.bar([b["low"] for b in bins], [b["count"] for b in bins],
                  width=[b["high"] - b["low"] for b in bins], align="edge", color="#4c72b0",
                  edgecolor="white")
    ax.bar_label(bars, labels=[str(b["count"]) if b["count"] else "" for b in bins], padding=2)
    ax.set_xlim(bins[0]["low"], bins[-1]["high"])
    ax.set_xticks([b["low"] for b in bins] + [bins[-1]["high"]])
    ax.set_xlabel("ROUGE-L F of the most similar instruction in the pool (seeds + earlier ones)")
    ax.set_ylabel("accepted instructions")
    ax.set_title(f"Highest ROUGE-L with the pool (n={total})")
    ax.margins(y=0.12)
    counts_axis(ax)
    if not total:
        no_data(ax, "no accepted instructions")
    return png_bytes(figure)


def _length_plot(values: list[int], dist: dict, what: str) -> bytes:
    from matplotlib.ticker import MaxNLocator

    figure = new_figure(7, 4)
    ax = figure.add_subplot()
    ax.set_title(f"{what.capitalize()} length (n={len(values)})")
    ax.set_xlabel(f"{what} length in tokens (a CJK character counts as one)")
    ax.set_ylabel(f"{what}s")
    if not values:
        no_data(ax)
        return png_bytes(figure)
    low, high = min(values), max(values)
    # One bar per length while that stays readable, else 40 equal bins.
    bins = [x - 0.5 for x in range(low, high + 2)] if high - low <= 50 else 40
    ax.hist(values, bins=bins, color="#55a868", edgecolor="white")
    counts_axis(ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # lengths are whole tokens
    ax.axvline(dist["median"], color="black", linestyle="--",
               label=f"median {num(dist['median'])}")
    ax.axvline(dist["p90"], color="#c44e52", linestyle=":", label=f"p90 {num(dist['p90'])}")
    ax.legend(loc="upper right")
    return png_bytes(figure)


def _rejections_plot(summary: dict) -> bytes:
    from matplotlib.ticker import MaxNLocator

    figure = new_figure(11, 4.2)
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
            no_data(ax, "none")
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
        counts_axis(ax)
        # Headroom for the legend above the tallest bar, one line per reason. set_ylim, not
        # margins: zero-height segments on top of a stack would pin the autoscaled limit.
        ax.set_ylim(0, max(bottom) * (1.15 + 0.08 * len(totals)))
        ax.legend(fontsize="small", loc="upper right")
    return png_bytes(figure)


def _scores_plot(judge: dict) -> bytes:
    figure = new_figure(7, 4)
    ax = figure.add_subplot()
    labels = [str(h["score"]) for h in judge["histogram"]] + ["unparsed"]
    counts = [h["count"] for h in judge["histogram"]] + [judge["unparsed"]]
    colors = ["#c44e52", "#dd8452", "#ccb974", "#64b5cd", "#55a868", "#8c8c8c"]
    bars = ax.bar(labels, counts, color=colors, edgecolor="white")
    ax.bar_label(bars, labels=[str(c) if c else "" for c in counts], padding=2)
    ax.set_xlabel("judge's score (1-5)")
    ax.set_ylabel("tasks")
    ax.set_title(f"Judge scores by {', '.join(judge['judges']) or '-'} "
                 f"({judge['judged']} of {judge['tasks']} tasks judged)")
    ax.margins(y=0.12)
    counts_axis(ax)
    if not judge["judged"]:
        no_data(ax, "no task judged yet")
    return png_bytes(figure)
