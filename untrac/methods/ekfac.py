"""EK-FAC influence functions through kronfluence (Grosse et al. 2023; optional extra ``untrac[kronfluence]``).

``EK-FAC[i, q] = g_q^T (G + damping)^{-1} g_i``: the gradient ``g_q`` of test example q's loss,
preconditioned by the eigenvalue-corrected Kronecker-factored approximation ``G`` of the Gauss-Newton
Hessian of the training loss, against the gradient ``g_i`` of training example i's loss. Per tracked
``nn.Linear`` (all of them by default): the eigenvectors of the covariance of its inputs ``a`` and of
its output gradients ``g`` (over tokens), and in that basis the mean over examples of each squared
per-example gradient coordinate (the eigenvalue correction); the damping defaults to kronfluence's
0.1 x the mean of those eigenvalues. Output gradients come from labels sampled from the model (the
true Fisher, = the Gauss-Newton of a softmax likelihood) unless ``empirical_fisher``.

Set scores are the mean over the example pairs of training set k and test set s (the bilinear score
of the sets' mean gradients, the sign of every method here: removing a set that helps raises the
test loss); every training example's scores come with it (``per_example=True`` keeps them).

Two model adaptations, on a copy (the caller's model is untouched):

* transformers' OPT feeds ``fc1``/``fc2`` ``[batch x tokens, d]`` rows; kronfluence would take every
  token for an example. Each ``nn.Linear`` is wrapped so that it sees ``[batch, tokens, d]``.
* GPT-2's ``Conv1D`` becomes the equivalent ``nn.Linear`` (kronfluence tracks Linear and Conv2d).

The output layer (``lm_head``) is left out unless ``output_layer=True`` or it is named in ``modules``,
as Grosse et al. (2023) leave out the (un)embedding: its gradient covariance is ``vocabulary^2``
(4,096^2 at mini: 220 s a run instead of seconds; 50,272^2 = 10 GB for OPT's vocabulary). A tied
output layer, when tracked, is tracked as the output layer only; the embedding's own gradient is not. Memory: every test example's preconditioned gradient is held at
once (``n_test x tracked parameters`` numbers); ``query_rank`` stores them at low rank instead.
"""
from __future__ import annotations

import copy
import functools
import logging
import tempfile
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import checks
from ..data.batching import IGNORE, collate
from ..models import example_losses, is_encoder_decoder, mean_target_nll, target_logits
from .per_example import example_rows, pairwise_method
from .registry import GRADIENT_BATCH, Method, Problem
from .result import Cost

STRATEGIES = ("ekfac", "kfac", "diagonal", "identity")
INSTALL = ("pip install 'untrac[kronfluence]' && pip install --no-deps kronfluence==1.0.1  (kronfluence's torchvision "
           "requirement is never imported, and a torchvision wheel can break a CPU torch and transformers' imports)")


@dataclass(frozen=True)
class EKFACSettings:
    """EK-FAC: kronfluence's ``strategy`` (``"ekfac"``; ``"kfac"``, ``"diagonal"``, ``"identity"`` for
    the cruder ones), ``damping`` (None: 0.1 x mean eigenvalue), labels sampled from the model with
    ``seed`` unless ``empirical_fisher``, the tracked ``modules`` (names of ``nn.Linear`` modules of the
    model; None: all but the output layer unless ``output_layer``), ``batch_size`` examples a pass,
    ``query_rank`` (None: full-rank query gradients)."""

    strategy: str = "ekfac"
    damping: float | None = None
    empirical_fisher: bool = False
    modules: tuple[str, ...] | None = None
    output_layer: bool = False
    batch_size: int = GRADIENT_BATCH
    query_rank: int | None = None
    seed: int = 0
    per_example: bool = field(default=False, kw_only=True, metadata={"fingerprint": "omit-default"})

    def __post_init__(self) -> None:
        name = type(self).__name__
        checks.one_of(name, "strategy", self.strategy, STRATEGIES)
        checks.positive_float(name, "damping", self.damping, allow_none=True, allow_zero=True)
        checks.positive_int(name, "batch_size", self.batch_size)
        checks.positive_int(name, "query_rank", self.query_rank, allow_none=True)
        checks.positive_int(name, "seed", self.seed, minimum=0)
        for attr in ("empirical_fisher", "output_layer", "per_example"):
            if not isinstance(getattr(self, attr), bool):
                raise ValueError(f"{name}.{attr} must be True or False, not {getattr(self, attr)!r}")
        if self.modules is not None and (not self.modules or not all(isinstance(m, str) for m in self.modules)):
            raise ValueError(f"{name}.modules must be None or a non-empty tuple of module names, not {self.modules!r}")


# ----------------------------------------------------------------------------- the model kronfluence sees

class _TokenRows(nn.Module):
    """A Linear layer that sees ``[batch, tokens, d]`` even when its caller flattens tokens into rows."""

    def __init__(self, linear: nn.Linear, shape: list[tuple[int, int]]) -> None:
        super().__init__()
        self.linear = linear
        self._shape = shape  # [(batch, tokens)] of the model's current input, set by a pre-hook

    @property
    def weight(self) -> torch.Tensor:  # models read their layers' weights (e.g. T5 for its dtype)
        return self.linear.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = self._shape[0]
        if x.dim() == 2 and x.shape[0] == b * t:
            return self.linear(x.view(b, t, x.shape[-1])).view(b * t, -1)
        return self.linear(x)


def _as_linear(module: nn.Module) -> nn.Linear | None:
    """The module as an ``nn.Linear`` (GPT-2's ``Conv1D`` copied into one), or None."""
    if isinstance(module, nn.Linear):
        return module
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):  # transformers.pytorch_utils.Conv1D
        linear = nn.Linear(module.weight.shape[0], module.nf, bias=module.bias is not None)
        linear = linear.to(device=module.weight.device, dtype=module.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(module.weight.T)
            if module.bias is not None:
                linear.bias.copy_(module.bias)
        return linear
    return None


def trackable_copy(model: nn.Module, modules: tuple[str, ...] | None, output_layer: bool = False
                   ) -> tuple[nn.Module, list[str]]:
    """A copy of ``model`` whose chosen Linear layers (``modules``; None: all, the output layer only
    with ``output_layer``) are wrapped (:class:`_TokenRows`), and the names kronfluence tracks them by."""
    work = copy.deepcopy(model)
    names = {name for name, m in work.named_modules() if _as_linear(m) is not None}
    head = work.get_output_embeddings() if hasattr(work, "get_output_embeddings") else None
    heads = {name for name, m in work.named_modules() if head is not None and m is head}
    chosen = sorted(names - (set() if output_layer else heads)) if modules is None else list(modules)
    unknown = [m for m in chosen if m not in names]
    if unknown:
        raise ValueError(f"EKFACSettings.modules: {unknown} are not Linear layers of the model; "
                         f"its Linear layers are {sorted(names)}")
    shape = [(0, 0)]
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = work.get_submodule(parent_name)
        setattr(parent, child, _TokenRows(_as_linear(getattr(parent, child)), shape))

    def remember(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        shape[0] = tuple(ids.shape[:2]) if ids is not None and ids.dim() >= 2 else (0, 0)

    work.register_forward_pre_hook(remember, with_kwargs=True)
    return work, [f"{name}.linear" for name in chosen]


def _language_model_task(tracked: list[str], seed: int, encdec: bool):
    from kronfluence.task import Task

    class LanguageModelTask(Task):
        """The loss of every example is its mean target-token NLL, as everywhere in untrac; the
        measurement of a test example is its loss."""

        generator = torch.Generator().manual_seed(seed)

        def compute_train_loss(self, batch, model, sample=False):
            if not sample:
                return example_losses(model, batch).sum()
            logits, labels = target_logits(model, batch)
            with torch.no_grad():
                probs = torch.softmax(logits.detach().float().reshape(-1, logits.shape[-1]), -1)
                drawn = torch.multinomial(probs.cpu(), 1, generator=self.generator).view(labels.shape)
                drawn = torch.where(labels == IGNORE, IGNORE, drawn.to(labels.device))
            return mean_target_nll(logits, drawn, (drawn != IGNORE).sum(1)).sum()

        def compute_measurement(self, batch, model):
            return example_losses(model, batch).sum()

        def get_influence_tracked_modules(self):
            return tracked

        def get_attention_mask(self, batch):
            return None if encdec else batch["attention_mask"]

    return LanguageModelTask()


# ----------------------------------------------------------------------------- the method

def ekfac_pairwise(problem: Problem, settings: EKFACSettings, cost: Cost):
    """``([n_train, n_test] scores, train set sizes, test set sizes)`` by kronfluence."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.utils.dataset import DataLoaderKwargs

    encdec = is_encoder_decoder(problem.model)
    dtype = torch.float64 if next(problem.model.parameters()).dtype == torch.float64 else torch.float32
    work, tracked = trackable_copy(problem.model, settings.modules, settings.output_layer)
    task = _language_model_task(tracked, settings.seed, encdec)
    work = prepare_model(work, task)
    train_rows, train_sizes = example_rows(problem.train_sets)
    test_rows, test_sizes = example_rows(problem.test_sets)
    loader = DataLoaderKwargs(collate_fn=functools.partial(collate, pad_id=problem.pad_id, encoder_decoder=encdec))
    factor_args = FactorArguments(
        strategy=settings.strategy, use_empirical_fisher=settings.empirical_fisher,
        activation_covariance_dtype=dtype, gradient_covariance_dtype=dtype, per_sample_gradient_dtype=dtype,
        lambda_dtype=dtype)
    steps = -(-len(test_rows) // settings.batch_size)  # every test gradient in one pass over the training set
    score_args = ScoreArguments(
        damping_factor=settings.damping, query_gradient_accumulation_steps=steps,
        query_gradient_low_rank=settings.query_rank, per_sample_gradient_dtype=dtype, precondition_dtype=dtype,
        score_dtype=dtype)
    device = next(problem.model.parameters()).device
    with tempfile.TemporaryDirectory(prefix="untrac-ekfac-") as out, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="kronfluence")  # its torch.cuda.amp calls
        analyzer = Analyzer("untrac", work, task, cpu=device.type == "cpu", log_level=logging.WARNING,
                            disable_tqdm=not problem.progress, output_dir=out)
        analyzer.fit_all_factors("factors", train_rows, per_device_batch_size=settings.batch_size,
                                 factor_args=factor_args, dataloader_kwargs=loader, overwrite_output_dir=True)
        analyzer.compute_pairwise_scores(
            "scores", "factors", test_rows, train_rows, per_device_query_batch_size=settings.batch_size,
            per_device_train_batch_size=settings.batch_size, score_args=score_args, dataloader_kwargs=loader,
            overwrite_output_dir=True)
        scores = analyzer.load_pairwise_scores("scores")["all_modules"]
    n_train, n_test = len(train_rows), len(test_rows)
    fits = 2 if settings.strategy == "ekfac" else 1  # covariances, then the eigenvalue correction
    cost.forward_examples += fits * n_train + n_train + n_test
    cost.backward_examples += fits * n_train + n_train + n_test
    return scores.T.double().cpu().numpy(), train_sizes, test_sizes


METHODS = (
    Method("EK-FAC", EKFACSettings(), pairwise_method("EK-FAC", ekfac_pairwise), order=74,
           requires=("kronfluence",), install=INSTALL,
           summary="influence function with kronfluence's eigenvalue-corrected Kronecker-factored Gauss-Newton"),
)
