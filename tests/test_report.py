"""Every figure of :mod:`untrac.report` stands alone: a caption that says what the marks are, a scale
stamp (so a smoke figure cannot pass for a mini one), and the paper's values where it has them."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from untrac import paper, report

METHODS = ["Ground truth", "UnTrac", "UnTrac-Inv", "GradDot", "GradCos", "TracIn", "HIF (LiSSA)", "HIF (Arnoldi)"]
TRAINS = ["train1", "train2", "train3", "train4"]
RUNS = 3


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def standardised_frame() -> pd.DataFrame:
    r = _rng(1)
    return pd.DataFrame([{"family": f, "run": run, "method": m, "train": t, "z": r.normal()}
                         for f in ("A", "B") for run in range(RUNS) for m in METHODS for t in TRAINS])


def trajectory_frame() -> pd.DataFrame:
    r = _rng(2)
    return pd.DataFrame([{"family": f, "run": run, "method": m, "train": t, "test": "test", "step": s, "influence": r.normal() * s}
                         for f in ("A", "B") for run in range(RUNS) for m in ("UnTrac", "UnTrac-Inv") for t in TRAINS
                         for s in (0, 2, 4)])


def correlation_frame() -> pd.DataFrame:
    r = _rng(3)
    return pd.DataFrame([{"family": f, "run": run, "method": m, "pearson": r.uniform(-1, 1), "spearman": r.uniform(-1, 1)}
                         for f in ("A", "B") for run in range(RUNS) for m in METHODS[1:]])


def corpora_correlations() -> pd.DataFrame:
    r = _rng(4)
    return pd.DataFrame([{"setting": s, "testset": t, "run": run, "method": m, "pearson": r.uniform(-1, 1),
                          "spearman": r.uniform(-1, 1)}
                         for s in ("equal", "different") for t in ("toxigen", "winobias", "truthfulqa")
                         for run in range(RUNS) for m in METHODS[1:]])


def noise_frame() -> pd.DataFrame:
    return pd.DataFrame({"testset": ["toxigen", "winobias"], "seeds": [3, 3], "corpus_spread": [0.05, 0.03],
                         "seed_sd": [0.02, 0.01], "heldout_se": [0.014, 0.007], "truth_se": [0.012, 0.006]})


def variants_frame() -> pd.DataFrame:
    r = _rng(5)
    corpora = {"Pile-CC": 0.3, "OpenWebText2": 0.2, "BookCorpus": 0.5}
    return pd.DataFrame([{"variant": v, "corpus": c, "share": sh, "subset": f"g{i}", "influence": r.normal()}
                         for v in ("classic: all other examples", "fixed: same number of steps")
                         for c, sh in corpora.items() for i in range(3)])


def influence_frame() -> pd.DataFrame:
    r = _rng(6)
    return pd.DataFrame([{"setting": s, "testset": t, "run": run, "method": m, "corpus": c, "z": r.normal(), "raw": r.normal()}
                         for s in ("equal", "different") for t in ("toxigen", "winobias") for run in range(RUNS)
                         for m in METHODS for c in ("Pile-CC", "BookCorpus", "Wikipedia")])


def regime_frame() -> pd.DataFrame:
    rows = [{"candidate": c, "testset": t, "ratio_one_seed": r, "ratio_3_seeds": r * 3 ** 0.5, "train_loss": 4.0,
             "unigram": 5.0, "seconds_per_model": 30.0}
            for c, r0 in (("as is", 1.0), ("2x layers", 2.0)) for t, r in (("toxigen", r0), ("winobias", r0 + 0.5))]
    return pd.DataFrame(rows)


def synthetic_regime_frame() -> pd.DataFrame:
    return pd.DataFrame([{"candidate": c, "family": f, "seeds": 3, "ratio_one_seed": r + (f == "B"), "exact_match": m,
                          "seconds_per_model": s} for c, r, m, s in (("as is", 3.5, 0.0, 4.0), ("8 epochs", 0.5, 0.03, 70.0))
                         for f in "AB"])


def cost_frame() -> pd.DataFrame:
    return pd.DataFrame([{"setting": s, "method": m, "seconds": 1.0 + i, "pearson": 0.1 * i, "spearman": 0.1 * i}
                         for s in ("equal", "different") for i, m in enumerate(METHODS[1:])])


def epoch_frame() -> pd.DataFrame:
    r = _rng(7)
    return pd.DataFrame([{"method": m, "batch": b, "run": run, "epoch": e, "pearson": r.uniform(-1, 1),
                          "mean_change": 10 ** r.uniform(-5, 1)}
                         for m in ("UnTrac", "UnTrac-Inv") for b in ("1", "whole set") for run in range(RUNS) for e in (0.5, 1, 2)])


def optimizer_frame() -> pd.DataFrame:
    r = _rng(8)
    return pd.DataFrame([{"method": m, "optimizer": o, "run": run, "pearson": r.uniform(-1, 1), "mean_change": 10 ** r.uniform(-5, 1)}
                         for m in ("UnTrac", "UnTrac-Inv") for o in ("sgd", "adam") for run in range(RUNS)])


def rates_frame() -> pd.DataFrame:
    r = _rng(9)
    return pd.DataFrame([{"method": m, "paper_lr": lr, "run": run, "pearson": r.uniform(-1, 1), "mean_change": 10 ** r.uniform(-5, 1)}
                         for m in ("UnTrac", "UnTrac-Inv") for lr in (5e-5, 5e-4) for run in range(RUNS)])


def klom_frame(flat_retain_p95: bool = True) -> pd.DataFrame:
    r = _rng(10)
    algorithms = {"do nothing": [0], "DM-Direct": [0], "gradient ascent (lr 5e-05)": [2, 4], "gradient ascent (lr 0.0005)": [2, 4],
                  "oracle matching": [2, 4]}
    rows = []
    for k in TRAINS:
        for a, budgets in algorithms.items():
            for steps in budgets:
                for g in ("forget", "retain", "validation"):
                    p95 = 11.5 if (g == "retain" and flat_retain_p95) else r.uniform(0, 11.5)
                    rows.append({"family": "A", "forget": k, "algorithm": a, "steps": steps, "fraction": steps / 100,
                                 "group": g, "n": 16, "p50": r.uniform(0, 11.5), "p95": p95, "p99": 11.5})
    return pd.DataFrame(rows)


def steps_frame() -> pd.DataFrame:
    return pd.concat([pd.DataFrame({"step": [0, 2, 4], "pearson": [np.nan, 0.2, 0.5], "method": m}) for m in ("UnTrac", "UnTrac-Inv")])


#: every plot function with arguments that exercise it (scale added by the test)
def example_check_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame([{"method": m, "test": f"{t}/{i}", "testset": t, "spearman": rng.uniform(-0.2, 0.9),
                          "pearson": rng.uniform(-0.2, 0.9)}
                         for m in ("GradDot", "TRAK") for t in ("toxigen", "winobias") for i in range(3)])


PLOTS = {
    "plot_trajectories": lambda: report.plot_trajectories(trajectory_frame()),
    "plot_standardised": lambda: report.plot_standardised(standardised_frame()),
    "plot_correlations": lambda: report.plot_correlations(correlation_frame(), "pearson", col="family"),
    "plot_correlation_over_steps": lambda: report.plot_correlation_over_steps(steps_frame(), reference={"GradDot": -0.3}),
    "plot_noise_floor": lambda: report.plot_noise_floor(noise_frame()),
    "plot_regime_study": lambda: report.plot_regime_study(regime_frame(), "as is"),
    "plot_synthetic_regime": lambda: report.plot_synthetic_regime(synthetic_regime_frame()),
    "plot_ground_truth_variants": lambda: report.plot_ground_truth_variants(variants_frame()),
    "plot_corpus_influence": lambda: report.plot_corpus_influence(influence_frame()),
    "plot_cost_accuracy": lambda: report.plot_cost_accuracy(cost_frame()),
    "plot_corpora_correlations": lambda: report.plot_corpora_correlations(corpora_correlations(), "spearman"),
    "plot_example_check": lambda: report.plot_example_check(example_check_frame(), 0.34),
    "plot_epoch_curves": lambda: report.plot_epoch_curves(epoch_frame()),
    "plot_correlation_vs_change": lambda: report.plot_correlation_vs_change(
        {"Figure 3 (epoch ends)": epoch_frame(), "Table 4 optimizers": optimizer_frame()}, 0.05),
    "plot_beside_paper": lambda: report.plot_beside_paper(optimizer_frame(), paper.TABLE4_OPTIMIZER, "method", "optimizer"),
    "plot_klom": lambda: report.plot_klom(klom_frame(), {"p50": 0.1, "p95": 5.0}, models_per_side=2),
}


def test_every_plot_function_is_covered():
    public = {name for name in dir(report) if name.startswith("plot_") and callable(getattr(report, name))}
    assert public == set(PLOTS)


def _texts(fig: plt.Figure, gid: str) -> list[str]:
    return [t.get_text() for t in fig.texts if t.get_gid() == gid]


def _paper_lines(fig: plt.Figure) -> list:
    return [line for ax in fig.axes for line in ax.lines if line.get_gid() == report.PAPER_GID]


@pytest.mark.parametrize("name", sorted(PLOTS))
def test_every_figure_has_a_caption(name):
    fig = PLOTS[name]()
    try:
        (caption,) = _texts(fig, report.CAPTION_GID)
        assert len(caption) > 60, caption
        assert caption in report.figure_texts(fig)
        assert not _texts(fig, report.SCALE_GID), "no scale given, no stamp"
    finally:
        plt.close(fig)


@pytest.mark.parametrize("name", sorted(PLOTS))
@pytest.mark.parametrize("scale", ["smoke", "mini"])
def test_every_figure_carries_its_scale(name, scale, monkeypatch):
    plot = getattr(report, name)
    captured = {}

    def with_scale(*args, **kwargs):
        captured["fig"] = plot(*args, scale=scale, **kwargs)
        return captured["fig"]

    monkeypatch.setattr(report, name, with_scale)
    fig = PLOTS[name]()
    try:
        (text,) = _texts(fig, report.SCALE_GID)
        assert text.startswith(f"scale: {scale}")
        assert ("not results" in text) == (scale == "smoke")
        # above everything else, to the right: the stamp's bottom is at the top of the content
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        stamp = next(t for t in fig.texts if t.get_gid() == report.SCALE_GID).get_window_extent(renderer)
        for ax in fig.axes:
            assert ax.get_window_extent(renderer).y1 <= stamp.y0 + 1
    finally:
        plt.close(fig)


def test_output_stamps_figures_it_writes(tmp_path):
    fig = report.plot_noise_floor(noise_frame())
    try:
        report.Output(tmp_path, "99", scale="mini").figure(fig, "noise")
        report.Output(tmp_path, "99", scale="mini").figure(fig, "noise")  # stamped once
        assert _texts(fig, report.SCALE_GID) == ["scale: mini"]
        assert (tmp_path / "99_noise.png").is_file() and (tmp_path / "99_noise.pdf").is_file()
    finally:
        plt.close(fig)
    fig = report.plot_noise_floor(noise_frame(), scale="smoke")
    try:
        report.Output(tmp_path, "99").figure(fig, "noise")  # no scale: the plot's own stamp stays
        assert len(_texts(fig, report.SCALE_GID)) == 1
    finally:
        plt.close(fig)


def _bar_centres(ax) -> list[float]:
    return sorted(round(p.get_x() + p.get_width() / 2, 6) for p in ax.patches if p.get_height() != 0 and p.get_width() < 1)


def test_table2_overlay_sits_on_the_bars_it_reports():
    frame = standardised_frame()
    fig = report.plot_standardised(frame)
    try:
        lines = _paper_lines(fig)
        # Table 2 reports family A: truth, UnTrac, UnTrac-Inv; family B: truth
        assert sorted(len(line.get_xdata()) for line in lines) == [4, 12]
        for line in lines:
            ax = line.axes
            centres = _bar_centres(ax)
            for x in line.get_xdata():
                assert min(abs(c - x) for c in centres) < 1e-6, "a diamond off its bar"
        family_a = next(line for line in lines if len(line.get_xdata()) == 12)
        expected = paper.TABLE2[paper.TABLE2["family"] == "A"][TRAINS].to_numpy().ravel()
        assert sorted(family_a.get_ydata()) == sorted(expected)
        assert any("Table 2" in t for t in report.figure_texts(fig))
    finally:
        plt.close(fig)
    fig = report.plot_standardised(frame, paper=False)
    try:
        assert not _paper_lines(fig)
    finally:
        plt.close(fig)


@pytest.mark.parametrize("value, table", [("pearson", paper.TABLE3), ("spearman", paper.TABLE5)])
def test_tables_3_and_5_overlay(value, table):
    corr = corpora_correlations()
    fig = report.plot_corpora_correlations(corr, value)
    try:
        lines = _paper_lines(fig)
        assert len(lines) == 3  # one per test set
        for line in lines:
            testset = line.axes.get_title()
            assert len(line.get_xdata()) == 7 * 2
            expected = table[[f"{testset}/equal", f"{testset}/different"]].to_numpy().ravel()
            assert sorted(line.get_ydata()) == sorted(expected)
            centres = _bar_centres(line.axes)
            assert all(min(abs(c - x) for c in centres) < 1e-6 for x in line.get_xdata())
        assert any(f"paper, {'Table 3' if value == 'pearson' else 'Table 5'}" in t for t in report.figure_texts(fig))
    finally:
        plt.close(fig)


@pytest.mark.parametrize("frame, theirs, column", [(optimizer_frame, paper.TABLE4_OPTIMIZER, "optimizer"),
                                                   (rates_frame, paper.TABLE4_LR, "paper_lr")])
def test_table4_overlay(frame, theirs, column):
    fig = report.plot_beside_paper(frame(), theirs, "method", column)
    try:
        lines = _paper_lines(fig)
        assert len(lines) == 2  # UnTrac, UnTrac-Inv
        for line in lines:
            method = line.axes.get_title()
            ours = frame()
            wanted = theirs[(theirs["method"] == method) & theirs[column].isin(ours[column])]
            assert sorted(line.get_ydata()) == sorted(wanted["mean"])
    finally:
        plt.close(fig)


def test_correlation_vs_change_names_the_dashed_line_and_keeps_ticks_apart():
    fig = report.plot_correlation_vs_change({"Figure 3 (epoch ends)": epoch_frame()}, 0.05)
    try:
        assert any("spread" in t and "0.05" in t for t in report.figure_texts(fig))
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        boxes = [t.get_window_extent(renderer) for ax in fig.axes for x, t in zip(ax.get_xticks(), ax.get_xticklabels())
                 if t.get_visible() and t.get_text() and min(ax.get_xlim()) <= x <= max(ax.get_xlim())]
        assert len(boxes) >= 4
        boxes.sort(key=lambda b: b.x0)
        assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:])), "x tick labels overlap"
    finally:
        plt.close(fig)


def test_klom_draws_one_line_per_algorithm_and_marks_flat_panels():
    fig = report.plot_klom(klom_frame(), {"p50": 0.1, "p95": 5.0})
    try:
        legend = [t for lg in fig.legends for t in (x.get_text() for x in lg.get_texts())]
        assert sum("gradient ascent" in t for t in legend) == 1
        assert any("best: lr" in t for t in legend)
        assert any("noise floor" in t for t in legend)
        assert sum("cannot tell them apart" in t.get_text() for ax in fig.axes for t in ax.texts) == 1
    finally:
        plt.close(fig)
    fig = report.plot_klom(klom_frame(), best_lr=False)
    try:
        legend = [t for lg in fig.legends for t in (x.get_text() for x in lg.get_texts())]
        assert sum("gradient ascent" in t for t in legend) == 2
    finally:
        plt.close(fig)


def test_caption_counts_runs():
    fig = report.plot_correlations(correlation_frame())
    try:
        assert f"mean ± std over {RUNS} runs" in _texts(fig, report.CAPTION_GID)[0]
    finally:
        plt.close(fig)
    fig = report.plot_correlations(correlation_frame().query("run == 0"))
    try:
        assert "one run (no error bars)" in _texts(fig, report.CAPTION_GID)[0]
    finally:
        plt.close(fig)


def test_noise_floor_plot_groups_bars_by_test_set_and_setting():
    frame = pd.concat([noise_frame().assign(setting=s) for s in ("equal", "different")], ignore_index=True)
    fig = report.plot_noise_floor(frame)
    try:
        labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
        assert labels == ["toxigen\nequal sizes", "winobias\nequal sizes", "toxigen\ndifferent sizes", "winobias\ndifferent sizes"]
        heights = sorted(round(p.get_height(), 4) for p in fig.axes[0].patches if p.get_width() < 1 and p.get_height() > 0)
        assert heights == sorted(round(v, 4) for v in frame[["corpus_spread", "seed_sd", "heldout_se", "truth_se"]].to_numpy().ravel())
    finally:
        plt.close(fig)
