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


def test_token_logprobs_by_hand_and_their_flat_layout():
    # example 0: positions 1, 2 predict tokens 1, 0; example 1: position 0 predicts token 1 (one target token)
    logits = torch.tensor([[[0.0, 0.0], [0.3, 1.2], [2.0, -1.0], [0.0, 0.0]],
                           [[0.5, -0.5], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    model = FixedLogits(logits)
    token_lp, keep = M.token_logprobs(model, _batch([[-100, -100, 1, 0], [-100, 1, -100, -100]]))
    def lsm(a, b):
        return a - math.log(math.exp(a) + math.exp(b))
    want = [lsm(1.2, 0.3), lsm(2.0, -1.0), lsm(-0.5, 0.5)]
    np.testing.assert_allclose(token_lp[keep].detach().numpy(), want, rtol=1e-12)
    assert keep.sum(1).tolist() == [2, 1] and (token_lp[~keep] == 0).all()
    lp, n = M.example_logprobs(model, _batch([[-100, -100, 1, 0], [-100, 1, -100, -100]]))
    np.testing.assert_allclose(lp.detach().numpy(), [want[0] + want[1], want[2]], rtol=1e-12)
    parts = M.split_tokens(np.array(want), np.array([2, 1]))
    assert [len(p) for p in parts] == [2, 1] and parts[1][0] == want[2]
    with pytest.raises(ValueError, match="counts add up"):
        M.split_tokens(np.array(want), np.array([2, 2]))


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
    flat, counts = M.token_scores(model, ds, pad, batch_size=3)  # token log-probs add up to the sequence's
    np.testing.assert_array_equal(counts, n)
    np.testing.assert_allclose([p.sum() for p in M.split_tokens(flat, counts)], lp, rtol=1e-10)


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


def test_oracle_matching_with_enough_steps_reproduces_the_oracles_token_logprobs(setup):
    from untrac.training import TrainConfig, train

    model, train_sets, _, pad = setup
    # an 'oracle' that differs visibly from the model: the model trained on train3 alone
    oracle = train(model, {"train3": train_sets["train3"]}, TrainConfig(steps=20, batch_size=4, lr=3e-3), pad,
                   use_cache=False, progress=False).model
    forget, retain = train_sets["train1"], mixture(train_sets, exclude="train1")
    targets = A.oracle_targets(oracle, forget, retain, pad, retain_sample=4, seed=0)
    assert len(targets.examples) == len(forget) + 4
    want = targets.flat()  # the oracle's own token log-probabilities, computed independently here
    np.testing.assert_allclose(want, M.token_scores(oracle, targets.examples, pad)[0], rtol=1e-12)
    start = np.abs(M.token_scores(model, targets.examples, pad)[0] - want)
    assert start.mean() > 0.3
    cfg = A.DeletionConfig(lr=1e-2, batch_size=16, retain_sample=4)
    matched = A.unlearn("oracle matching", model, forget, retain, 150, pad, cfg, targets=targets)
    end = np.abs(M.token_scores(matched, targets.examples, pad)[0] - want)
    assert end.max() < 0.1 and end.mean() < 0.02 * start.mean()
    # and hence its margins too (what KLoM scores)
    np.testing.assert_allclose(M.margins(matched, targets.examples, pad), M.margins(oracle, targets.examples, pad),
                               atol=0.5)


def test_matching_objective_is_the_mean_squared_token_error(setup):
    """One SGD step of Oracle Matching moves the weights by -lr x the gradient of the mean squared
    error of the token log-probabilities, computed here from scratch."""
    model, train_sets, _, pad = setup
    forget, retain = train_sets["train1"], mixture(train_sets, exclude="train1")
    examples = A.matched_examples(forget, retain, [])
    flat, counts = M.token_scores(model, examples, pad)
    rng = np.random.default_rng(0)
    targets = A.MatchTargets(examples, M.split_tokens(flat + rng.normal(0, 0.5, len(flat)), counts))
    cfg = A.DeletionConfig(optimizer="sgd", lr=0.1, batch_size=len(examples), retain_sample=0)
    stepped = A.unlearn("oracle matching", model, forget, retain, 1, pad, cfg, targets=targets)
    from untrac.data.batching import batches

    work = __import__("copy").deepcopy(model)
    (b,) = batches(examples, len(examples), pad)
    token_lp, keep = M.token_logprobs(work, b)
    loss = (token_lp[keep] - torch.as_tensor(targets.flat())).pow(2).mean()
    grads = torch.autograd.grad(loss, [p for p in work.parameters()], allow_unused=True)
    for (name, p), g, q in zip(work.named_parameters(), grads, stepped.parameters()):
        want = p.detach() - 0.1 * (g if g is not None else 0)
        torch.testing.assert_close(q.detach(), want.to(q.dtype), rtol=1e-5, atol=1e-7, msg=name)


def test_matched_values_line_up_with_matched_examples(setup):
    model, train_sets, _, pad = setup
    names = list(train_sets)
    per_set = {n: M.margins(model, ds, pad) for n, ds in train_sets.items()}
    retain = mixture(train_sets, exclude="train2")
    idx = A.retain_sample_indices(len(retain), 5, seed=3)
    examples = A.matched_examples(train_sets["train2"], retain, idx)
    np.testing.assert_allclose(A.matched_values(per_set, "train2", idx, names), M.margins(model, examples, pad), rtol=1e-12)
    tokens = {n: M.split_tokens(*M.token_scores(model, ds, pad)) for n, ds in train_sets.items()}  # ragged, per example
    got = np.concatenate(list(A.matched_values(tokens, "train2", idx, names)))
    np.testing.assert_allclose(got, M.token_scores(model, examples, pad)[0], rtol=1e-12)


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
    with pytest.raises(ValueError, match="target tokens of"):
        A.MatchTargets(forget, [np.zeros(2)] * (len(forget) + 1))
    with pytest.raises(ValueError, match="non-empty 1-d"):
        A.MatchTargets(forget, [np.zeros(0)] * len(forget))
    with pytest.raises(ValueError, match="computed on other examples"):  # one token too many per example
        flat, counts = M.token_scores(model, forget, pad)
        A.unlearn("oracle matching", model, forget, None, 1, pad, A.DeletionConfig(retain_sample=0),
                  targets=A.MatchTargets(forget, [np.zeros(c + 1) for c in counts]))
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
    # notebook 01's mini preset, except the 8-epoch fine-tuning notebook 04's budgets were fixed against
    syn = untrac.preset("synthetic", "mini")
    assert P.UNLEARNING["mini"].synthetic == untrac.presets.override(syn, {"train__steps": 512, "train__checkpoint_every": 128})
    assert P.UNLEARNING["smoke"].synthetic == untrac.preset("synthetic", "smoke")
    labels = {label: (a, c.lr) for label, a, c in P.UNLEARNING["mini"].variants()}
    # the matching rule: the models' own fine-tuning learning rate, for both matching methods
    fine_tuning_lr = P.UNLEARNING["mini"].synthetic.train.lr
    assert labels["oracle matching"] == ("oracle matching", fine_tuning_lr)
    assert labels["datamodel matching"] == ("datamodel matching", fine_tuning_lr)
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


def test_pipeline_on_a_tiny_population(setup, monkeypatch, tmp_path):
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
    token_dm = E.fit_population_datamodel(pop, tokens=True)
    n_tokens = sum(int(pop.scores[pop.originals[0].key][n][1].sum()) for n in pop.sets)
    assert token_dm.coef.shape == (n_tokens, 4) and n_tokens > 5 * 12
    # Datamodel Matching's targets: the original's token log-probs minus the forget set's token coefficients
    toks = pop.tokens(pop.originals[0])
    assert [len(t) for t in toks["train1"]] == list(pop.scores[pop.originals[0].key]["train1"][1])
    # least squares is linear in the outputs: an example's token coefficients add up to the coefficients of a
    # datamodel of its whole log p(y|x), fitted independently here
    models = [(tuple(pop.train_names), t) for t in pop.originals.values()] + list(pop.subset_models)
    seq = D.fit_datamodel(pop.train_names, [s for s, _ in models],
                          np.stack([np.concatenate([pop.scores[t.key][n][0] for n in pop.sets]) for _, t in models]))
    counts = np.concatenate([pop.scores[pop.originals[0].key][n][1] for n in pop.sets])
    summed = np.add.reduceat(token_dm.coef, np.concatenate([[0], np.cumsum(counts)[:-1]]), axis=0)
    np.testing.assert_allclose(summed, seq.coef, rtol=1e-8, atol=1e-10)
    runs = E.unlearning_runs(pop, dm, progress=False)
    # from an empty cache the runs go to worker processes (here none may run in this one) with the same numbers
    from untrac import parallel

    with monkeypatch.context() as m:
        m.setenv("UNTRAC_CACHE", str(tmp_path / "parallel"))  # before the pool: its workers take the environment
        m.setattr(E, "unlearn_trajectory", lambda *a, **k: pytest.fail("an unlearning run ran in this process"))
        with parallel.local_pool(2) as pool:
            par = E.unlearning_runs(pop, dm, progress=False, executor=pool)
    assert par.scores.keys() == runs.scores.keys()
    for job, per_budget in runs.scores.items():
        for steps, per_set in per_budget.items():
            for n, values in per_set.items():
                np.testing.assert_array_equal(par.scores[job][steps][n], values)
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
    verdicts = E.klom_verdicts(pop, runs, n_boot=200)
    baselines = ["gradient ascent (lr 0.001)", "gradient ascent (lr 0.0001)", "ascent+descent"]
    assert len(verdicts) == 3 * (2 * 4 + 3)  # groups x (2 matching x (nothing + 3 variants) + 3 variants vs nothing)
    assert set(verdicts.verdict) <= {"holds", "fails", "inconclusive"}
    # the claimed advantage by hand: mean over forget sets and examples of KLoM(do nothing) - KLoM(matching)
    row = verdicts[(verdicts.method == "datamodel matching") & (verdicts.comparator == "do nothing")
                   & (verdicts.group == "retain")].iloc[0]
    def mean_klom(label, steps):
        return np.mean([v for k in pop.train_names for v in klom.klom(*[
            pop.groups({n: np.stack(m) for n, m in zip(pop.sets, zip(*[[d[n] for n in pop.sets] for d in per]))}, k)["retain"]
            for per in (E._unlearned_margins(pop, runs, k, label, steps),
                        [pop.margins(pop.oracles[s][k]) for s in (0, 1)])], preset.bins, preset.floor)])
    assert row.difference == pytest.approx(mean_klom("do nothing", 0) - mean_klom("datamodel matching", 2))
    assert row.ci_low <= row.difference <= row.ci_high
    worse = verdicts[verdicts.claim == E.KLOM_CLAIMS[1]]
    assert set(worse.comparator) == {"do nothing"} and set(worse.method) == set(baselines)
    quality = E.datamodel_quality(pop, dm)
    assert len(quality) == 4 * 3 and quality.mae.notna().all()
    assert set(E.klom_noise_floor(preset)) == {"p50", "p95", "p99"}
    # everything is cached: a second pass recomputes nothing and returns the same numbers
    again = E.unlearning_runs(pop, dm, progress=False)
    label = "gradient ascent (lr 0.001)"
    np.testing.assert_array_equal(again.scores[(label, "train3", 1)][2]["test"], runs.scores[(label, "train3", 1)][2]["test"])
