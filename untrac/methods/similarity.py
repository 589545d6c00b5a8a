"""GradDot, GradCos and TracIn as methods (paper Section 4.1, Eq. 7 and 9): typed settings and registration.

The math (set gradients, dot / cosine, TracIn over checkpoints) is :mod:`.gradients`; the scores of
every training example (``per_example=True``) are :mod:`.per_example`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .gradients import dataset_gradients, grad_cos, grad_dot, tracin
from .per_example import example_batches, example_scores, tracin_examples
from .registry import GRADIENT_BATCH, Method, Problem
from .result import Cost, Influence, measure


@dataclass(frozen=True)
class GradientSettings:
    """GradDot / GradCos: gradients of the mean loss of each whole set, ``batch_size`` examples a pass;
    ``per_example``: also score every training example (one backward pass per example)."""

    batch_size: int = GRADIENT_BATCH
    per_example: bool = field(default=False, kw_only=True, metadata={"fingerprint": "omit-default"})

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"{type(self).__name__}.batch_size must be an int >= 1, not {self.batch_size!r}")
        if not isinstance(self.per_example, bool):
            raise ValueError(f"{type(self).__name__}.per_example must be True or False, not {self.per_example!r}")


@dataclass(frozen=True)
class TracInSettings(GradientSettings):
    """TracIn: one learning rate per checkpoint (``None``: unweighted), normalised gradients."""

    learning_rates: tuple[float, ...] | None = None
    normalize: bool = True


def _similarity(name: str) -> Callable[[Problem, GradientSettings], Influence]:
    def compute(problem: Problem, settings: GradientSettings) -> Influence:
        cost = Cost()
        with measure(cost, next(problem.model.parameters()).device):
            trains, tests = problem.batched(settings.batch_size)
            losses = problem.counted_losses(cost)
            g_train = dataset_gradients(problem.model, losses, trains)
            g_test = dataset_gradients(problem.model, losses, tests)
            values = (grad_dot if name == "GradDot" else grad_cos)(g_train, g_test)
            if settings.per_example:
                examples = example_scores(problem.model, losses, example_batches(problem.model, problem.train_sets,
                                          problem.pad_id), g_test, normalize=name == "GradCos", progress=problem.progress)
        result = problem.influence(name, values, cost, settings)
        return replace(result, example_values=examples) if settings.per_example else result

    return compute


def _tracin(problem: Problem, settings: TracInSettings) -> Influence:
    cost = Cost()
    with measure(cost, next(problem.model.parameters()).device):
        trains, tests = problem.batched(settings.batch_size)
        losses = problem.counted_losses(cost)
        values = tracin(problem.checkpoints, problem.model, losses, trains, tests,
                        learning_rates=settings.learning_rates, normalize=settings.normalize)
        if settings.per_example:
            examples = tracin_examples(problem.checkpoints, problem.model, losses,
                                       example_batches(problem.model, problem.train_sets, problem.pad_id), tests,
                                       learning_rates=settings.learning_rates, normalize=settings.normalize,
                                       progress=problem.progress)
    result = problem.influence("TracIn", values, cost, settings, checkpoints=len(problem.checkpoints))
    return replace(result, example_values=examples) if settings.per_example else result


METHODS = (
    Method("GradDot", GradientSettings(), _similarity("GradDot"), order=30,
           summary="dot product of training- and test-set gradients (Eq. 9's first-order UnTrac)"),
    Method("GradCos", GradientSettings(), _similarity("GradCos"), order=40,
           summary="cosine of training- and test-set gradients"),
    Method("TracIn", TracInSettings(), _tracin, needs=("checkpoints",), order=50,
           summary="GradCos summed over training checkpoints (Eq. 7)"),
)
