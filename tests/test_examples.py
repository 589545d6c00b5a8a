"""Per-example attribution (``Influence.example_values``, ``top_examples``) on tiny float64 models:
exact per-example gradient scores, UnTrac-Inv's per-example loss changes adding up to the set-level
value, agreement with exact leave-one-example-out retraining, and the ranked texts."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from datasets import Dataset, concatenate_datasets

from conftest import needs_mirror


def _example_gradient(model, dataset, i, pad):
    """Gradient of example ``i``'s loss, alone in its batch, by torch.autograd.grad (not the package's helpers)."""
    from untrac.data.batching import batches
    from untrac.models import example_losses

    (batch,) = batches(dataset.select([i]), 1, pad)
    (loss,) = example_losses(model, batch)
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()))])


def _set_gradient(model, dataset, pad):
    """Gradient of the mean per-example loss over the whole set, in one batch."""
    from untrac.data.batching import batches
    from untrac.models import example_losses

    (batch,) = batches(dataset, len(dataset), pad)
    return torch.cat([g.flatten() for g in torch.autograd.grad(example_losses(model, batch).mean(), list(model.parameters()))])


def _spearman(a, b) -> float:
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731  (no ties among these float64 scores)
    return float(np.corrcoef(rank(a), rank(b))[0, 1])


# ----------------------------------------------------------------------------- exact per-example scores

@needs_mirror
def test_per_example_gradient_scores_are_the_single_example_gradients(tiny):
    from untrac import attribute

    model, train_sets, test_sets, pad = tiny
    g_test = _set_gradient(model, test_sets["test"], pad)
    dot = attribute("GradDot", model, train_sets, test_sets, pad, per_example=True, progress=False)
    cos = attribute("GradCos", model, train_sets, test_sets, pad, per_example=True, progress=False)
    for name, i in (("train1", 0), ("train3", 7), ("train4", 11)):
        g = _example_gradient(model, train_sets[name], i, pad)
        assert dot.example_values[name][i, 0] == pytest.approx(torch.dot(g, g_test).item(), rel=1e-9)
        cosine = torch.dot(g, g_test) / (g.norm() * g_test.norm())
        assert cos.example_values[name][i, 0] == pytest.approx(cosine.item(), rel=1e-9)
    # the set's loss is the mean of its examples' losses, so its GradDot is the mean of theirs
    means = np.array([v.mean(axis=0) for v in dot.example_values.values()])
    np.testing.assert_allclose(means, dot.values, rtol=1e-10)
    # asking for the examples leaves the set-level values bit-identical
    for result in (dot, cos):
        plain = attribute(result.method, model, train_sets, test_sets, pad, progress=False)
        assert np.array_equal(plain.values, result.values) and plain.example_values is None
    assert {k: v.shape for k, v in dot.example_values.items()} == {k: (len(ds), 1) for k, ds in train_sets.items()}


@needs_mirror
def test_per_example_tracin_sums_cosines_over_checkpoints(tiny):
    from untrac import attribute

    model, train_sets, test_sets, pad = tiny
    torch.manual_seed(1)
    moved = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    checkpoints = [model.state_dict(), moved]
    got = attribute("TracIn", model, train_sets, test_sets, pad, checkpoints=checkpoints, per_example=True,
                    learning_rates=(1.0, 0.5), progress=False)
    work = type(model)(model.config).double()
    expected = 0.0
    for eta, state in zip((1.0, 0.5), checkpoints):
        work.load_state_dict(state)
        g, g_test = _example_gradient(work, train_sets["train2"], 3, pad), _set_gradient(work, test_sets["test"], pad)
        expected += eta * (torch.dot(g, g_test) / (g.norm() * g_test.norm())).item()
    assert got.example_values["train2"][3, 0] == pytest.approx(expected, rel=1e-9)
    plain = attribute("TracIn", model, train_sets, test_sets, pad, checkpoints=checkpoints, learning_rates=(1.0, 0.5),
                      progress=False)
    assert np.array_equal(plain.values, got.values)


@needs_mirror
def test_untrac_inv_example_changes_average_to_the_set_value(tiny):
    from untrac import UnlearnConfig, attribute

    model, train_sets, test_sets, pad = tiny
    config = UnlearnConfig(lr=1e-3, batch_size=None, steps=3, eval_batch_size=5)  # several length buckets per set
    plain = attribute("UnTrac-Inv", model, train_sets, test_sets, pad, config=config, progress=False)
    got = attribute("UnTrac-Inv", model, train_sets, test_sets, pad, config=config, per_example=True, progress=False)
    assert np.array_equal(plain.values, got.values) and np.array_equal(plain.trajectory, got.trajectory)
    means = np.array([v.mean(axis=0) for v in got.example_values.values()])
    np.testing.assert_allclose(means, got.values, rtol=0, atol=1e-10)
    assert np.ptp(got.example_values["train1"]) > 1e-3  # examples differ: not the set value repeated


@needs_mirror
def test_untrac_inv_example_changes_follow_each_examples_gradient(tiny):
    """One full-batch SGD step of size lr on the test loss changes example i's loss by lr <g_i, g_test>
    to first order (Eq. 9 per example): checks that each score lands on its own example, not a
    length-sorted neighbour."""
    from untrac import UnlearnConfig, attribute

    model, train_sets, test_sets, pad = tiny
    lr = 1e-5
    inv = attribute("UnTrac-Inv", model, train_sets, test_sets, pad, progress=False,
                    config=UnlearnConfig(optimizer="sgd", lr=lr, batch_size=None, steps=1, per_example=True))
    dot = attribute("GradDot", model, train_sets, test_sets, pad, per_example=True, progress=False)
    for name in train_sets:
        np.testing.assert_allclose(inv.example_values[name], lr * dot.example_values[name], rtol=1e-3, atol=1e-12)


# ----------------------------------------------------------------------------- against leave-one-out retraining

@needs_mirror
def test_per_example_scores_rank_examples_like_leave_one_out_retraining(tiny):
    """12 training examples (3 from each set), 10 full-batch SGD steps at lr 0.05 from the tiny
    model (test loss 5.77 -> 5.10); each example's exact effect is the test-loss change of retraining
    without it (same steps, same seed). Measured rank correlations with it: GradDot 0.73, TracIn
    0.87, UnTrac-Inv 0.76 (TracIn with dot products 0.92; GradCos 0.62). Under independence a
    Spearman correlation of 12 items exceeds 0.5 with probability below 5%; the example whose removal
    hurts most must also score in the top half."""
    from untrac import TrainConfig, UnlearnConfig, attribute, train
    from untrac.data.batching import batches
    from untrac.models import dataset_loss

    init, train_sets, test_sets, pad = tiny
    pool = concatenate_datasets([ds.select(range(3)) for ds in train_sets.values()])
    n, lr = len(pool), 0.05
    config = TrainConfig(steps=10, batch_size=n, lr=lr, optimizer="sgd", clip=None, checkpoint_every=1)
    test = batches(test_sets["test"], 64, pad)
    base = train(init, {"pool": pool}, config, pad, progress=False)  # cached in the test's own cache: checkpoints
    loss = dataset_loss(base.model, test)
    assert loss < dataset_loss(init, test) - 0.5  # it learns
    loo = np.array([dataset_loss(train(init, {"pool": pool.select([j for j in range(n) if j != i])}, config, pad,
                                       use_cache=False, progress=False).model, test) - loss for i in range(n)])
    checkpoints = [init.state_dict()] + base.checkpoint_states()[:-1]  # the weights each step's gradient was taken at
    scores = {
        "GradDot": attribute("GradDot", base.model, {"pool": pool}, test_sets, pad, per_example=True, progress=False),
        "TracIn": attribute("TracIn", base.model, {"pool": pool}, test_sets, pad, checkpoints=checkpoints,
                            per_example=True, progress=False),
        "UnTrac-Inv": attribute("UnTrac-Inv", base.model, {"pool": pool}, test_sets, pad, progress=False,
                                config=UnlearnConfig(optimizer="sgd", lr=lr, batch_size=None, steps=1, per_example=True)),
    }
    worst = int(np.argmax(loo))
    for name, result in scores.items():
        v = result.example_values["pool"][:, 0]
        assert _spearman(v, loo) > 0.5, (name, _spearman(v, loo), v, loo)
        assert v[worst] > np.median(v), (name, worst, v)


# ----------------------------------------------------------------------------- ranking and texts

def _toy_result():
    from untrac.methods import Influence

    examples = {"a": np.array([[0.1, 5.0], [0.9, 0.0], [0.3, 1.0]]), "b": np.array([[0.5, 2.0], [0.9, 3.0]])}
    values = np.array([v.mean(axis=0) for v in examples.values()])
    return Influence("GradDot", ["a", "b"], ["t1", "t2"], values, example_values=examples)


def test_top_examples_ranks_and_returns_the_texts():
    result = _toy_result()
    raw = {"a": Dataset.from_dict({"prompt": ["A0?", "A1?", "A2?"], "target": [" x", " y", " z"], "subset": ["a"] * 3}),
           "b": Dataset.from_dict({"text": ["B0 text", "B1 text"]})}
    top = result.top_examples("t1", k=3, train_sets=raw)
    assert list(top.columns) == ["train", "index", "score", "text"]
    assert list(zip(top["train"], top["index"])) == [("a", 1), ("b", 1), ("b", 0)]  # tie: set order first
    assert list(top["score"]) == [0.9, 0.9, 0.5] and list(top["text"]) == ["A1? y", "B1 text", "B0 text"]
    everything = result.top_examples("t2", k=99)
    assert list(zip(everything["train"], everything["index"])) == [("a", 0), ("b", 1), ("b", 0), ("a", 2), ("a", 1)]
    assert "text" not in everything.columns
    frame = result.example_frame()
    assert len(frame) == 10 and list(frame.columns) == ["method", "train", "index", "test", "influence"]
    assert frame.query("train == 'b' and index == 1 and test == 't2'")["influence"].item() == 3.0
    with pytest.raises(ValueError, match="unknown test set 't3'"):
        result.top_examples("t3")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        result.top_examples("t1", k=0)
    with pytest.raises(ValueError, match=r"train_sets\['a'\] has 2 examples, but the result scored 3"):
        result.top_examples("t2", train_sets={"a": raw["a"].select([0, 1]), "b": raw["b"]})


def test_top_examples_decodes_token_ids_with_a_tokenizer(tokenizer):
    from untrac.data.batching import encode

    result = _toy_result()
    raw = {"a": Dataset.from_dict({"prompt": ["the length of", "one two", "zero"], "target": [" 4", " three", " 0"]}),
           "b": Dataset.from_dict({"prompt": ["words", "numerical form"], "target": [" one", " 5"]})}
    encoded = {k: encode(v, tokenizer) for k, v in raw.items()}
    with pytest.raises(ValueError, match=r"no text column .*pass tokenizer="):
        result.top_examples("t1", 2, encoded)
    top = result.top_examples("t1", 2, encoded, tokenizer=tokenizer)
    assert [t.replace(" ", "") for t in top["text"]] == ["onetwothree", "numericalform5"]


@needs_mirror
def test_top_examples_of_a_run_names_its_best_scored_example(tiny, synthetic_raw):
    from untrac import attribute

    model, train_sets, test_sets, pad = tiny
    result = attribute("GradDot", model, train_sets, test_sets, pad, per_example=True, progress=False)
    best_set = max(result.example_values, key=lambda k: result.example_values[k][:, 0].max())
    best = int(np.argmax(result.example_values[best_set][:, 0]))
    top = result.top_examples("test", 1, synthetic_raw)
    row = synthetic_raw[best_set][best]
    assert (top["train"][0], top["index"][0], top["text"][0]) == (best_set, best, row["prompt"] + row["target"])


# ----------------------------------------------------------------------------- what has no per-example scores

@needs_mirror
def test_untrac_has_no_per_example_scores_and_says_who_has(tiny):
    from untrac import UnlearnConfig, attribute

    model, train_sets, test_sets, pad = tiny
    config = UnlearnConfig(lr=1e-3, batch_size=4, epochs=1)
    with pytest.raises(ValueError, match="UnTrac gives no per-example scores.*one unlearning run per example"):
        attribute("UnTrac", model, train_sets, test_sets, pad, config=config, per_example=True, progress=False)
    result = attribute("UnTrac", model, train_sets, test_sets, pad, config=config, progress=False)
    with pytest.raises(ValueError, match="UnTrac gives no per-example scores.*UnTrac-Inv, GradDot, GradCos, TracIn"):
        result.top_examples("test")
    plain = attribute("GradDot", model, train_sets, test_sets, pad, progress=False)
    with pytest.raises(ValueError, match="run it with per_example=True"):
        plain.example_frame()
    with pytest.raises(ValueError, match="per_example must be True or False"):
        UnlearnConfig(per_example=1)


def test_per_example_scores_survive_the_cache_and_at_step(tmp_path):
    import dataclasses

    from untrac import codec

    result = dataclasses.replace(_toy_result(), steps=[0, 2], trajectory=np.stack([np.zeros((2, 2)), _toy_result().values]))
    codec.write(result, tmp_path)
    back = codec.read(tmp_path)
    assert list(back.example_values) == ["a", "b"]
    assert all(np.array_equal(back.example_values[k], v) for k, v in result.example_values.items())
    assert result.at_step(-1).example_values["b"][1, 1] == 3.0  # the per-example scores are the last step's
    assert result.at_step(1).example_values is not None and result.at_step(0).example_values is None
    with pytest.raises(ValueError, match=r"example_values\['b'\] has shape"):
        dataclasses.replace(result, example_values={"a": np.zeros((3, 2)), "b": np.zeros(2)})


def test_spearman_chance_is_the_5_percent_level_of_independent_rankings():
    from untrac.experiments.examples import spearman_chance

    rng = np.random.default_rng(0)
    null = [_spearman(rng.permutation(24), np.arange(24)) for _ in range(20_000)]
    assert abs(np.quantile(null, 0.95) - spearman_chance(24)) < 0.02
    assert abs(spearman_chance(12) - 0.497) < 0.01


@needs_mirror
def test_the_example_check_is_the_same_in_worker_processes_and_cached(monkeypatch, tmp_path):
    """Notebook 02's leave-one-block-out check: its retrainings run in worker processes with the numbers
    of a sequential run (float64, one thread each), and the whole check is cached."""
    from untrac import preset, training
    from untrac.experiments import corpora as ec, examples as ex

    torch.set_num_threads(1)
    setting = ec.corpora_setting(preset("corpora", "smoke", seeds=(0,), runs=1), "equal", progress=False)
    checked, effects = ex.leave_one_block_out(setting, per_corpus=1, steps=3, methods=("GradDot",))
    assert len(effects) == 8 and len(checked) == len(setting.tests) and np.abs(effects.iloc[:, 2:].to_numpy()).max() > 0
    monkeypatch.setenv("UNTRAC_CACHE", str(tmp_path / "parallel"))
    monkeypatch.setenv("UNTRAC_WORKERS", "2")
    _, again = ex.leave_one_block_out(setting, per_corpus=1, steps=3, methods=("GradDot",))
    pd.testing.assert_frame_equal(again, effects, check_exact=True)
    monkeypatch.setattr(training, "batch_loss", lambda *a: pytest.fail("the cached check trained again"))
    pd.testing.assert_frame_equal(ex.leave_one_block_out(setting, per_corpus=1, steps=3, methods=("GradDot",))[0], checked)
