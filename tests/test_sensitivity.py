"""Sec. 6 grids: presets, learning-rate scaling, and the one-run evaluation schedule of Figure 3."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from conftest import needs_mirror


def test_sensitivity_presets_cover_the_paper_grid():
    import untrac
    from untrac import paper

    grid = untrac.preset("sensitivity", "paper")
    assert grid.optimizers == tuple(paper.TABLE4_OPTIMIZER["optimizer"].unique())
    assert grid.learning_rates == tuple(paper.TABLE4_LR["paper_lr"].unique())
    assert grid.batch_sizes == (1, None) and grid.testset == "toxigen" and grid.setting == "equal"
    assert untrac.preset("sensitivity", "mini", runs=2).runs == 2
    assert untrac.preset("sensitivity", "mini", runs=None).runs == 4  # None keeps the preset's value


def test_learning_rates_scale_per_method():
    from untrac import UnlearnConfig
    from untrac.presets import SensitivityPreset
    from untrac.experiments.sensitivity import lr_scale

    setting = SimpleNamespace(preset=SimpleNamespace(untrac=UnlearnConfig(lr=5e-5), untrac_inv=UnlearnConfig(lr=1e-3)))
    grid = SensitivityPreset(scale="mini")
    assert lr_scale(setting, grid, "UnTrac") == pytest.approx(1.0)
    assert lr_scale(setting, grid, "UnTrac-Inv") == pytest.approx(20.0)
    fixed = SensitivityPreset(scale="mini", lr_scale=3.0)
    assert lr_scale(setting, fixed, "UnTrac") == lr_scale(setting, fixed, "UnTrac-Inv") == 3.0


@pytest.mark.parametrize("method", ["UnTrac", "UnTrac-Inv"])
def test_each_point_of_a_curve_equals_a_run_stopped_there(tiny, method):
    """Figure 3 costs one run per curve: the influence recorded at step k of a long run is exactly
    what a run of k steps returns (same data order across epochs, same optimizer state)."""
    from untrac import UnlearnConfig, attribute

    model, train_sets, test_sets, pad = tiny
    config = UnlearnConfig(lr=1e-3, batch_size=2 if method == "UnTrac" else None, epochs=3, eval_every=2)
    long = attribute(method, model, train_sets, test_sets, pad, config=config, progress=False)
    assert len(long.steps) >= 3
    for i, k in enumerate(long.steps):
        if k == 0:
            assert np.all(long.trajectory[i] == 0)
            continue
        short = attribute(method, model, train_sets, test_sets, pad, progress=False,
                          config=UnlearnConfig(lr=1e-3, batch_size=config.batch_size, steps=k))
        np.testing.assert_allclose(long.trajectory[i], short.values, rtol=1e-5, atol=1e-7)


def test_correlation_of_an_all_zero_estimate_is_nan_without_warning():
    import warnings

    from untrac.evaluate import correlation
    from untrac.methods.result import Influence

    truth = Influence("Ground truth", ["a", "b", "c"], ["t1", "t2"], np.arange(6.0).reshape(3, 2))
    zero = Influence("UnTrac", ["a", "b", "c"], ["t1", "t2"], np.zeros((3, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(correlation(zero, truth))
    assert correlation(truth, truth) == pytest.approx(1.0)


def test_paper_beside_keeps_grid_order_and_hand_computed_cells():
    import pandas as pd

    from untrac.report import paper_beside

    ours = pd.DataFrame({"method": ["U"] * 4 + ["V"] * 2, "lr": [5e-5, 5e-5, 1e-4, 1e-4, 5e-5, 5e-5],
                         "pearson": [0.1, 0.3, 0.5, 0.5, -0.2, 0.0]})
    theirs = pd.DataFrame({"method": ["U"], "lr": [1e-4], "mean": [0.377], "std": [0.04]})
    table = paper_beside(ours, theirs, "method", "lr")
    assert list(table.columns) == ["method", "5e-05", "0.0001"] and list(table["method"]) == ["U", "V"]
    row = table.set_index("method")
    assert row.loc["U", "5e-05"] == "0.200 ± 0.141"  # mean 0.2, sample std sqrt(0.02)
    assert row.loc["U", "0.0001"] == "0.500 ± 0.000 (0.377 ± 0.040)"
    assert row.loc["V", "5e-05"] == "-0.100 ± 0.141" and pd.isna(row.loc["V", "0.0001"])


def test_ordering_verdicts_test_the_papers_orderings_on_paired_runs():
    import pandas as pd

    from untrac import paper
    from untrac.evaluate import ordering_verdicts

    rng = np.random.default_rng(0)
    shift = {"sgd": -0.3, "sgd_momentum": 0.0, "rmsprop": 0.3, "adam": 0.0, "adafactor": 0.0}  # ours, vs adam
    ours = pd.DataFrame([{"method": m, "optimizer": o, "run": r, "pearson": 0.5 + d + base + rng.normal(0, 0.02)}
                         for m in ("UnTrac", "UnTrac-Inv") for r, base in enumerate(rng.normal(0, 0.3, 4))
                         for o, d in shift.items()])
    out = ordering_verdicts(ours, paper.TABLE4_OPTIMIZER, "optimizer", n_boot=500).set_index(["method", "claim"])
    # UnTrac's paper best is Adam (0.419); RMSProp (0.418) is within min_gap: no claim about it
    assert set(out.loc["UnTrac"].index) == {"adam beats sgd", "adam beats sgd_momentum", "adam beats adafactor"}
    assert out.loc[("UnTrac", "adam beats sgd"), "verdict"] == "holds"  # 0.3 better, run to run paired
    assert out.loc[("UnTrac-Inv", "adam beats rmsprop"), "verdict"] == "fails"  # ours: RMSProp 0.3 better
    assert out.loc[("UnTrac", "adam beats sgd_momentum"), "verdict"] == "inconclusive"
    assert out.loc[("UnTrac", "adam beats sgd"), "paper_difference"] == pytest.approx(0.419 + 0.147)
    row = out.loc[("UnTrac", "adam beats sgd")]
    assert row["ci_low"] < row["difference"] < row["ci_high"] and row["difference"] == pytest.approx(0.3, abs=0.05)


@needs_mirror
def test_the_runs_sent_to_workers_are_the_runs_the_cells_use(monkeypatch):
    """Each grid's unlearning runs are computed in worker processes before the cells run: the calls sent
    there must be exactly the cached attributions the cells then load (else the work is done twice)."""
    import torch

    import untrac
    from untrac.experiments import corpora as ec, sensitivity, sweep as S
    from untrac.experiments.setup import attribution_call

    torch.set_num_threads(1)
    setting = ec.corpora_setting(untrac.preset("corpora", "smoke", runs=1), "equal", progress=False)
    grid = untrac.preset("sensitivity", "smoke", runs=1, epochs=1, optimizers=("sgd",), learning_rates=(5e-4,))
    sent = []
    monkeypatch.setattr(S, "prefetch", lambda calls, **kw: sent.extend(calls))
    sensitivity.epoch_curves(setting, grid, progress=False)
    sensitivity.optimizer_table(setting, grid, progress=False)
    sensitivity.learning_rate_table(setting, grid, progress=False)
    assert len(sent) == 2 * (len(grid.batch_sizes) + 1 + 1)  # one run per cell, both methods
    assert len({(c[1][0], c[2]["config"]) for c in sent}) == len(sent)
    for fn, args, kwargs in sent:  # each is now cached: a cell computed it
        assert attribution_call(*args, config=kwargs["config"]) == []
