"""The diversity plots of report.md: the verb-object sunburst (the Self-Instruct paper's Figure
2), and with embeddings a 2-D map coloured by cluster, the cluster sizes and the
nearest-neighbour cosines.

Chinese labels need a font with CJK glyphs, which matplotlib does not ship (DejaVu has none). In
order: a CJK font matplotlib finds on the system (Noto Sans CJK, Source Han Sans, WenQuanYi,
Microsoft YaHei, PingFang...), else Noto Sans CJK from the noto-cjk-sans-otc package (in the
[report] extra; SIL Open Font License), else none: the wedges are then numbered after the rows
of the table beside the chart in report.md, and `font_note` says why.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from selfinstruct_local.plots import counts_axis, new_figure, no_data, png_bytes
from selfinstruct_local.readable import num
from selfinstruct_local.text import is_cjk_char
from selfinstruct_local.verb_object import TOP_OBJECTS

CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN",
             "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Microsoft YaHei", "PingFang SC",
             "Hiragino Sans GB", "SimHei", "Noto Sans CJK JP", "Source Han Sans")
COLORS = "tab20"
MAP_POINTS = 20_000  # points drawn on the map at most (a seeded sample past it)
UPRIGHT_DEGREES = 14  # a wedge this wide holds a short Chinese label upright


def color(i: int) -> tuple[float, ...]:
    """The i-th colour: tab20's ten strong hues first, then their pale partners, so that
    neighbouring verbs or clusters never share a hue."""
    from matplotlib import colormaps

    return colormaps[COLORS].colors[2 * i % 20 if i % 20 < 10 else (2 * i + 1) % 20]


@cache
def cjk_font() -> str | None:
    """The name of a font with CJK glyphs that matplotlib can use, None when there is none."""
    from matplotlib import font_manager

    known = {font.name for font in font_manager.fontManager.ttflist}
    for name in CJK_FONTS:
        if name in known:
            return name
    try:
        import noto_cjk_sans_otc
    except ImportError:
        return None
    font_manager.fontManager.addfont(str(noto_cjk_sans_otc.FONT_PATH))
    return "Noto Sans CJK SC"  # the collection's Simplified Chinese face


def _has_cjk(texts: list[str]) -> bool:
    return any(is_cjk_char(c) for text in texts for c in text)


def font_note(figures: dict) -> str | None:
    """Why the verb-object chart shows numbers instead of Chinese words; None when it does
    not."""
    if cjk_font() is not None or not _has_cjk(_labels(figures)):
        return None
    return ("no font with Chinese glyphs was found, so the verb-object chart numbers its "
            "wedges after the rows of the table beside it; install the report extra "
            "(pip install 'selfinstruct-local[report]', which brings Noto Sans CJK) or a CJK "
            "font (apt install fonts-noto-cjk) for words")


def _labels(figures: dict) -> list[str]:
    return [t["verb"] for t in figures["verb_object"]["top"]] + [
        o["object"] for t in figures["verb_object"]["top"] for o in t["objects"]]


def render_diversity_plots(figures: dict, view) -> dict[str, bytes]:
    """PNG bytes by plot key: verb_object always; embedding_map and neighbours with `view`
    (diversity.EmbeddingView)."""
    plots = {"verb_object": _sunburst(figures)}
    if view is not None:
        plots["embedding_map"] = _map(figures, view)
        plots["neighbours"] = _neighbours(figures, view)
    return plots


def _text_font() -> list[str]:
    font = cjk_font()
    return ["DejaVu Sans", font] if font else ["DejaVu Sans"]  # DejaVu first: its Latin


def _sunburst(figures: dict) -> bytes:
    vo = figures["verb_object"]
    top = vo["top"]
    figure = new_figure(9, 9)
    ax = figure.add_subplot()
    ax.set_title(f"The {len(top)} most common verbs (inner ring) and the {TOP_OBJECTS} most "
                 f"common objects of each (outer ring)\n{vo['with_verb']} of "
                 f"{figures['instructions']} instructions open with a verb; the pale part of a "
                 "verb's outer ring: its other objects, or none", fontsize=10)
    if not top:
        ax.set_axis_off()
        no_data(ax, "no instruction opens with a verb")
        return png_bytes(figure)
    numbered = cjk_font() is None and _has_cjk(_labels(figures))
    total = sum(t["count"] for t in top)
    inner_colors, outer_sizes, outer_colors = [], [], []
    for i, t in enumerate(top):
        inner_colors.append(color(i))
        for j, o in enumerate(t["objects"]):
            outer_sizes.append(o["count"])
            outer_colors.append(_lighter(color(i), 0.25 + 0.12 * j))
        rest = t["count"] - sum(o["count"] for o in t["objects"])
        if rest:
            outer_sizes.append(rest)
            outer_colors.append(_lighter(color(i), 0.85))
    inner_labels, outer_labels = wedge_labels(top, numbered)
    wedge = {"edgecolor": "white", "linewidth": 0.8}
    inner, _ = ax.pie([t["count"] for t in top], radius=0.62, colors=inner_colors,
                      startangle=90, counterclock=False, wedgeprops={**wedge, "width": 0.42})
    outer, _ = ax.pie(outer_sizes, radius=1.0, colors=outer_colors, startangle=90,
                      counterclock=False, wedgeprops={**wedge, "width": 0.38})
    _radial_labels(ax, inner, inner_labels, 0.41, total, 11)
    _radial_labels(ax, outer, outer_labels, 0.81, sum(outer_sizes), 9)
    ax.set_aspect("equal")
    if numbered:
        figure.text(0.5, 0.01, "Numbers: rows of the verb table in report.md (no CJK font "
                    "found).", ha="center", fontsize=9, color="gray")
    return png_bytes(figure)


def wedge_labels(top: list[dict], numbered: bool) -> tuple[list[str], list[str]]:
    """The inner ring's labels (verbs) and the outer ring's (objects, "" for the pale rest of a
    verb); `numbered`: "2" for the second verb, "2.1" for its first object, after the table."""
    inner, outer = [], []
    for i, t in enumerate(top):
        inner.append(str(i + 1) if numbered else t["verb"])
        outer += [f"{i + 1}.{j + 1}" if numbered else o["object"]
                  for j, o in enumerate(t["objects"])]
        if t["count"] > sum(o["count"] for o in t["objects"]):
            outer.append("")
    return inner, outer


def _lighter(color, amount: float) -> tuple[float, float, float]:
    r, g, b = color[:3]
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)


def _radial_labels(ax, wedges, labels: list[str], radius: float, total: int,
                   size: float) -> None:
    """Each label along its wedge's middle radius, read from the centre outwards (turned over
    on the left half), smaller in a thin wedge, left out of one too thin to hold it. Chinese
    reads badly on its side: in a wedge wide enough, it stays upright."""
    for wedge, label in zip(wedges, labels, strict=True):
        span = wedge.theta2 - wedge.theta1
        if not label or span < 2.2:
            continue
        angle = (wedge.theta1 + wedge.theta2) / 2
        x, y = radius * np.cos(np.radians(angle)), radius * np.sin(np.radians(angle))
        rotation = angle if -90 <= (angle + 180) % 360 - 180 <= 90 else angle + 180
        if span >= UPRIGHT_DEGREES and _has_cjk([label]):
            rotation = 0
        fontsize = min(size, max(6.0, span * 0.9))
        ax.text(x, y, label, ha="center", va="center", rotation=rotation,
                rotation_mode="anchor", fontsize=fontsize, family=_text_font())


def _map(figures: dict, view) -> bytes:
    e = figures["embeddings"]
    points, labels = view.points, view.labels
    if len(points) > MAP_POINTS:  # every cluster is still drawn in proportion
        keep = np.sort(np.random.default_rng(0).choice(len(points), MAP_POINTS, replace=False))
        points, labels = points[keep], None if labels is None else labels[keep]
    figure = new_figure(8, 7)
    ax = figure.add_subplot()
    size = max(4.0, min(40.0, 4000 / len(points)))
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=size, color="#4c72b0", alpha=0.7)
    else:
        for c in range(int(labels.max()) + 1):
            members = points[labels == c]
            ax.scatter(members[:, 0], members[:, 1], s=size, color=color(c), alpha=0.7,
                       label=f"{c + 1} ({e['clusters']['sizes'][c]})", edgecolors="none")
            if len(members):
                cx, cy = members.mean(axis=0)
                ax.text(cx, cy, str(c + 1), ha="center", va="center", fontsize=11,
                        weight="bold", bbox={"boxstyle": "circle,pad=0.2", "fc": "white",
                                             "ec": color(c), "alpha": 0.85})
        ax.legend(title="cluster (size)", fontsize="small", loc="center left",
                  bbox_to_anchor=(1.01, 0.5))
    first, second = view.explained
    ax.set_xlabel(f"principal component 1 ({first:.0%} of the variance)")
    ax.set_ylabel(f"principal component 2 ({second:.0%} of the variance)")
    shown = "" if len(points) == e["vectors"] else f", {num(len(points))} drawn"
    ax.set_title(f"Instructions on their two principal axes (PCA of {e['model']} embeddings, "
                 f"n={num(e['vectors'])}{shown})", fontsize=10)
    return png_bytes(figure)


def _neighbours(figures: dict, view) -> bytes:
    e = figures["embeddings"]
    nn = e["nearest_neighbour"]
    figure = new_figure(11, 4.2)
    ax = figure.add_subplot(1, 2, 1)
    values = view.similarities
    ax.hist(values, bins=min(40, max(10, len(values) // 5)), color="#8172b3",
            edgecolor="white")
    ax.axvline(nn["median"], color="black", linestyle="--", label=f"median {nn['median']:.3f}")
    ax.axvline(nn["mean"], color="#c44e52", linestyle=":", label=f"mean {nn['mean']:.3f}")
    ax.legend(loc="upper left", fontsize="small")
    sample = "" if nn["exact"] else f", a sample of {num(nn['items'])}"
    ax.set_title(f"Cosine with the nearest other instruction (n={num(len(values))}{sample})",
                 fontsize=10)
    ax.set_xlabel(f"cosine similarity ({e['model']})")
    ax.set_ylabel("instructions")
    counts_axis(ax)
    ax = figure.add_subplot(1, 2, 2)
    clusters = e["clusters"]
    if clusters is None:
        ax.set_title("Cluster sizes", fontsize=10)
        no_data(ax, f"too few instructions to cluster ({e['vectors']})")
        return png_bytes(figure)
    ks = list(range(1, clusters["k"] + 1))
    bars = ax.bar(ks, clusters["sizes"], color=[color(k - 1) for k in ks])
    ax.bar_label(bars, padding=2, fontsize="small")
    ax.set_xticks(ks)
    ax.set_xlabel("cluster (k-means, numbered by size)")
    ax.set_ylabel("instructions")
    ax.set_title(f"Cluster sizes (k={clusters['k']}, largest "
                 f"{clusters['largest_share']:.0%} of the instructions)", fontsize=10)
    ax.margins(y=0.12)
    counts_axis(ax)
    return png_bytes(figure)
