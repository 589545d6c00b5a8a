"""Margins, unlearning algorithms, datamodels and the notebook-04 pipeline on tiny models."""
from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import untrac
from untrac import presets as P
from untrac.experiments import unlearning as E
from untrac.training import mixture
from untrac.unlearn import algorithms as A
from untrac.unlearn import datamodels as D
from untrac.unlearn import margins as M


class FixedLogits(nn.Module):
    """A 'decoder' whose logits are a fixed table [B, T, V] (a two-token vocabulary below)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(logits.double())
        self.config = SimpleNamespace(is_encoder_decoder=False)

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(logits=self.table)


def _batch(labels):
    labels = torch.tensor(labels)
    return {"input_ids": torch.zeros_like(labels), "attention_mask": torch.ones_like(labels), "labels": labels}


# ----------------------------------------------------------------------------- margins

def test_margin_of_a_two_token_answer_by_hand():
    # positions 1 and 2 predict the answer tokens 1 then 0 (labels are shifted by one)
    logits = torch.tensor([[[0.0, 0.0], [0.3, 1.2], [2.0, -1.0], [0.0, 0.0]]], dtype=torch.float64)
    model = FixedLogits(logits)
    lp, n = M.example_logprobs(model, _batch([[-100, -100, 1, 0]]))
    p1 = math.exp(1.2) / (math.exp(0.3) + math.exp(1.2))
    p2 = math.exp(2.0) / (math.exp(2.0) + math.exp(-1.0))
    p = p1 * p2
    assert n.item() == 2
    assert lp.item() == pytest.approx(math.log(p), rel=1e-12)
    assert M.sequence_margins(model, _batch([[-100, -100, 1, 0]])).item() == pytest.approx(math.log(p / (1 - p)), rel=1e-12)


def test_one_token_margin_is_the_classifier_margin():
    logits = torch.tensor([[[0.7, -2.5], [0.0, 0.0]], [[0.7, -2.5], [0.0, 0.0]]], dtype=torch.float64)  # position 0 predicts
    m = M.sequence_margins(FixedLogits(logits), _batch([[-100, 0], [-100, 1]]))
    np.testing.assert_allclose(m.detach().numpy(), [0.7 + 2.5, -2.5 - 0.7], rtol=1e-12)


def test_log1mexp_is_stable_at_both_ends():
    x = torch.tensor([-1e-20, -1e-8, -0.1, -math.log(2), -5.0, -50.0, -800.0], dtype=torch.float64, requires_grad=True)
    y = M.log1mexp(x)
    want = [math.log(1e-20), math.log(-math.expm1(-1e-8)), math.log(-math.expm1(-0.1)), math.log(0.5),
            math.log1p(-math.exp(-5.0)), -math.exp(-50.0), 0.0]
    np.testing.assert_allclose(y.detach().numpy(), want, rtol=1e-12, atol=1e-300)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    # a saturated answer (log p = 0) gets a finite margin, and margins are monotone in log p
    m = M.margin_from_logprob(torch.tensor([0.0, -1e-3, -1.0, -30.0], dtype=torch.float64))
    assert torch.isfinite(m).all() and m[0] == pytest.approx(-math.log(1e-15), rel=1e-6)
    assert (m[:-1] > m[1:]).all()
    with pytest.raises(ValueError):
        M.log1mexp(torch.tensor([0.5]))


@pytest.fixture
def setup(tiny):
    model, train_sets, test_sets, pad = tiny
    return model, train_sets, test_sets, pad


def test_logprobs_agree_with_example_losses_and_keep_order(setup):
    from untrac.data.batching import batches
    from untrac.models import example_losses

    model, train_sets, _, pad = setup
    ds = train_sets["train1"]
    lp, n = M.sequence_scores(model, ds, pad, batch_size=5)
    (b,) = batches(ds, len(ds), pad)
    with torch.no_grad():
        np.testing.assert_allclose(-lp / n, example_losses(model, b).numpy(), rtol=1e-10)
    rev = M.margins(model, ds.select(range(len(ds) - 1, -1, -1)), pad)
    np.testing.assert_allclose(rev[::-1], M.margins(model, ds, pad), rtol=1e-12)


# ----------------------------------------------------------------------------- algorithms

def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_unlearning_moves_the_forget_loss_and_never_touches_the_callers_model(setup):
    from untrac.data.batching import batches
    from untrac.models import dataset_loss

    model, train_sets, _, pad = setup
    before = _state(model)
    forget, retain = train_sets["train1"], mixture(train_sets, exclude="train1")
    fb, rb = batches(forget, 64, pad), batches(retain, 64, pad)
    cfg = A.DeletionConfig(lr=1e-3, batch_size=4)
    nothing = A.unlearn("do nothing", model, forget, retain, 5, pad, cfg)
    assert nothing is not model and dataset_loss(nothing, fb) == dataset_loss(model, fb)
    ga = A.unlearn("gradient ascent", model, forget, retain, 5, pad, cfg)
    assert dataset_loss(ga, fb) > dataset_loss(model, fb) + 0.05
    ad = A.unlearn("ascent+descent", model, forget, retain, 5, pad, cfg)
    assert dataset_loss(ad, fb) > dataset_loss(model, fb)
    assert dataset_loss(ad, rb) - dataset_loss(model, rb) < dataset_loss(ga, rb) - dataset_loss(model, rb)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_trajectory_equals_separate_runs(setup):
    model, train_sets, _, pad = setup
    forget, retain = train_sets["train2"], mixture(train_sets, exclude="train2")
    cfg = A.DeletionConfig(lr=1e-3, batch_size=4)
    traj = {s: M.margins(m, forget, pad) for s, m in A.unlearn_trajectory("ascent+descent", model, forget, retain, [3, 1], pad, cfg)}
    assert list(traj) == [1, 3]
    for s in (1, 3):
        np.testing.assert_allclose(traj[s], M.margins(A.unlearn("ascent+descent", model, forget, retain, s, pad, cfg), forget, pad))


def test_oracle_matching_with_enough_steps_reproduces_the_oracles_margins(setup):
    from untrac.training import TrainConfig, train

    model, train_sets, _, pad = setup
    # an 'oracle' that differs visibly from the model: the model trained on train3 alone
    oracle = train(model, {"train3": train_sets["train3"]}, TrainConfig(steps=20, batch_size=4, lr=3e-3), pad,
                   use_cache=False, progress=False).model
    forget, retain = train_sets["train1"], mixture(train_sets, exclude="train1")
    targets = A.oracle_targets(oracle, forget, retain, pad, retain_sample=4, seed=0)
    assert len(targets.examples) == len(forget) + 4
    start = np.abs(M.margins(model, targets.examples, pad) - targets.margins)
    assert start.mean() > 1.0
    cfg = A.DeletionConfig(lr=1e-2, batch_size=16, retain_sample=4)
    matched = A.unlearn("oracle matching", model, forget, retain, 150, pad, cfg, targets=targets)
    end = np.abs(M.margins(matched, targets.examples, pad) - targets.margins)
    assert end.max() < 0.1 and end.mean() < 0.02 * start.mean()


def test_matched_values_line_up_with_matched_examples(setup):
    model, train_sets, _, pad = setup
    names = list(train_sets)
    per_set = {n: M.margins(model, ds, pad) for n, ds in train_sets.items()}
    retain = mixture(train_sets, exclude="train2")
    idx = A.retain_sample_indices(len(retain), 5, seed=3)
    examples = A.matched_examples(train_sets["train2"], retain, idx)
    np.testing.assert_allclose(A.matched_values(per_set, "train2", idx, names), M.margins(model, examples, pad), rtol=1e-12)


def test_interface_errors_and_compute_fraction(setup):
    from untrac.training import TrainConfig

    model, train_sets, _, pad = setup
    forget = train_sets["train1"]
    with pytest.raises(ValueError, match="unknown algorithm"):
        A.unlearn("scrub", model, forget, None, 1, pad)
    with pytest.raises(ValueError, match="targets"):
        A.unlearn("oracle matching", model, forget, None, 1, pad)
    with pytest.raises(ValueError, match="retained"):
        A.unlearn("ascent+descent", model, forget, None, 1, pad)
    with pytest.raises(ValueError, match="target margins"):
        A.MatchTargets(forget, np.zeros(len(forget) + 1))
    tc = TrainConfig(steps=100, batch_size=8)
    assert A.compute_fraction("gradient ascent", 10, 4, tc) == pytest.approx(0.05)
    assert A.compute_fraction("ascent+descent", 10, 4, tc) == pytest.approx(0.10)
    assert A.compute_fraction("do nothing", 10, 4, tc) == 0.0


# ----------------------------------------------------------------------------- datamodels

def test_linear_datamodel_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    names = ["a", "b", "c", "d"]
    subsets = [s for s in D.subsets_of_sizes(names, [1, 2, 3, 4])] * 3
    X = D.indicators(names, subsets)
    intercept, coef = rng.normal(size=30), rng.normal(size=(30, 4))
    exact = intercept + X @ coef.T  # [models, examples]
    dm = D.fit_datamodel(names, subsets, exact)
    np.testing.assert_allclose(dm.intercept, intercept, atol=1e-10)
    np.testing.assert_allclose(dm.coef, coef, atol=1e-10)
    np.testing.assert_allclose(dm.predict(["a", "c"]), intercept + coef[:, 0] + coef[:, 2], atol=1e-10)
    noisy = D.fit_datamodel(names, subsets, exact + 0.01 * rng.normal(size=exact.shape))
    np.testing.assert_allclose(noisy.coef, coef, atol=0.03)
    assert noisy.residual_std.mean() == pytest.approx(0.01, rel=0.3)
    # DMM targets: a full-data model's outputs minus the forget set's coefficient
    np.testing.assert_allclose(dm.removal_targets(dm.predict(names), "b"), dm.predict(["a", "c", "d"]), atol=1e-10)
    assert dm.subset([0, 5]).coef.shape == (2, 4)


def test_datamodel_design_must_identify_the_coefficients():
    names = ["a", "b", "c", "d"]
    pairs = D.subsets_of_sizes(names, [2])  # indicator sums are always 2: collinear with the intercept
    y = np.zeros((len(pairs), 3))
    with pytest.raises(ValueError, match="rank"):
        D.fit_datamodel(names, pairs, y)
    assert D.fit_datamodel(names, pairs + [tuple(names)], np.zeros((7, 3))).coef.shape == (3, 4)
    assert np.isfinite(D.fit_datamodel(names, pairs, y, ridge=1e-3).coef).all()
    with pytest.raises(ValueError, match="unknown training set"):
        D.indicators(names, [("e",)])


# ----------------------------------------------------------------------------- pipeline

def test_presets():
    p = untrac.preset("unlearning", "smoke", seeds=[0, 1, 2], config__lr=0.5, bins=None)
    assert p.seeds == (0, 1, 2) and p.config.lr == 0.5 and p.bins == P.UNLEARNING["smoke"].bins
    assert P.UNLEARNING["mini"].synthetic == untrac.preset("synthetic", "mini")
    labels = {label: (a, c.lr) for label, a, c in P.UNLEARNING["mini"].variants()}
    assert labels["oracle matching"] == ("oracle matching", 1e-3)
    assert labels["gradient ascent (lr 5e-05)"] == ("gradient ascent", 5e-5)
    with pytest.raises(ValueError, match="unknown algorithm"):
        P.UNLEARNING["mini"].variants(["scrub"])
    with pytest.raises(ValueError):
        untrac.preset("unlearning", "huge")
    with pytest.raises(ValueError):
        untrac.preset("unlearning", "smoke", nonsense=1)
    with pytest.raises(ValueError, match="DeletionConfig.lr"):
        untrac.preset("unlearning", "smoke", config__lr=-1.0)


@pytest.mark.parametrize("bad, field", [
    ({"lr": 0.0}, "lr"), ({"lr": float("nan")}, "lr"), ({"lr": float("inf")}, "lr"),
    ({"batch_size": 0}, "batch_size"), ({"batch_size": -1}, "batch_size"), ({"batch_size": 2.5}, "batch_size"),
    ({"batch_size": True}, "batch_size"), ({"clip": 0.0}, "clip"), ({"clip": -1.0}, "clip"),
    ({"retain_sample": -1}, "retain_sample"), ({"retain_sample": 1.5}, "retain_sample"),
    ({"optimizer": "lion"}, "optimizer"),
])
def test_deletion_config_rejects_bad_settings(bad, field):
    with pytest.raises(ValueError, match=f"DeletionConfig.{field}"):
        A.DeletionConfig(**bad)
    assert A.DeletionConfig(clip=None, retain_sample=0, batch_size=np.int64(3)).batch_size == 3


def test_pipeline_on_a_tiny_population(setup):
    from untrac.unlearn import klom
    from untrac.training import TrainConfig

    model, train_sets, test_sets, pad = setup
    syn = dataclasses.replace(P.UNLEARNING["smoke"].synthetic, train=TrainConfig(steps=2, batch_size=4, lr=1e-3))
    preset = dataclasses.replace(P.UNLEARNING["smoke"], synthetic=syn, seeds=(0, 1), budgets=(1, 2), report_steps=2,
                                 eval_per_set=6, config=A.DeletionConfig(lr=1e-3, batch_size=4, retain_sample=3),
                                 lrs={"gradient ascent": (1e-3, 1e-4)})
    pop = E.build_population(preset, "A", model, train_sets, test_sets, pad, progress=False)
    assert len(pop.subset_models) == 6 and all(len(s) == 2 for s, _ in pop.subset_models)
    assert {k: len(v) for k, v in pop.eval_index.items()} == {"train1": 6, "train2": 6, "train3": 6, "train4": 6, "test": 6}
    dm = E.fit_population_datamodel(pop)
    assert dm.coef.shape == (5 * 12, 4)
    runs = E.unlearning_runs(pop, dm, progress=False)
    assert len(runs.scores) == 5 * 4 * 2 and set(runs.scores[("oracle matching", "train1", 0)]) == {1, 2}
    assert runs.algorithms["gradient ascent (lr 0.0001)"] == "gradient ascent"
    frame = E.klom_frame(pop, runs)
    assert len(frame) == 4 * (2 + 5 * 2) * 3
    # "do nothing" is KLoM of the originals against the oracles
    row = frame[(frame.algorithm == "do nothing") & (frame.forget == "train2") & (frame.group == "forget")].iloc[0]
    orig = np.stack([pop.margins(pop.originals[s])["train2"] for s in (0, 1)])
    orac = np.stack([pop.margins(pop.oracles[s]["train2"])["train2"] for s in (0, 1)])
    assert row.p50 == pytest.approx(np.percentile(klom.klom(orig, orac, preset.bins), 50))
    assert row.n == 6
    ga = frame[(frame.algorithm == "gradient ascent (lr 0.001)") & (frame.steps == 2)]
    np.testing.assert_allclose(ga.fraction, 2 * 4 / 8)
    table = E.klom_table(frame, steps=2)
    assert len(table) == 4 * 7 and "forget_p99" in table.columns and "validation_p50" in table.columns
    assert list(table[table.forget == "train1"].algorithm)[:2] == ["do nothing", "DM-Direct"]
    comp = E.untrac_comparison(pop, runs)
    assert set(comp.method) == {f"UnTrac ({a})" for a in runs.algorithms} | {"ground truth (other seed)"}
    quality = E.datamodel_quality(pop, dm)
    assert len(quality) == 4 * 3 and quality.mae.notna().all()
    assert set(E.klom_noise_floor(preset)) == {"p50", "p95", "p99"}
    # everything is cached: a second pass recomputes nothing and returns the same numbers
    again = E.unlearning_runs(pop, dm, progress=False)
    label = "gradient ascent (lr 0.001)"
    np.testing.assert_array_equal(again.scores[(label, "train3", 1)][2]["test"], runs.scores[(label, "train3", 1)][2]["test"])
