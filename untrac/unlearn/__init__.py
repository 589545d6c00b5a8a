"""How well does unlearning a training dataset match retraining without it? (SPEC section 5)

The leave-dataset-out counterfactuals of the UnTrac ground truth are the *oracles* of unlearning
evaluation (Attribute-to-Delete): a model retrained without the forget set. This package provides

* :mod:`.margins` — margins of sequence examples (the log-odds of the whole target answer) and the
  per-token log-probabilities the matching algorithms match;
* :mod:`.algorithms` — the unlearning algorithms behind one interface, :func:`unlearn` /
  :func:`unlearn_trajectory` (``ALGORITHMS``: do nothing, gradient ascent, ascent+descent, Oracle
  Matching, Datamodel Matching), configured by :class:`DeletionConfig`;
* :mod:`.datamodels` — linear datamodels of margins over the training datasets a model saw;
* :mod:`.klom` — KLoM, Attribute-to-Delete's metric of unlearning quality.

Notebook 04's experiment over these (populations of originals and oracles, KLoM tables) is
:mod:`untrac.experiments.unlearning`; its presets are ``untrac.preset("unlearning", scale)``.
"""
from .algorithms import (
    ALGORITHMS, MATCHING, DeletionConfig, MatchTargets, compute_fraction, matched_examples, matched_values,
    oracle_targets, retain_sample_indices, unlearn, unlearn_trajectory,
)
from .datamodels import Datamodel, fit_datamodel, indicators, subsets_of_sizes
from .margins import (  # the function margins() stays in .margins: untrac.unlearn.margins is the module
    example_logprobs, log1mexp, margin_from_logprob, margins_from_logprobs, sequence_margins, sequence_scores,
    split_tokens, token_logprobs, token_scores,
)

__all__ = [
    "ALGORITHMS", "MATCHING", "Datamodel", "DeletionConfig", "MatchTargets", "compute_fraction", "example_logprobs",
    "fit_datamodel", "indicators", "log1mexp", "margin_from_logprob", "margins_from_logprobs",
    "matched_examples", "matched_values", "oracle_targets", "retain_sample_indices", "sequence_margins",
    "sequence_scores", "split_tokens", "subsets_of_sizes", "token_logprobs", "token_scores", "unlearn",
    "unlearn_trajectory",
]
