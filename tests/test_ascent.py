"""The one unlearning step loop (untrac.ascent), UnlearnConfig's checks and the batch-size checks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from torch import nn

from untrac import ascent


def _quadratic(start: float = 3.0, n: int = 4):
    """A parameter vector and the objective ||w||^2 / 2, counting its calls."""
    model = nn.Linear(n, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(start)
    calls = []

    def objective() -> torch.Tensor:
        calls.append(model.training)
        return 0.5 * model.weight.pow(2).sum()

    return model, objective, calls


def test_loop_steps_pauses_and_modes():
    model, objective, calls = _quadratic()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    seen = []
    for step in ascent.loop(model, opt, objective, 5, at=[4, 0, 2, 2]):
        seen.append((step, model.training, model.weight[0, 0].item()))
    # each SGD step halves w (gradient w, lr 0.5); pauses in order, once each, in eval mode
    assert seen == [(0, False, 3.0), (2, False, 0.75), (4, False, 0.1875)]
    assert calls == [True] * 5  # the objective runs 5 times, in training mode
    assert not model.training and model.weight[0, 0].item() == pytest.approx(3.0 / 32)
    with pytest.raises(ValueError, match="pause steps"):
        list(ascent.loop(model, opt, objective, 3, at=[4]))


def test_loop_clips_the_gradient_norm():
    model, objective, _ = _quadratic(start=3.0, n=4)  # gradient norm 6
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    list(ascent.loop(model, opt, objective, 1, clip=0.5))
    np.testing.assert_allclose(model.weight.detach().numpy(), 3.0 - 0.25, rtol=1e-6)  # step of norm 0.5


def test_loop_reports_divergence_at_the_next_pause():
    model, _, _ = _quadratic()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = iter([1.0, float("nan"), 1.0, 1.0])

    def objective() -> torch.Tensor:
        return model.weight.sum() * 0 + next(losses)

    run = ascent.loop(model, opt, objective, 4, at=[1, 3], label="unlearning 'z'")
    assert next(run) == 1
    with pytest.raises(ascent.UnlearningDiverged, match=r"unlearning 'z'.*by step 3.*lower the learning rate"):
        next(run)
    # no pause after the divergence: the end of the run checks too
    losses = iter([float("inf")])
    with pytest.raises(ascent.UnlearningDiverged, match="by step 1"):
        list(ascent.loop(model, opt, lambda: model.weight.sum() * 0 + next(losses), 1))


def test_ascent_objective_is_minus_the_mean_loss(tiny):
    from untrac.data.batching import batches
    from untrac.models import example_losses

    model, train_sets, _, pad = tiny
    b = batches(train_sets["train1"], 4, pad)
    seen = []
    objective = ascent.ascent_objective(model, iter(b), seen.append)
    with torch.no_grad():
        assert objective().item() == -example_losses(model, b[0]).mean().item()
    assert len(seen) == 1 and seen[0] is b[0]


# ----------------------------------------------------------------------------- configs and batch sizes

@pytest.mark.parametrize("bad, field", [
    ({"optimizer": "lion"}, "optimizer"), ({"lr": 0.0}, "lr"), ({"lr": -1e-3}, "lr"), ({"lr": math.nan}, "lr"),
    ({"lr": math.inf}, "lr"), ({"epochs": 0}, "epochs"), ({"epochs": -1.0}, "epochs"), ({"batch_size": 0}, "batch_size"),
    ({"batch_size": -1}, "batch_size"), ({"batch_size": 1.5}, "batch_size"), ({"batch_size": True}, "batch_size"),
    ({"steps": 0}, "steps"), ({"steps": 2.0}, "steps"), ({"eval_every": 0}, "eval_every"),
    ({"eval_batch_size": None}, "eval_batch_size"), ({"eval_batch_size": 0}, "eval_batch_size"),
])
def test_unlearn_config_names_the_bad_field(bad, field):
    from untrac import UnlearnConfig

    with pytest.raises(ValueError, match=f"UnlearnConfig.{field}"):
        UnlearnConfig(**bad)


def test_unlearn_config_accepts_the_presets_values():
    from untrac import UnlearnConfig

    ok = UnlearnConfig(batch_size=None, steps=None, eval_every=None, epochs=5, lr=1, optimizer="adafactor")
    assert ok.num_steps(10) == 5
    assert UnlearnConfig(batch_size=np.int64(2), steps=np.int64(3)).num_steps(10) == 3


@pytest.mark.parametrize("bs", [0, -1, 1.5, None, True])
def test_batch_size_must_be_a_positive_integer(bs):
    from untrac.data.batching import batches, epoch_stream

    ds = Dataset.from_dict({"input_ids": [[1, 2], [3]], "labels": [[1, 2], [3]]})
    with pytest.raises(ValueError, match="batch_size"):
        batches(ds, bs, 0)
    with pytest.raises(ValueError, match="batch_size"):
        epoch_stream(ds, bs, 0, False, 0)  # raised at the call (a batch size of -1 used to loop forever)


def test_epoch_stream_with_indices_is_the_same_stream():
    from untrac.data.batching import epoch_stream

    ds = Dataset.from_dict({"input_ids": [[i, i + 1] for i in range(7)], "labels": [[i, i + 1] for i in range(7)]})
    plain, indexed = epoch_stream(ds, 3, 0, False, 5), epoch_stream(ds, 3, 0, False, 5, with_indices=True)
    for _ in range(6):  # two epochs
        a, (b, idx) = next(plain), next(indexed)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert b["input_ids"][:, 0].tolist() == [int(i) for i in idx]
