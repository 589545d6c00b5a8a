"""Tables and figures into ``figures/``: seaborn plots (PNG + PDF), tables (CSV + Markdown).

One module per notebook section (:mod:`.synthetic`, :mod:`.corpora`, :mod:`.sensitivity`,
:mod:`.unlearning`) over :mod:`.style` (theme, captions, stamps, the paper's markers, :class:`Output`);
everything public is importable from ``untrac.report``.

Nothing here computes influence; it only shapes results of ``untrac.experiments`` for reading.

Every figure stands alone:

* a **caption** under it says what the marks are — how many runs or seeds, what the bars, whiskers,
  lines and bands show, and the sign convention where it matters;
* a **scale stamp** in its top-right corner names the scale it was computed at (``scale: smoke``, in
  red, with "pipeline check, not results"), so a smoke run's figure can never pass for a mini run's.
  Pass ``scale=`` to a plot function, or give :class:`Output` a ``scale`` and it stamps every figure
  it writes;
* where the paper reports the plotted numbers (Table 2, Tables 3 and 5, Table 4: :mod:`untrac.paper`),
  they are drawn beside ours as **black diamonds** (with the paper's std as whiskers where it has one).

The texts carry ``gid`` s (:data:`CAPTION_GID`, :data:`SCALE_GID`, and :data:`PAPER_GID` on the
paper's markers), so :func:`figure_texts` and tests can find them.
"""
from __future__ import annotations

from .style import (
    themed, scale_label, figure_texts, add_caption, stamp, annotate, paper_handle, Output, mean_std,
    CAPTION_GID, SCALE_GID, PAPER_GID, PAPER_STYLE, BAR_WIDTH, ERR_KWS,
)
from .synthetic import (
    plot_trajectories, plot_standardised, plot_correlations, plot_correlation_over_steps, example_rows,
)
from .corpora import (
    corpora_table, beside_paper, plot_noise_floor, plot_regime_study, plot_synthetic_regime, plot_ground_truth_variants, plot_corpus_influence,
    plot_cost_accuracy, plot_corpora_correlations, plot_example_check, TABLE35_COLUMNS,
)
from .sensitivity import plot_epoch_curves, plot_correlation_vs_change, paper_beside, plot_beside_paper
from .unlearning import best_variants, plot_klom

__all__ = [
    "themed", "scale_label", "figure_texts", "add_caption", "stamp", "annotate", "paper_handle", "Output",
    "mean_std", "CAPTION_GID", "SCALE_GID", "PAPER_GID", "PAPER_STYLE", "BAR_WIDTH", "ERR_KWS",
    "plot_trajectories", "plot_standardised", "plot_correlations", "plot_correlation_over_steps",
    "example_rows", "corpora_table", "beside_paper", "plot_noise_floor", "plot_regime_study", "plot_synthetic_regime", "plot_ground_truth_variants",
    "plot_corpus_influence", "plot_cost_accuracy", "plot_corpora_correlations", "plot_example_check",
    "TABLE35_COLUMNS",
    "plot_epoch_curves", "plot_correlation_vs_change", "paper_beside", "plot_beside_paper", "best_variants",
    "plot_klom",
]
