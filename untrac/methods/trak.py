"""TRAK through MadryLab's ``traker`` (Park et al. 2023; optional extra ``untrac[trak]``).

``TRAK[i, q] = x_i^T (X^T X + lambda_reg I)^{-1} x_q``: ``x = P^T grad f(z) / sqrt(p)``, the gradient of
the model output ``f(z) = -L(z)`` (an example's log-likelihood: its mean target-token NLL negated)
randomly projected to ``proj_dim`` dimensions, ``X`` the projected training gradients; the
out-to-loss factor ``Q`` is 1 for this output (``dL/df = -1`` on both sides of the score). traker
rescales ``(X^T X)^{-1}`` by the mean of its absolute entries, so scores have an arbitrary scale
(correlations are unaffected). ``proj_dim=None`` skips the projection (``P = I``; exact, for tests
and small parameter sets); ``params`` restricts the gradient to the named parameters.

One model (theta_0), not TRAK's ensemble of independently trained models. Set scores are the mean
over the example pairs of training set k and test set s (:func:`.per_example.pairwise_to_sets`),
with the sign of every method here (positive: removing the set raises the test loss).

The projection: traker's ``CudaProjector`` (fast_jl) on a GPU where ``fast_jl`` is installed, else
its ``BasicProjector`` (normal entries, generated block by block on every call: CPU cost grows as
``parameters x proj_dim`` per batch, so batches are large).
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import math
import tempfile
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import checks
from ..data.batching import collate
from ..models import example_losses, is_encoder_decoder
from .gradients import eval_mode
from .per_example import example_rows, pairwise_method
from .registry import Method, Problem
from .result import Cost

INSTALL = "pip install 'untrac[trak]'"
SKETCH_BYTES = 2**28  # BasicProjector: at most this much projection matrix at a time
KEEP_BYTES = 2**32  # a sketch up to this size is drawn once and kept (see _kept_projector)


@dataclass(frozen=True)
class TRAKSettings:
    """TRAK: ``proj_dim`` (None: no projection), ``lambda_reg`` (ridge on ``X^T X``), the projection's
    ``seed``, ``params`` (names of the parameters whose gradient counts; None: all), ``batch_size``."""

    proj_dim: int | None = 2048
    lambda_reg: float = 0.0
    seed: int = 0
    params: tuple[str, ...] | None = None
    batch_size: int = 64
    per_example: bool = field(default=False, kw_only=True, metadata={"fingerprint": "omit-default"})

    def __post_init__(self) -> None:
        name = type(self).__name__
        checks.positive_int(name, "proj_dim", self.proj_dim, allow_none=True)
        checks.positive_int(name, "seed", self.seed, minimum=0)
        checks.positive_int(name, "batch_size", self.batch_size)
        checks.positive_float(name, "lambda_reg", self.lambda_reg, allow_zero=True)
        if self.params is not None and (not self.params or not all(isinstance(p, str) for p in self.params)):
            raise ValueError(f"{name}.params must be None or a non-empty tuple of parameter names, not {self.params!r}")
        if not isinstance(self.per_example, bool):
            raise ValueError(f"{name}.per_example must be True or False, not {self.per_example!r}")


def _parameters(model: torch.nn.Module, names: tuple[str, ...] | None) -> list[torch.nn.Parameter]:
    named = dict(model.named_parameters())
    if names is None:
        return list(named.values())
    unknown = [n for n in names if n not in named]
    if unknown:
        raise ValueError(f"TRAKSettings.params: {unknown} are not parameters of the model; it has {list(named)}")
    return [named[n] for n in names]


def _traker_parts(params: list[torch.nn.Parameter]):
    """traker's model-output and gradient-computer classes for an untrac language model."""
    from trak.gradient_computers import AbstractGradientComputer
    from trak.modelout_functions import AbstractModelOutput

    class LogLikelihood(AbstractModelOutput):
        """``f(z) = -L(z)``; ``dL/df = -1``: the out-to-loss factor is 1 on both sides of a score."""

        def __init__(self) -> None:
            super().__init__()

        def get_output(self, model, weights, buffers, batch):
            return -example_losses(model, batch)

        def get_out_to_loss_grad(self, model, weights, buffers, batch):
            return torch.ones(len(batch), 1)

    class ExampleGradients(AbstractGradientComputer):
        """Per-example gradients of ``f``: a "batch" is a list of one-example batches, each one forward
        and one backward pass (a backward per example through a shared batch graph would cost a whole
        batch's backward each)."""

        def __init__(self, model, task, grad_dim, dtype, device, grad_wrt=None) -> None:
            super().__init__(model, task, grad_dim, dtype, device)

        def load_model_params(self, model) -> None:
            self.model = model

        def compute_per_sample_grad(self, batch) -> torch.Tensor:
            rows = []
            with torch.enable_grad():
                for one in batch:
                    (out,) = self.modelout_fn.get_output(self.model, None, None, one)
                    grads = torch.autograd.grad(out, params, allow_unused=True)
                    rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1).float()
                                           for g, p in zip(grads, params)]))
            return torch.stack(rows)

        def compute_loss_grad(self, batch) -> torch.Tensor:
            return self.modelout_fn.get_out_to_loss_grad(self.model, None, None, batch)

    return LogLikelihood(), ExampleGradients


def _projector(settings: TRAKSettings, grad_dim: int, device: torch.device):
    from trak.projectors import BasicProjector, CudaProjector, NoOpProjector, ProjectionType

    if settings.proj_dim is None:
        return NoOpProjector(grad_dim=grad_dim, device=device)
    if device.type == "cuda" and importlib.util.find_spec("fast_jl") is not None:
        return CudaProjector(grad_dim=grad_dim, proj_dim=settings.proj_dim, seed=settings.seed,
                             proj_type=ProjectionType.rademacher, device=device, max_batch_size=32)
    block = max(1, min(settings.proj_dim, SKETCH_BYTES // (4 * grad_dim)))
    kind = _kept_projector(BasicProjector) if 4 * grad_dim * settings.proj_dim <= KEEP_BYTES else BasicProjector
    return kind(grad_dim=grad_dim, proj_dim=settings.proj_dim, seed=settings.seed,
                proj_type=ProjectionType.normal, device=device, block_size=block, dtype=torch.float32)


def _kept_projector(basic: type) -> type:
    """traker's ``BasicProjector`` that draws each block of its sketch once and keeps it.

    With more than one block, ``BasicProjector.project`` redraws every block at every call (a
    ``grad_dim x proj_dim`` normal sample per batch of gradients: about half of TRAK's time at the synthetic
    ``mini`` model). This one keeps the very blocks it would redraw (same seeds, shapes and products,
    so the sketches are bit for bit the same, tests/test_peers.py), at ``4 x grad_dim x proj_dim``
    bytes of memory.
    """
    from trak.utils import vectorize

    class KeptProjector(basic):
        def project(self, grads: torch.Tensor, model_id: int) -> torch.Tensor:
            if isinstance(grads, dict):
                grads = vectorize(grads, device=self.device)
            grads = grads.to(dtype=self.dtype)
            if getattr(self, "kept_for", None) != model_id:
                self.model_id = model_id
                self.get_generator_states()
                self.kept = []
                for state in self.generator_states:
                    self.generate_sketch_matrix(state)
                    self.kept.append(self.proj_matrix.clone())
                self.kept_for = model_id
            sketch = torch.zeros(size=(grads.size(0), self.proj_dim), dtype=self.dtype, device=self.device)
            if self.num_blocks == 1:
                torch.matmul(grads.data, self.kept[0], out=sketch)
            else:
                for ind, block in enumerate(self.kept):
                    st, ed = ind * self.block_size, min((ind + 1) * self.block_size, self.proj_dim)
                    sketch[:, st:ed] = grads.type(self.dtype) @ block[:, : (ed - st)]
            return sketch.type(grads.dtype)

    return KeptProjector


def trak_pairwise(problem: Problem, settings: TRAKSettings, cost: Cost):
    """``([n_train, n_test] scores, train set sizes, test set sizes)`` by traker."""
    from trak import TRAKer

    model = problem.model
    encdec = is_encoder_decoder(model)
    device = next(model.parameters()).device
    params = _parameters(model, settings.params)
    grad_dim = sum(p.numel() for p in params)
    train_rows, train_sizes = example_rows(problem.train_sets)
    test_rows, test_sizes = example_rows(problem.test_sets)
    if settings.lambda_reg == 0 and settings.proj_dim is not None and settings.proj_dim >= len(train_rows):
        raise ValueError(f"TRAK: proj_dim={settings.proj_dim} >= {len(train_rows)} training examples leaves X^T X "
                         "singular; lower TRAKSettings.proj_dim or set lambda_reg > 0")
    if settings.lambda_reg == 0 and settings.proj_dim is None and grad_dim >= len(train_rows):
        raise ValueError(f"TRAK: {grad_dim} unprojected gradient dimensions >= {len(train_rows)} training examples "
                         "leaves X^T X singular; set TRAKSettings.lambda_reg > 0 or a proj_dim")
    task, computer = _traker_parts(params)

    def chunked(rows: list) -> list[list[dict[str, torch.Tensor]]]:  # traker's batches: lists of one-example batches
        return [[collate([r], problem.pad_id, encdec) for r in rows[i:i + settings.batch_size]]
                for i in range(0, len(rows), settings.batch_size)]

    chunks, tests = chunked(train_rows), chunked(test_rows)
    # traker puts the model in eval mode (eval_mode restores the caller's after), takes the device as a
    # string (it tests `device != "cpu"`) and draws progress bars of its own (kept only with progress)
    quiet = contextlib.nullcontext() if problem.progress else contextlib.redirect_stderr(io.StringIO())
    with tempfile.TemporaryDirectory(prefix="untrac-trak-") as out, eval_mode(model), quiet:
        state = model.state_dict()
        traker = TRAKer(model=model, task=task, train_set_size=len(train_rows), save_dir=out,
                        device=str(device), gradient_computer=computer, projector=_projector(settings, grad_dim, device),
                        use_half_precision=False, lambda_reg=float(settings.lambda_reg), logging_level=logging.ERROR,
                        grad_wrt=None if settings.params is None else list(settings.params))
        traker.load_checkpoint(state, model_id=0)
        for batch in chunks:
            traker.featurize(batch=batch, num_samples=len(batch))
        traker.finalize_features()
        if getattr(traker.projector, "num_blocks", 0) == 1:  # traker frees a one-block sketch and never redraws it
            traker.projector.generate_sketch_matrix(traker.projector.generator_states[0])
        traker.start_scoring_checkpoint(exp_name="untrac", checkpoint=state, model_id=0, num_targets=len(test_rows))
        for batch in tests:
            traker.score(batch=batch, num_samples=len(batch))
        scores = np.array(traker.finalize_scores(exp_name="untrac"), dtype=float)
    n = len(train_rows) + len(test_rows)
    cost.forward_examples += n
    cost.backward_examples += n
    if not math.isfinite(float(np.abs(scores).sum())):
        raise FloatingPointError("TRAK scores are not finite (X^T X too ill-conditioned: raise lambda_reg)")
    return scores, train_sizes, test_sizes


METHODS = (
    Method("TRAK", TRAKSettings(), pairwise_method("TRAK", trak_pairwise), order=76,
           requires=("trak",), install=INSTALL,
           summary="randomly projected per-example gradients with a Gauss-Newton kernel (traker)"),
)
