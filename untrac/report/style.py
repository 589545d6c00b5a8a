"""What every figure and table of :mod:`untrac.report` shares: the theme, captions, scale stamps,
the paper's markers, and :class:`Output` (where a notebook writes).
"""
from __future__ import annotations

import functools
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.transforms import ScaledTranslation


CAPTION_GID = "untrac-caption"
SCALE_GID = "untrac-scale"
PAPER_GID = "untrac-paper"
PAPER_STYLE = {"marker": "D", "markersize": 6, "color": "black", "markerfacecolor": "black", "markeredgecolor": "white",
               "linestyle": "none", "zorder": 6}
BAR_WIDTH = 0.8  # seaborn's default width of a group of dodged bars


def themed(plot: Callable[..., Any]) -> Callable[..., Any]:
    """Draw ``plot`` in the package's seaborn theme, without touching the global one."""

    @functools.wraps(plot)
    def inner(*args: Any, **kwargs: Any) -> Any:
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook"), sns.color_palette("deep"):
            return plot(*args, **kwargs)

    return inner


# ----------------------------------------------------------------------------------------------
# Captions, scale stamps, the paper's markers
# ----------------------------------------------------------------------------------------------

def scale_label(scale: str) -> str:
    """The stamp's text: ``scale: mini``; a smoke run says that its numbers are not results."""
    return f"scale: {scale}" + (" (pipeline check, not results)" if scale == "smoke" else "")


def _renderer(fig: plt.Figure) -> Any:
    try:
        return fig.canvas.get_renderer()
    except AttributeError:  # a canvas without its own renderer (e.g. a vector backend)
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        return FigureCanvasAgg(fig).get_renderer()


def _content(fig: plt.Figure) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` of everything drawn so far, in figure fractions (may lie outside 0-1)."""
    box = fig.get_tightbbox(_renderer(fig))
    w, h = fig.get_size_inches()
    return box.x0 / w, box.y0 / h, box.x1 / w, box.y1 / h


def _with_gid(fig: plt.Figure, gid: str) -> list[Any]:
    return [t for t in fig.texts if t.get_gid() == gid]


def figure_texts(fig: plt.Figure) -> list[str]:
    """Every text of ``fig``: figure texts (caption, stamp), titles, labels, tick labels, legends."""
    out = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), *(t.get_text() for t in ax.texts)]
        out += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
        if ax.get_legend() is not None:
            out += [t.get_text() for t in ax.get_legend().get_texts()]
    out += [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    return [t for t in out if t]


def add_caption(fig: plt.Figure, text: str, width: int | None = None) -> plt.Figure:
    """Write ``text`` under everything drawn on ``fig`` (wrapped to the figure's width)."""
    x0, y0, x1, _ = _content(fig)
    if width is None:
        width = max(60, int((x1 - x0) * fig.get_figwidth() * 15))
    wrapped = "\n".join(textwrap.fill(p, width) for p in text.split("\n"))
    shift = ScaledTranslation(0, -4 / 72, fig.dpi_scale_trans)
    fig.text(x0, y0, wrapped, ha="left", va="top", fontsize=9, color="0.2", transform=fig.transFigure + shift,
             gid=CAPTION_GID)
    return fig


def stamp(fig: plt.Figure, scale: str | None) -> plt.Figure:
    """Write the scale in the top-right corner, above everything drawn (once; ``None``: nothing)."""
    if scale is None or _with_gid(fig, SCALE_GID):
        return fig
    _, _, x1, y1 = _content(fig)
    shift = ScaledTranslation(0, 3 / 72, fig.dpi_scale_trans)
    fig.text(x1, y1, scale_label(scale), ha="right", va="bottom", fontsize=10, fontweight="bold",
             color="tab:red" if scale == "smoke" else "0.35", transform=fig.transFigure + shift, gid=SCALE_GID)
    return fig


def annotate(fig: plt.Figure, text: str, scale: str | None = None, extra: str | None = None) -> plt.Figure:
    """Caption (``text``, then ``extra``) under the figure and the scale stamp above it."""
    add_caption(fig, text if not extra else f"{text}\n{extra}")
    return stamp(fig, scale)


def _runs(frame: pd.DataFrame, column: str = "run") -> int | None:
    return int(frame[column].nunique()) if column in frame.columns else None


def _over(n: int | None, what: str = "runs") -> str:
    """'mean ± std over 4 runs' / 'one run, no error bars'."""
    if n is None:
        return "mean ± std"
    if n == 1:
        return f"one {what[:-1]} (no error bars)"
    return f"mean ± std over {n} {what}"


def _offsets(n_hue: int, width: float = BAR_WIDTH) -> list[float]:
    """Centres of ``n_hue`` dodged bars around a category's position (seaborn's layout)."""
    step = width / n_hue
    return [-width / 2 + step * (j + 0.5) for j in range(n_hue)]


def _draw_paper(ax: plt.Axes, points: Sequence[tuple[float, float, float | None]], label: str) -> Line2D | None:
    """Black diamonds at ``(x, mean)`` with the paper's std as whiskers where given."""
    if not points:
        return None
    xs, ys, es = (np.array([p[i] if p[i] is not None else np.nan for p in points], dtype=float) for i in range(3))
    if np.isfinite(es).any():
        ax.errorbar(xs, ys, yerr=np.nan_to_num(es), fmt="none", ecolor="black", elinewidth=1, capsize=3, zorder=5)
    (line,) = ax.plot(xs, ys, label=label, gid=PAPER_GID, **PAPER_STYLE)
    return line


def paper_handle(label: str) -> Line2D:
    return Line2D([], [], label=label, **PAPER_STYLE)


def _extend_legend(grid: sns.FacetGrid, extra: Mapping[str, Any], title: str | None = None) -> None:
    """Re-draw the grid's legend with ``extra`` handles after its own."""
    old = grid.legend
    data: dict[str, Any] = {}
    if old is not None:
        data = {t.get_text(): h for t, h in zip(old.texts, old.legend_handles)}
        if title is None:
            title = old.get_title().get_text()
        old.remove()
        grid._legend = None
    data.update(extra)
    grid.add_legend(legend_data=data, label_order=list(data), title=title)


def _name(value: str) -> str:
    """Axis wording of a column: ``pearson`` -> ``Pearson``."""
    return {"pearson": "Pearson", "spearman": "Spearman"}.get(value, value)


ERR_KWS = {"color": "0.45", "linewidth": 1.6}  # our whiskers grey, the paper's black with caps


def _label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


@dataclass(frozen=True)
class Output:
    """Where a notebook writes: ``<directory>/<prefix>_<name>.{png,pdf,csv,md}``.

    With a ``scale``, every figure written is stamped with it (if its plot call did not already).
    """

    directory: Path
    prefix: str
    scale: str | None = None

    def path(self, name: str, suffix: str) -> Path:
        directory = Path(self.directory)
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f"{self.prefix}_{name}.{suffix}"

    def table(self, frame: pd.DataFrame, name: str, floatfmt: str = ".3f") -> pd.DataFrame:
        """Write ``frame`` as CSV and Markdown; return it for display."""
        frame.to_csv(self.path(name, "csv"), index=False)
        self.path(name, "md").write_text(markdown(frame, floatfmt) + "\n")
        return frame

    def figure(self, fig: plt.Figure, name: str) -> plt.Figure:
        """Write ``fig`` as PNG (150 dpi) and PDF (stamped with the scale); return it for display."""
        stamp(fig, self.scale)
        fig.savefig(self.path(name, "png"), dpi=150, bbox_inches="tight")
        fig.savefig(self.path(name, "pdf"), bbox_inches="tight", metadata={"CreationDate": None})  # byte-reproducible
        return fig


def markdown(frame: pd.DataFrame, floatfmt: str) -> str:
    cols = list(frame.columns)
    def fmt(v: object) -> str:
        return format(v, floatfmt) if isinstance(v, (float, np.floating)) and np.isfinite(v) else ("" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def mean_std(frame: pd.DataFrame, index: str | Sequence[str], columns: str, value: str, digits: int = 3) -> pd.DataFrame:
    """A pivot of ``value`` as 'mean ± std' strings over runs (the paper's table style)."""
    g = frame.groupby([*([index] if isinstance(index, str) else index), columns], sort=False)[value]
    cell = g.agg(lambda x: f"{x.mean():.{digits}f} ± {x.std(ddof=1):.{digits}f}" if len(x) > 1 else f"{x.mean():.{digits}f}")
    return _pivot(cell, frame, columns)


def _pivot(cells: pd.Series, frame: pd.DataFrame, columns: str) -> pd.DataFrame:
    """``cells`` (indexed by row keys + ``columns``) as a table whose columns keep ``frame``'s order
    of first appearance (the grid's order, not sorted); float labels print as ``%g``."""
    table = cells.unstack(columns)
    table = table[[c for c in frame[columns].unique() if c in table.columns]]
    table.columns = [f"{c:g}" if isinstance(c, float) else c for c in table.columns]
    return table.reset_index()
