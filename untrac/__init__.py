"""untrac — which training data made my model say that? UnTrac and UnTrac-Inv, reproducibly.

The public surface (data -> model -> train -> attribute -> evaluate -> show):

* data: :func:`synthetic_task` (Sec. 5.1), :mod:`untrac.data.corpora`, :mod:`untrac.data.testsets`
  (Sec. 5.2), :func:`encode` (text -> ids with a target mask);
* models: :class:`ModelSpec`, :func:`build_model`, :func:`build_tokenizer`, :func:`example_losses`;
* training: :class:`TrainConfig`, :func:`train`, :func:`leave_dataset_out` (Eq. 1);
* attribution: :func:`attribute` over ``METHODS`` (UnTrac Eq. 2-3, UnTrac-Inv Eq. 4, GradDot,
  GradCos, TracIn Eq. 7, HIF Eq. 8) and any :func:`register_method` adds (a :class:`Method`:
  name, typed settings, needs), :func:`ground_truth` (Eq. 1), :class:`UnlearnConfig`, :class:`Influence`;
* evaluation: :func:`correlation`, :func:`standardise`, :func:`summarise`;
* experiments and presets: :func:`preset` (``smoke`` / ``mini`` / ``paper``), :mod:`untrac.experiments`.
"""
from .cache import CorruptEntry
from .data.batching import encode
from .data.synthetic import synthetic_task
from .evaluate import correlation, standardise, summarise
from .methods import METHODS, Influence, Method, Problem, attribute
from .methods import register as register_method
from .methods.untrac import UnlearnConfig, UnlearningDiverged
from .models import ModelSpec, ModelTokenizerMismatch, build_model, build_tokenizer, example_losses
from .presets import SCALES, preset
from .training import TrainConfig, leave_dataset_out, train
from .truth import ground_truth

__all__ = [
    "METHODS", "SCALES", "CorruptEntry", "Influence", "Method", "ModelSpec", "ModelTokenizerMismatch", "Problem",
    "TrainConfig", "UnlearnConfig", "UnlearningDiverged", "attribute", "build_model", "build_tokenizer", "correlation",
    "encode", "example_losses", "ground_truth", "leave_dataset_out", "preset", "register_method", "standardise",
    "summarise", "synthetic_task", "train",
]
