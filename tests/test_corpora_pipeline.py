"""The Section 5.2 pipeline (untrac.experiments.corpora); notebook 02 itself runs in tests/test_notebooks.py."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import needs_mirror

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "02_pretraining_corpora.ipynb"


# ----------------------------------------------------------------------------------------------
# Presets and paper numbers
# ----------------------------------------------------------------------------------------------


def test_corpora_presets_registered_and_paper_recipe():
    from untrac import preset
    from untrac.presets import PRESETS, SCALES

    assert set(PRESETS["corpora"]) == set(SCALES)
    p = preset("corpora", "paper")
    assert p.model.name == "facebook/opt-125m" and not p.model.pretrained and p.model.tokenizer == "facebook/opt-125m"
    assert (p.block_size, p.blocks_per_corpus, p.sample_blocks, p.test_examples, p.runs) == (1024, 40_000, 10_000, 256, 4)
    t = p.train
    assert (t.steps, t.batch_size, t.lr, t.optimizer, t.clip, t.checkpoint_every) == (40_000, 8, 5e-5, "adamw", 1.0, 5_000)
    assert p.anneal is None  # the paper trains at a constant rate
    assert (p.untrac.optimizer, p.untrac.lr, p.untrac.batch_size, p.untrac.epochs) == ("adam", 5e-5, 1, 1)
    assert (p.untrac_inv.batch_size, p.untrac_inv.epochs) == (None, 5)
    assert p.baselines["HIF (Arnoldi)"]["n_iters"] == 200 and p.baselines["HIF (Arnoldi)"]["top_p"] == 100
    assert p.baselines["HIF (LiSSA)"]["iterations"] == 10
    assert p.baselines["HIF (LiSSA)"]["hessian_examples"] == 256
    assert p.settings == ("equal", "different") and p.testsets == ("toxigen", "winobias", "truthfulqa")
    mini = preset("corpora", "mini")
    assert mini.model.vocab_size == preset("synthetic", "mini").model.vocab_size  # the BPE notebook 01 uses
    assert mini.tokenizer == preset("synthetic", "mini").tokenizer
    for scale in SCALES:  # every run can sample its blocks from the smallest corpus of the different setting
        q = preset("corpora", scale)
        from untrac.experiments.corpora import corpus_blocks

        assert min(corpus_blocks(q, "different").values()) >= q.sample_blocks


def test_corpora_preset_overrides():
    from untrac import preset

    p = preset("corpora", "smoke", runs=3, train__steps=5, anneal__lr=1e-5, sample_blocks=None)
    assert (p.runs, p.train.steps, p.anneal.lr) == (3, 5, 1e-5)
    assert p.sample_blocks == preset("corpora", "smoke").sample_blocks  # None keeps the preset value
    with pytest.raises(ValueError, match="cannot override"):
        preset("corpora", "smoke", nope=1)


def test_paper_tables_3_and_5():
    from untrac import paper

    for table in (paper.TABLE3, paper.TABLE3_STD, paper.TABLE5, paper.TABLE5_STD):
        assert table.shape == (7, 7) and list(table["method"]) == list(paper.TABLE3["method"])
    row = paper.TABLE5.set_index("method").loc["UnTrac"]
    assert row["toxigen/equal"] == 0.421 and row["truthfulqa/different"] == 0.144
    cells = paper.paper_table("spearman").set_index("method")
    assert cells.loc["UnTrac-Inv", "winobias/equal"] == "0.854 ± 0.010"
    assert paper.paper_table("pearson").set_index("method").loc["GradDot", "toxigen/equal"] == "-0.123 ± 0.008"


# ----------------------------------------------------------------------------------------------
# Pieces of the pipeline
# ----------------------------------------------------------------------------------------------


def test_corpus_blocks_settings():
    from untrac import preset
    from untrac.data.corpora import CORPUS_NAMES
    from untrac.experiments.corpora import corpus_blocks

    p = preset("corpora", "smoke", blocks_per_corpus=100)
    equal, different = corpus_blocks(p, "equal"), corpus_blocks(p, "different")
    assert list(equal) == list(different) == list(CORPUS_NAMES)
    assert set(equal.values()) == {100} and sum(different.values()) == 800
    assert different["Pile-CC"] == 240 and different["OpenWebText2"] == 160 and different["Wikipedia"] == 40
    assert corpus_blocks(preset("corpora", "paper"), "different")["Pile-CC"] == 96_000
    with pytest.raises(ValueError, match="unknown setting"):
        corpus_blocks(p, "huge")


def _influence(values, tests, method="m", trajectory=False):
    from untrac.methods import Influence

    values = np.asarray(values, dtype=float)
    traj = np.stack([values * 0.5, values]) if trajectory else None
    return Influence(method, [f"c{k}" for k in range(values.shape[0])], list(tests), values,
                     steps=[1, 2] if trajectory else None, trajectory=traj)


def test_select_testset_keeps_columns_and_trajectory():
    from untrac.experiments.corpora import select_testset

    inf = _influence(np.arange(12).reshape(4, 3), ["a/x", "b/y", "a/z"], trajectory=True)
    a = select_testset(inf, "a")
    assert a.test_names == ["a/x", "a/z"] and a.train_names == inf.train_names
    np.testing.assert_array_equal(a.values, inf.values[:, [0, 2]])
    np.testing.assert_array_equal(a.trajectory, inf.trajectory[:, :, [0, 2]])
    with pytest.raises(ValueError, match="no subsets of test set 'c'"):
        select_testset(inf, "c")


def test_correlation_frame_per_testset_and_run():
    from untrac.experiments.corpora import TRUTH, correlation_frame

    rng = np.random.default_rng(0)
    tests = ["t1/a", "t1/b", "t2/a"]
    truth = rng.normal(size=(8, 3))
    run = {TRUTH: _influence(truth, tests, TRUTH), "same": _influence(2 * truth + 1, tests, "same"),
           "flipped": _influence(-truth, tests, "flipped")}
    frame = correlation_frame({"equal": [run, run], "different": [run]})
    assert len(frame) == 3 * 2 * 2  # (setting, run) pairs x test sets x methods
    assert set(frame["testset"]) == {"t1", "t2"} and set(frame["method"]) == {"same", "flipped"}
    assert np.allclose(frame.loc[frame["method"] == "same", ["pearson", "spearman"]], 1.0)
    assert np.allclose(frame.loc[frame["method"] == "flipped", ["pearson", "spearman"]], -1.0)


def test_correlation_frame_is_the_mean_of_the_subset_correlations():
    from untrac.evaluate import correlation, select_testset, subset_correlation_frame
    from untrac.experiments.corpora import TRUTH, correlation_frame

    rng = np.random.default_rng(1)
    tests = ["t1/a", "t1/b", "t2/a"]
    truth = _influence(rng.normal(size=(8, 3)), tests, TRUTH)
    runs = [{TRUTH: truth, "m": _influence(rng.normal(size=(8, 3)), tests, "m")} for _ in range(2)]
    frame = correlation_frame({"equal": runs})
    for row in frame.itertuples():
        est, t = (select_testset(runs[row.run][k], row.testset) for k in ("m", TRUTH))
        assert row.pearson == pytest.approx(correlation(est, t)) and row.spearman == pytest.approx(correlation(est, t, "spearman"))
    assert len(subset_correlation_frame({"equal": runs})) == 2 * 3


def _cells(gap: float, noise: float, seed: int = 0):
    """Per (run, subset) correlations: a claimant ``gap`` above the best of two baselines, plus noise."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for run in range(4):
        for s in range(8):
            base = rng.normal(0.4, 0.1)
            for method, shift in (("UnTrac", gap), ("GradDot", 0.0), ("GradCos", -0.2), ("Random", -0.4),
                                  ("Ceiling (one seed's exact truth)", 0.8)):
                rows.append({"setting": "equal", "testset": "t", "subset": f"t/{s}", "run": run, "method": method,
                             "pearson": base + shift + rng.normal(0, noise)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("gap, verdict", [(0.3, "holds"), (-0.3, "fails"), (0.0, "inconclusive")])
def test_claim_verdicts_decide_by_the_bootstrap_ci(gap, verdict):
    from untrac.evaluate import claim_verdicts

    out = claim_verdicts(_cells(gap, noise=0.2), n_boot=1000)
    best = out[out["versus"].str.endswith("(best baseline)")].iloc[0]
    assert best["versus"] == "GradDot (best baseline)" and best["verdict"] == verdict
    assert best["ci_low"] < best["difference"] < best["ci_high"]
    assert abs(best["difference"] - gap) < 0.1
    if gap >= 0:  # 0.4 or more above the Random row
        assert out[out["versus"] == "Random (reference)"]["verdict"].iloc[0] == "holds"
    # the ceiling row is never "the best baseline"; it is its own comparison, which no claimant here reaches
    ceiling = out[out["versus"] == "Ceiling (one seed's exact truth)"]
    assert len(ceiling) == 1 and ceiling["verdict"].iloc[0] == "fails"


def test_influence_frame_standardises_over_corpora():
    from untrac.experiments.corpora import TRUTH, influence_frame

    truth = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    frame = influence_frame({"equal": [{TRUTH: _influence(truth, ["t/a", "t/b"], TRUTH)}]})
    assert list(frame["corpus"]) == ["c0", "c1", "c2"]
    np.testing.assert_allclose(frame["z"], [-np.sqrt(1.5), 0.0, np.sqrt(1.5)])  # same z for both subsets
    np.testing.assert_allclose(frame["raw"], [5.5, 11.0, 16.5])


def test_method_config_seeds_the_run_and_types_the_settings():
    from untrac import preset
    from untrac.experiments.setup import method_config
    from untrac.methods.similarity import GradientSettings

    p = preset("corpora", "mini")
    assert method_config(p, "UnTrac", 3) == dataclasses.replace(p.untrac, seed=3)
    assert method_config(p, "UnTrac-Inv", 2).batch_size is None
    assert method_config(p, "GradDot", 1) == GradientSettings()  # no seed to set
    hif = method_config(p, "HIF (Arnoldi)", 1)
    assert hif.seed == 1 and all(getattr(hif, k) == v for k, v in p.baselines["HIF (Arnoldi)"].items())
    with pytest.raises(ValueError, match="unknown method"):
        method_config(p, "Shapley", 0)


def test_corpora_table_beside_paper():
    from untrac import paper, report

    corr = pd.DataFrame([{"setting": s, "testset": t, "run": r, "method": m, "pearson": v + r * 0.1}
                         for s in ("equal", "different") for t in ("toxigen", "winobias", "truthfulqa")
                         for r in range(2) for m, v in (("UnTrac", 0.5), ("GradDot", -0.2))])
    ours = report.corpora_table(corr, "pearson")
    assert list(ours.columns) == ["method", *report.TABLE35_COLUMNS]
    assert ours.set_index("method").loc["UnTrac", "toxigen/equal"] == "0.550 ± 0.071"
    both = report.beside_paper(ours, paper.paper_table("pearson"))
    assert list(both.columns[:3]) == ["method", "toxigen/equal", "toxigen/equal (paper)"]
    assert list(both["method"][:2]) == ["UnTrac", "GradDot"] and len(both) == 7
    assert both.set_index("method").loc["UnTrac", "toxigen/equal (paper)"] == "0.419 ± 0.063"


def test_sample_blocks_per_run():
    import datasets

    from untrac.experiments.corpora import sample_blocks

    sets = {"a": datasets.Dataset.from_dict({"input_ids": [[i, i] for i in range(50)]}),
            "b": datasets.Dataset.from_dict({"input_ids": [[i, i] for i in range(5)]})}
    s0, s0b, s1 = sample_blocks(sets, 10, 0), sample_blocks(sets, 10, 0), sample_blocks(sets, 10, 1)
    assert len(s0["a"]) == 10 and len(s0["b"]) == 5  # a smaller corpus is used whole
    assert s0["a"]["input_ids"] == s0b["a"]["input_ids"] != s1["a"]["input_ids"]
    rows = [r[0] for r in s0["a"]["input_ids"]]
    assert rows == sorted(set(rows)) and set(rows) <= set(range(50))  # distinct rows of the corpus, in order


def test_train_model_continues_with_the_anneal_phase(tiny):
    import torch

    from untrac import preset
    from untrac.experiments.corpora import train_model
    from untrac.training import TrainConfig, train

    model, train_sets, _, pad = tiny
    p = preset("corpora", "smoke", train=TrainConfig(steps=6, batch_size=4, lr=1e-2, checkpoint_every=3),
               anneal=TrainConfig(steps=4, batch_size=4, lr=1e-3, checkpoint_every=2))
    t = train_model(model, train_sets, p, pad, progress=False)
    assert [s for s, _ in t.checkpoints] == [3, 6, 8, 10] and t.log["steps"] == 10
    assert len(t.checkpoint_states()) == 4
    first = train(model, train_sets, p.train, pad, progress=False)
    second = train(first.model, train_sets, dataclasses.replace(p.anneal, seed=10_000), pad, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(t.model.state_dict().values(), second.model.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(t.model.state_dict().values(), first.model.state_dict().values()))
    other = train_model(model, train_sets, p, pad, seed=1, progress=False)
    assert other.key != t.key  # another data-order seed is another model
    classic = train_model(model, train_sets, p, pad, exclude="train1", variant="classic", progress=False)
    assert classic.log["steps"] == round(6 * 0.75) + round(4 * 0.75)  # both phases scaled by the 3/4 kept
    no_anneal = train_model(model, train_sets, dataclasses.replace(p, anneal=None), pad, progress=False)
    assert no_anneal.key == first.key and [s for s, _ in no_anneal.checkpoints] == [3, 6]


# ----------------------------------------------------------------------------------------------
# The pipeline end to end (mirror needed)
# ----------------------------------------------------------------------------------------------


@needs_mirror
def test_corpora_setting_models_truth_and_cache(monkeypatch):
    import torch

    from untrac.experiments import corpora as ec
    from untrac import preset, training
    from untrac.data.testsets import TRUTHFULQA_CATEGORIES, TOXIGEN_GROUPS, WINOBIAS_SUBSETS

    torch.set_num_threads(1)
    p = preset("corpora", "smoke", runs=1)
    s = ec.corpora_setting(p, "different", progress=False)
    assert [len(v) for v in s.train_sets.values()] == list(ec.corpus_blocks(p, "different").values())
    assert set(s.tests) == ({f"toxigen/{g}" for g in TOXIGEN_GROUPS} | {f"winobias/{g}" for g in WINOBIAS_SUBSETS}
                            | {f"truthfulqa/{g}" for g in TRUTHFULQA_CATEGORIES})
    assert all(len(ds) == p.test_examples for ds in s.tests.values())
    steps = p.train.steps + p.anneal.steps
    assert s.base.log["steps"] == steps and {t.log["steps"] for t in s.counterfactuals.values()} == {steps}
    assert s.classic["Pile-CC"].log["steps"] < s.classic["Wikipedia"].log["steps"] <= steps  # classic: fewer steps
    assert [k for k, _ in s.base.checkpoints] == [4, 8, 10]
    assert s.truth.values.shape == (8, 26) and s.classic_truth.values.shape == (8, 26)
    assert s.truth_for("winobias").test_names == [f"winobias/{g}" for g in WINOBIAS_SUBSETS]
    sample = s.sample(0)
    assert all(len(v) == p.sample_blocks for v in sample.values())
    run = ec.corpora_run(s, 0, methods=("GradDot", "UnTrac"), progress=False)
    assert list(run) == [ec.TRUTH, "GradDot", "UnTrac", ec.CEILING] and run["UnTrac"].values.shape == (8, 26)
    assert run["UnTrac"].steps == [0, 2, 3]  # 3 sampled blocks, batch 1, evaluated every 2 steps and at the end
    with pytest.raises(ValueError, match="unknown method .Shapley"):
        ec.corpora_run(s, 0, methods=("Shapley",), progress=False)
    # a new process (empty in-memory memo) loads every model and result from the cache, training nothing
    ec._LOADED.clear()
    monkeypatch.setattr(training, "batch_loss", lambda *a: pytest.fail("trained again instead of loading"))
    again = ec.corpora_setting(p, "different", progress=False)
    np.testing.assert_array_equal(again.truth.values, s.truth.values)
    np.testing.assert_array_equal(ec.corpora_run(again, 0, methods=("UnTrac",), progress=False)["UnTrac"].values,
                                  run["UnTrac"].values)


@needs_mirror
def test_seeds_give_heldout_truths_a_ceiling_and_the_noise_floor():
    """Every seed trains its own base and counterfactuals; run r attributes on seed r's model and is
    scored against the mean of the other seeds' truths; the ceiling row is its own seed's truth;
    the noise floor is computed from the per-seed truths (checked here against numpy by hand)."""
    import torch

    import untrac
    from untrac.experiments import corpora as ec
    from untrac import preset

    torch.set_num_threads(1)
    p = preset("corpora", "smoke", seeds=(0, 1, 2), runs=4)
    s = ec.corpora_setting(p, "equal", progress=False)
    assert s.seeds == [0, 1, 2] and len({t.key for t in s.bases.values()}) == 3
    assert s.base is s.bases[0] and s.counterfactuals is s.counterfactuals_by_seed[0]
    # seed 0 is the one-seed experiment's model (same cache entry): adding seeds changes nothing for it
    one = ec.corpora_setting(preset("corpora", "smoke", seeds=(0,)), "equal", progress=False)
    assert one.base.key == s.base.key
    stack = np.stack([s.truths[k].values for k in (0, 1, 2)])
    assert np.abs(stack[0] - stack[1]).max() > 0  # the seeds' truths differ: training noise
    np.testing.assert_allclose(s.truth.values, stack.mean(0))
    np.testing.assert_allclose(s.heldout_truth(1).values, (stack[0] + stack[2]) / 2)
    np.testing.assert_array_equal(one.heldout_truth(0).values, one.truths[0].values)  # one seed: its own
    assert [s.run_seed(r) for r in range(4)] == [0, 1, 2, 0]
    run = ec.corpora_run(s, 2, methods=("GradDot",), progress=False)
    assert list(run) == [ec.TRUTH, "GradDot", ec.CEILING]
    np.testing.assert_allclose(run[ec.TRUTH].values, (stack[0] + stack[1]) / 2)
    np.testing.assert_array_equal(run[ec.CEILING].values, stack[2])
    graddot = untrac.attribute("GradDot", s.bases[2].model, s.sample(2), s.tests, s.pad_id)
    np.testing.assert_allclose(run["GradDot"].values, graddot.values, rtol=1e-6)  # seed 2's model
    assert list(ec.corpora_run(one, 0, methods=("GradDot",), progress=False)) == [ec.TRUTH, "GradDot"]

    frame = ec.noise_floor(p, progress=False)
    assert list(frame["testset"]) == ["toxigen", "winobias", "truthfulqa"] and list(frame["subsets"]) == [13, 4, 9]
    cols = [i for i, n in enumerate(s.truth.test_names) if n.startswith("winobias/")]
    row = frame.set_index("testset").loc["winobias"]
    spread = stack.mean(0)[:, cols].std(axis=0, ddof=1).mean()
    sd = stack[:, :, cols].std(axis=0, ddof=1).mean()
    assert row["corpus_spread"] == pytest.approx(spread) and row["seed_sd"] == pytest.approx(sd)
    assert row["ratio"] == pytest.approx(spread / (sd / np.sqrt(3)))
    assert row["ratio_heldout"] == pytest.approx(spread / (sd / np.sqrt(2)))
    agree = np.mean([[np.corrcoef(stack[k][:, j], np.delete(stack, k, 0).mean(0)[:, j])[0, 1] for j in cols]
                     for k in range(3)])
    assert row["seed_agreement"] == pytest.approx(agree)
    assert np.isnan(ec.noise_floor(preset("corpora", "smoke", seeds=(0,)), progress=False)["ratio"]).all()
    with pytest.raises(ValueError, match="seeds"):
        preset("corpora", "smoke", seeds=(1, 1))


# ----------------------------------------------------------------------------------------------
# Notebook 02 at smoke scale
# ----------------------------------------------------------------------------------------------


def test_notebook_02_is_saved_without_outputs_and_tagged():
    import json

    nb = json.loads(NOTEBOOK.read_text())
    assert nb["cells"][0]["cell_type"] == "markdown"
    params = nb["cells"][1]
    assert params["cell_type"] == "code" and "parameters" in params["metadata"].get("tags", [])
    assert 'scale: str = "mini"' in "".join(params["source"]) and 'figures_dir: str = "../figures"' in "".join(params["source"])
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None


@needs_mirror
def test_blame_lists_the_training_passages_each_method_ranks_highest():
    from untrac import preset
    from untrac.experiments import corpora as ec

    s = ec.corpora_setting(preset("corpora", "smoke"), "equal", progress=False)
    subset = next(k for k in s.tests if k.startswith("toxigen/"))
    table = ec.blame(s, subset, 0, k=2)
    assert list(table.columns) == ["method", "rank", "corpus", "block", "score", "text"]
    assert list(table["method"]) == [m for m in ec.BLAME_METHODS for _ in range(2)]
    for method, rows in table.groupby("method", sort=False):
        assert rows["score"].is_monotonic_decreasing and rows["text"].str.len().min() > 0
        sample = s.sample(0)
        first = rows.iloc[0]
        assert s.tokenizer.decode(sample[first["corpus"]][int(first["block"])]["input_ids"]) == first["text"]
    with pytest.raises(ValueError, match="outside"):
        ec.blame(s, subset, 10_000)


def test_heldout_truth_ceiling_and_seed_noise_by_hand():
    """truth.heldout_truth / truth.ceiling / evaluate.seed_noise on three hand-made truths (no mirror)."""
    from untrac.evaluate import seed_noise
    from untrac.truth import CEILING, ceiling, heldout_truth, mean_truth

    a = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 5.0]])
    truths = {0: _influence(a, ["t/x", "t/y"], "t"), 1: _influence(a + 1.0, ["t/x", "t/y"], "t"),
              5: _influence(2 * a, ["t/x", "t/y"], "t")}
    np.testing.assert_allclose(heldout_truth(truths, 1).values, (a + 2 * a) / 2)
    np.testing.assert_array_equal(heldout_truth({0: truths[0]}, 0).values, a)
    assert ceiling({0: truths[0]}, 0) is None
    row = ceiling(truths, 5)
    assert row.method == CEILING and row is not truths[5] and truths[5].method == "t"
    np.testing.assert_array_equal(row.values, 2 * a)
    with pytest.raises(ValueError, match="different training or test sets"):
        mean_truth([truths[0], _influence(a[:, :1], ["t/x"], "t")])
    noise = seed_noise(list(truths.values()), columns=[1])  # the second test set only
    stack = np.stack([a, a + 1, 2 * a])[:, :, 1]  # [seeds, K]
    assert noise["spread"] == pytest.approx(stack.mean(0).std(ddof=1))
    assert noise["seed_sd"] == pytest.approx(stack.std(0, ddof=1).mean())
    assert noise["ratio"] == pytest.approx(noise["spread"] / (noise["seed_sd"] / np.sqrt(3)))
    agree = np.mean([np.corrcoef(stack[k], np.delete(stack, k, 0).mean(0))[0, 1] for k in range(3)])
    assert noise["agreement"] == pytest.approx(agree)
    var = stack.var(0, ddof=1).mean()  # the spread of a 3-seed mean carries var / 3 of seed noise
    want = np.sqrt(max(stack.mean(0).std(ddof=1) ** 2 - var / 3, 0.0))
    assert noise["spread_corrected"] == pytest.approx(want) and want < noise["spread"]
    assert noise["ratio_corrected"] == pytest.approx(want / (noise["seed_sd"] / np.sqrt(3)))
    assert noise["ratio_one_seed_corrected"] == pytest.approx(want / noise["seed_sd"])
    assert np.isnan(seed_noise([truths[0]])["ratio"]) and np.isnan(seed_noise([truths[0]])["ratio_corrected"])


@needs_mirror
def test_the_truths_sent_to_workers_are_the_truths_the_setting_uses(monkeypatch):
    import torch

    from untrac import preset
    from untrac.experiments import corpora as ec
    from untrac.truth import cached_ground_truth

    torch.set_num_threads(1)
    sent = []
    monkeypatch.setattr(ec, "prefetch", lambda calls, **kw: sent.extend(calls))
    ec._LOADED.clear()
    s = ec.corpora_setting(preset("corpora", "smoke", seeds=(0, 1)), "equal", progress=False)
    truths = [(args, kwargs) for fn, args, kwargs in sent if fn is cached_ground_truth]
    assert len(truths) == 2  # one per seed, none for models already cached
    for args, kwargs in truths:  # each is the entry the setting then used
        assert cached_ground_truth.is_cached(*args, **kwargs)
    np.testing.assert_array_equal(cached_ground_truth(*truths[1][0]).values, s.truths[1].values)
