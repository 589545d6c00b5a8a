"""The peers' influence methods through their libraries (extras ``untrac[kronfluence]``, ``untrac[trak]``):
EK-FAC checked against an independent EK-FAC from per-example layer activations and output gradients,
TRAK without projection against its closed form, both on a tiny float64 model; a missing extra is a
clear error and drops the method from the default tables."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

kronfluence = pytest.importorskip("kronfluence", reason="the kronfluence extra (make setup installs it)")
trak = pytest.importorskip("trak", reason="the trak extra (make setup installs it)")

TRACKED = ("model.decoder.layers.0.fc1", "lm_head")  # fc1 sees flattened token rows in OPT; lm_head is tied


def _rows(sets):
    from untrac.methods.per_example import example_rows

    return example_rows(sets)[0]


def _layer_terms(model, rows, names, pad):
    """Per example and tracked layer: (inputs with a ones column if it has a bias, [tokens, d_in(+1)];
    gradients of the example's loss w.r.t. the layer's outputs, [tokens, d_out]) by forward and tensor hooks."""
    from untrac.data.batching import collate
    from untrac.models import example_losses

    out = []
    for row in rows:
        acts, grads, hooks = {}, {}, []
        for name in names:
            layer = model.get_submodule(name)

            def forward(mod, inputs, output, name=name):
                a = inputs[0].detach().reshape(-1, inputs[0].shape[-1])
                acts[name] = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], 1) if mod.bias is not None else a
                output.register_hook(lambda g: grads.__setitem__(name, g.detach().reshape(-1, g.shape[-1])))

            hooks.append(layer.register_forward_hook(forward))
        example_losses(model, collate([row], pad)).sum().backward()
        for h in hooks:
            h.remove()
        out.append({name: (acts[name], grads[name]) for name in names})
    model.zero_grad(set_to_none=True)
    return out


def _independent_ekfac(model, train_rows, test_rows, names, pad):
    """EK-FAC by its definition (George et al. 2018; Grosse et al. 2023), in float64: per layer the
    eigenvectors of the input and output-gradient covariances, the mean squared per-example gradient
    in that basis (+ 0.1 x its mean as damping), and ``<precondition(G_q), G_i>`` summed over layers."""
    train, test = _layer_terms(model, train_rows, names, pad), _layer_terms(model, test_rows, names, pad)
    scores = np.zeros((len(train_rows), len(test_rows)))
    for name in names:
        a_cov = sum(t[name][0].T @ t[name][0] for t in train)
        g_cov = sum(t[name][1].T @ t[name][1] for t in train)
        qa, qs = torch.linalg.eigh(a_cov)[1], torch.linalg.eigh(g_cov)[1]
        g_train = torch.stack([t[name][1].T @ t[name][0] for t in train])  # [n, d_out, d_in]
        g_test = torch.stack([t[name][1].T @ t[name][0] for t in test])
        lam = ((qs.T @ g_train @ qa) ** 2).mean(0)
        lam = lam + 0.1 * lam.mean()
        pre = qs @ ((qs.T @ g_test @ qa) / lam) @ qa.T
        scores += torch.einsum("iab,qab->iq", g_train, pre).numpy()
    return scores


def test_ekfac_equals_an_independent_ekfac(tiny):
    from untrac import attribute

    model, train_sets, test_sets, pad = tiny
    got = attribute("EK-FAC", model, train_sets, test_sets, pad, modules=TRACKED, empirical_fisher=True,
                    per_example=True, progress=False)
    exact = _independent_ekfac(model, _rows(train_sets), _rows(test_sets), TRACKED, pad)
    start = 0
    for k, name in enumerate(train_sets):
        n = len(train_sets[name])
        np.testing.assert_allclose(got.example_values[name][:, 0], exact[start:start + n].mean(1), rtol=1e-7)
        np.testing.assert_allclose(got.values[k, 0], exact[start:start + n].mean(), rtol=1e-7)
        start += n
    assert np.ptp(got.values) > 0.1 * np.abs(got.values).max()  # the sets differ: the check is not vacuous


def test_ekfac_true_fisher_is_seeded_and_leaves_the_model_alone(tiny):
    from untrac import attribute

    model, train_sets, test_sets, pad = tiny
    before, was_training = {k: v.clone() for k, v in model.state_dict().items()}, model.training
    a = attribute("EK-FAC", model, train_sets, test_sets, pad, progress=False)
    b = attribute("EK-FAC", model, train_sets, test_sets, pad, progress=False)
    c = attribute("EK-FAC", model, train_sets, test_sets, pad, seed=1, progress=False)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)  # labels drawn from the model with another seed
    assert np.isfinite(a.values).all() and a.example_values is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters()) and model.training == was_training


def test_ekfac_runs_on_an_encoder_decoder_and_names_bad_modules(tokenizer, synthetic_raw):
    from conftest import tiny_spec
    from untrac import attribute
    from untrac.data.batching import encode
    from untrac.models import build_model

    model = build_model(tiny_spec("t5"), tokenizer, seed=0)
    enc = {k: encode(v, tokenizer) for k, v in synthetic_raw.items()}
    train = {k: v for k, v in enc.items() if k != "test"}
    got = attribute("EK-FAC", model, train, {"test": enc["test"]}, tokenizer.pad_token_id, progress=False)
    assert got.values.shape == (4, 1) and np.isfinite(got.values).all()
    with pytest.raises(ValueError, match="not Linear layers of the model"):
        attribute("EK-FAC", model, train, {"test": enc["test"]}, tokenizer.pad_token_id, modules=("nope",),
                  progress=False)


def test_ekfac_leaves_the_output_layer_out_unless_asked(tiny):
    from untrac.methods.ekfac import trackable_copy

    model = tiny[0]
    default = trackable_copy(model, None)[1]
    assert "lm_head.linear" not in default and "model.decoder.layers.0.fc1.linear" in default
    assert "lm_head.linear" in trackable_copy(model, None, output_layer=True)[1]


def test_gpt2_conv1d_becomes_the_same_linear():
    from transformers.pytorch_utils import Conv1D

    from untrac.methods.ekfac import _as_linear

    torch.manual_seed(0)
    conv = Conv1D(7, 5)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(3, 4, 5)
    torch.testing.assert_close(_as_linear(conv)(x), conv(x))


def _example_gradient(model, row, pad, params):
    from untrac.data.batching import collate
    from untrac.models import example_losses

    (loss,) = example_losses(model, collate([row], pad))
    return torch.cat([g.flatten() for g in torch.autograd.grad(-loss, params)])


def test_trak_without_projection_is_its_closed_form(tiny):
    """No projection: ``x_i^T (X^T X + lambda I)^{-1} x_q`` with ``x = grad(-L) / sqrt(p)`` and traker's
    rescaling of the inverse by its mean absolute entry, computed here in float64."""
    from untrac import attribute

    model, train_sets, test_sets, pad = tiny
    names = ("model.decoder.layers.0.fc2.weight",)
    params = [dict(model.named_parameters())[n] for n in names]
    p = sum(x.numel() for x in params)
    x = torch.stack([_example_gradient(model, r, pad, params) for r in _rows(train_sets)]) / p ** 0.5
    xq = torch.stack([_example_gradient(model, r, pad, params) for r in _rows(test_sets)]) / p ** 0.5
    lam = 1e-2 * float(torch.trace(x.T @ x)) / p
    inv = torch.linalg.inv(x.T @ x + lam * torch.eye(p, dtype=x.dtype))
    exact = (x @ (inv / inv.abs().mean()) @ xq.T).numpy()
    got = attribute("TRAK", model, train_sets, test_sets, pad, proj_dim=None, lambda_reg=lam, params=names,
                    per_example=True, progress=False)
    start = 0
    for k, name in enumerate(train_sets):
        n = len(train_sets[name])
        np.testing.assert_allclose(got.example_values[name][:, 0], exact[start:start + n].mean(1), rtol=2e-3,
                                   atol=2e-3 * np.abs(exact).max())
        start += n
    assert np.corrcoef(got.values[:, 0], [exact[s:s + 12].mean() for s in range(0, 48, 12)])[0, 1] > 0.999


def test_trak_projected_is_seeded_and_refuses_a_singular_kernel(tiny):
    from untrac import attribute

    model, train_sets, test_sets, pad = tiny
    a = attribute("TRAK", model, train_sets, test_sets, pad, proj_dim=16, progress=False)
    b = attribute("TRAK", model, train_sets, test_sets, pad, proj_dim=16, progress=False)
    c = attribute("TRAK", model, train_sets, test_sets, pad, proj_dim=16, seed=1, progress=False)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values) and np.isfinite(a.values).all()
    with pytest.raises(ValueError, match="proj_dim=64 >= 48 training examples"):
        attribute("TRAK", model, train_sets, test_sets, pad, proj_dim=64, progress=False)
    with pytest.raises(ValueError, match="TRAKSettings.params"):
        attribute("TRAK", model, train_sets, test_sets, pad, params=("nope",), proj_dim=16, progress=False)


@pytest.mark.parametrize("method, extra", [("EK-FAC", "untrac[kronfluence]"), ("TRAK", "untrac[trak]")])
def test_a_missing_extra_is_a_clear_error_and_leaves_the_tables(method, extra, tiny, monkeypatch):
    from untrac.methods import MissingExtra, attribute, builtin

    model, train_sets, test_sets, pad = tiny
    module = {"EK-FAC": "kronfluence", "TRAK": "trak"}[method]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    assert method not in [m.name for m in builtin() if m.installed]
    with pytest.raises(MissingExtra, match=extra.replace("[", r"\[").replace("]", r"\]")):
        attribute(method, model, train_sets, test_sets, pad, progress=False)


def test_installed_peers_are_in_the_default_tables():
    from untrac.methods import METHODS

    assert {"EK-FAC", "TRAK"} <= set(METHODS)


@pytest.mark.parametrize("method, bad, field", [
    ("EK-FAC", {"strategy": "kfax"}, "strategy"), ("EK-FAC", {"damping": -1.0}, "damping"),
    ("EK-FAC", {"query_rank": 0}, "query_rank"), ("EK-FAC", {"modules": ()}, "modules"),
    ("TRAK", {"proj_dim": 0}, "proj_dim"), ("TRAK", {"lambda_reg": -1.0}, "lambda_reg"), ("TRAK", {"params": ()}, "params"),
])
def test_bad_settings_name_the_field(method, bad, field):
    from untrac.methods import settings_for

    with pytest.raises(ValueError, match=rf"Settings\.{field} must be"):
        settings_for(method, **bad)


@pytest.mark.parametrize("sketch_columns", [16, 3])  # one block; six blocks, the last one partial
def test_trak_kept_sketch_gives_traker_s_scores_bit_for_bit(tiny, monkeypatch, sketch_columns):
    """The projector that keeps its sketch equals traker's BasicProjector, which redraws it at every batch."""
    from untrac import attribute
    from untrac.methods import trak as trak_module

    model, train_sets, test_sets, pad = tiny
    grad_dim = sum(p.numel() for p in model.parameters())
    monkeypatch.setattr(trak_module, "SKETCH_BYTES", 4 * grad_dim * sketch_columns)
    calls = []
    kept = trak_module._kept_projector

    def counting(basic):
        cls = kept(basic)
        draw = cls.generate_sketch_matrix
        cls.generate_sketch_matrix = lambda self, state: (calls.append(1), draw(self, state))[1]
        return cls

    monkeypatch.setattr(trak_module, "_kept_projector", counting)
    fast = attribute("TRAK", model, train_sets, test_sets, pad, proj_dim=16, batch_size=5, per_example=True, progress=False)
    blocks = -(-16 // sketch_columns)
    assert len(calls) <= blocks + 2  # drawn once (plus traker's own draws at set-up and after finalising)
    monkeypatch.setattr(trak_module, "KEEP_BYTES", 0)  # traker's projector
    plain = attribute("TRAK", model, train_sets, test_sets, pad, proj_dim=16, batch_size=5, per_example=True, progress=False)
    np.testing.assert_array_equal(fast.values, plain.values)
    for name in train_sets:  # every training example's scores, not only the set means
        np.testing.assert_array_equal(fast.example_values[name], plain.example_values[name])
