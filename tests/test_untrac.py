"""UnTrac and UnTrac-Inv against the paper's first-order identities (Eq. 5-6, 9) and invariants."""
from __future__ import annotations

import numpy as np
import pytest
import torch



def _full_gradient(model, dataset, pad):
    """Gradient of the mean per-example loss, computed independently of the package's methods."""
    from untrac.data.batching import batches
    from untrac.models import example_losses

    (batch,) = batches(dataset, len(dataset), pad)
    model.zero_grad()
    example_losses(model, batch).mean().backward()
    g = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad()
    return g


def _one_sgd_step(lr):
    from untrac.methods.untrac import UnlearnConfig

    return UnlearnConfig(optimizer="sgd", lr=lr, batch_size=None, steps=1)


def test_one_full_batch_sgd_step_of_untrac_is_graddot(tiny):
    """Eq. 9: L(Z', theta_1) - L(Z', theta_0) = lr <grad L(Z_k), grad L(Z')> + O(lr^2)."""
    from untrac.methods.untrac import untrac

    model, train_sets, test_sets, pad = tiny
    g_test = _full_gradient(model, test_sets["test"], pad)
    dots = np.array([torch.dot(_full_gradient(model, ds, pad), g_test).item() for ds in train_sets.values()])
    errors = []
    for lr in (1e-3, 1e-4):
        got = untrac(model, train_sets, test_sets, _one_sgd_step(lr), pad, progress=False).values[:, 0]
        errors.append(np.abs(got - lr * dots).max())
        np.testing.assert_allclose(got, lr * dots, rtol=5e-3)
    assert errors[0] / errors[1] == pytest.approx(100, rel=0.1)  # the error is second order in lr


def test_untrac_and_untrac_inv_coincide_to_first_order(tiny):
    """Eq. 5-6: with T = T' = 1 and one full batch, both approximate lr <g_k, g'>."""
    from untrac.methods.untrac import untrac, untrac_inv

    model, train_sets, test_sets, pad = tiny
    gaps = []
    for lr in (1e-4, 1e-5):
        a = untrac(model, train_sets, test_sets, _one_sgd_step(lr), pad, progress=False).values
        b = untrac_inv(model, train_sets, test_sets, _one_sgd_step(lr), pad, progress=False).values
        np.testing.assert_allclose(a, b, rtol=3e-2)
        gaps.append(np.abs(a - b).max())
    assert 70 < gaps[0] / gaps[1] < 140  # second order: x100 (a first-order gap would give x10)


def test_unlearning_raises_the_forget_loss_and_leaves_the_model_alone(tiny):
    from untrac.data.batching import batches
    from untrac.methods.untrac import UnlearnConfig, Unlearner
    from untrac.models import dataset_loss

    model, train_sets, _, pad = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    unlearner = Unlearner(model, pad)
    forget = train_sets["train2"]
    ev = batches(forget, 8, pad)
    steps, losses = unlearner.run(forget, UnlearnConfig(lr=1e-3, batch_size=2, epochs=1, eval_every=2),
                                  lambda m: np.array([dataset_loss(m, ev)]))
    assert steps == [0, 2, 4, 6] and losses.shape == (4, 1)
    assert losses[-1, 0] > losses[0, 0] + 0.1
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # caller's model untouched
    restored = unlearner.restore()
    assert all(torch.equal(v, before[k]) for k, v in restored.state_dict().items())  # snapshot is bit-identical


def test_trajectory_and_result_shapes(tiny):
    from untrac import UnlearnConfig, attribute

    model, train_sets, test_sets, pad = tiny
    res = attribute("UnTrac", model, train_sets, test_sets, pad, config=UnlearnConfig(lr=1e-3, batch_size=4, eval_every=1), progress=False)
    assert res.steps == [0, 1, 2, 3] and res.trajectory.shape == (4, 4, 1)
    assert np.all(res.trajectory[0] == 0) and np.array_equal(res.trajectory[-1], res.values)
    assert res.cost.backward_examples == 4 * 12 and res.cost.seconds > 0
    frame = res.trajectory_frame()
    assert len(frame) == 4 * 4 and set(frame["train"]) == set(train_sets)


def test_bad_input_is_reported_clearly(tiny):
    from untrac import UnlearnConfig, UnlearningDiverged, attribute

    model, train_sets, test_sets, pad = tiny
    with pytest.raises(ValueError, match="unknown method"):
        attribute("Shapley", model, train_sets, test_sets, pad)
    with pytest.raises(ValueError, match="is empty"):
        attribute("UnTrac", model, {"train1": train_sets["train1"].select([])}, test_sets, pad, progress=False)
    with pytest.raises(UnlearningDiverged, match="lower the learning rate"):
        attribute("UnTrac", model.float(), train_sets, test_sets, pad, config=UnlearnConfig(optimizer="sgd", lr=1e30, batch_size=4), progress=False)
