"""Attribute-to-Delete (notebook 04): unlearning quality: KLoM of every algorithm."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from .style import _extend_legend, annotate, themed


def _algorithm_family(label: str) -> str:
    return label.split(" (lr ", 1)[0]


def best_variants(frame: pd.DataFrame, percentiles: Sequence[str] = ("p50", "p95")) -> dict[str, str]:
    """For every algorithm swept over learning rates (labels ``"<algorithm> (lr <lr>)"``), the label
    of the variant with the lowest KLoM averaged over the ``percentiles``, groups, forget sets and
    budgets; algorithms with one variant map to themselves."""
    score = frame.groupby("algorithm", sort=False)[list(percentiles)].mean().mean(axis=1)
    best: dict[str, str] = {}
    for label, s in score.items():
        fam = _algorithm_family(label)
        if fam not in best or s < score[best[fam]]:
            best[fam] = label
    return best


@themed
def plot_klom(frame: pd.DataFrame, floor: Mapping[str, float] | None = None, percentiles: Sequence[str] = ("p50", "p95"),
              band: bool = False, *, best_lr: bool = True, models_per_side: int | None = None, scale: str | None = None,
              caption: str | None = None) -> plt.Figure:
    """KLoM against compute (fraction of retraining): one panel per percentile x group, one line
    per algorithm (mean over forget sets and families; ``band``: their min-max); dashed: the noise floor.

    ``best_lr``: an algorithm swept over learning rates is drawn once, at its best learning rate
    (:func:`best_variants`, named in the legend); every variant is in the tables. A panel where every
    algorithm scores the same is marked as such (it cannot tell them apart)."""
    labels = pd.Series(list(dict.fromkeys(frame["algorithm"])))
    swept = labels.map(_algorithm_family).value_counts()
    chosen = best_variants(frame, percentiles) if best_lr else {a: a for a in dict.fromkeys(frame["algorithm"])}
    keep = frame[frame["algorithm"].isin(chosen.values())]
    names = {label: (f"{fam} (best: lr {label.split(' (lr ', 1)[1].rstrip(')')} of {swept[fam]})" if label != fam else fam)
             for fam, label in chosen.items()}
    keep = keep.assign(algorithm=keep["algorithm"].map(names))
    long = keep.melt(id_vars=["family", "forget", "algorithm", "steps", "fraction", "group"], value_vars=list(percentiles),
                     var_name="percentile", value_name="KLoM")
    grid = sns.relplot(data=long, x="fraction", y="KLoM", hue="algorithm", style="algorithm", row="percentile", col="group",
                       kind="line", markers=True, dashes=False, errorbar=("pi", 100) if band else None, height=2.8, aspect=1.3,
                       facet_kws={"sharey": "row"})
    grid.set_titles("{col_name} examples — {row_name}")
    grid.set_axis_labels("compute (% of retraining)", "KLoM")
    for ax in grid.axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{100 * x:g}%"))
    flat = []
    for (pct, group), ax in grid.axes_dict.items():
        ys = long[(long["percentile"] == pct) & (long["group"] == group)]["KLoM"].to_numpy()
        if ys.size and np.ptp(ys) < 1e-9:
            flat.append(f"{group} {pct}")
            ax.text(0.5, 0.45, f"every algorithm scores {ys[0]:.1f}:\nthis panel cannot tell them apart",
                    transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.25",
                    bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.6"})
        if floor is not None and pct in floor:
            ax.axhline(floor[pct], color="grey", ls="--", lw=1)
    extra = {}
    if floor is not None:
        extra["noise floor (a perfect unlearner)"] = Line2D([], [], color="grey", ls="--", lw=1)
    _extend_legend(grid, extra, title="algorithm")
    n_forget = frame.groupby("family")["forget"].nunique()
    fams = ", ".join(map(str, n_forget.index))
    text = (f"Lines: KLoM percentiles (over the forget / retain / validation examples) of each unlearning algorithm "
            f"against compute, mean over the {int(n_forget.sum())} forget sets (family {fams})"
            + ("; bands: their min-max" if band else "")
            + (f"; margins from {models_per_side} models per side (unlearned vs retrained)" if models_per_side else "")
            + ". Lower is better; points at compute 0: doing nothing and DM-Direct."
            + (" Algorithms swept over learning rates are drawn at their best rate." if best_lr and (swept > 1).any() else "")
            + (" Dashed: the noise floor, what two samples of the same distribution score." if floor is not None else "")
            + (f" Flat panels ({', '.join(flat)}): every algorithm at the same value." if flat else ""))
    return annotate(grid.figure, text, scale, caption)
