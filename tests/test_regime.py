"""The regime study's pieces against hand computations (no mirror needed; notebook 05 runs it whole)."""
import math

import numpy as np
import pandas as pd
import pytest

import untrac
from untrac.experiments import regime


def test_unigram_entropy_is_the_entropy_of_the_token_counts_without_padding():
    sets = {"a": {"input_ids": [[1, 1, 2, 0]]}, "b": {"input_ids": [[3, 0, 0, 0]]}}  # 0 = pad
    p = np.array([2, 1, 1]) / 4
    assert regime.unigram_entropy(sets, pad_id=0) == pytest.approx(float(-(p * np.log(p)).sum()))
    with pytest.raises(ValueError, match="no tokens"):
        regime.unigram_entropy({"a": {"input_ids": [[0, 0]]}}, pad_id=0)


def test_final_loss_averages_the_last_quarter_of_the_log():
    log = {"loss": [(i, float(v)) for i, v in enumerate([9, 9, 9, 9, 9, 9, 2, 4])]}
    assert regime.final_loss(log) == 3.0
    assert math.isnan(regime.final_loss({}))


def test_candidates_change_one_thing_and_the_study_sets_seeds_and_setting():
    base = untrac.preset("corpora", "mini")
    built = {name: regime.candidate_preset(base, make(base), (0, 1)) for name, make in regime.CANDIDATES.items()}
    assert built["as is"] == regime.candidate_preset(base, {}, (0, 1))
    assert built["vocabulary / 4"].model.vocab_size == 1024 and built["2x layers"].model.n_layers == 2
    assert (built["2x training"].train.steps, built["2x training"].anneal.steps) == (2000, 500)
    for p in built.values():
        assert p.seeds == (0, 1) and p.settings == ("equal",) and p.classic is False
        assert p.untrac == base.untrac and p.sample_blocks == base.sample_blocks  # nothing else moved
    with pytest.raises(ValueError, match="two training seeds"):
        regime.regime_study(base, ["as is"], seeds=(0,))
    with pytest.raises(ValueError, match="unknown candidates"):
        regime.regime_study(base, ["bigger"])


def test_select_takes_the_cheapest_candidate_meeting_both_criteria_on_every_test_set():
    rows = []
    for name, seeds, below, cost in (("cheap but noisy", (2, 9), 1.0, 1.0), ("good", (3, 2), 0.6, 5.0),
                                     ("better but dear", (1, 1), 1.0, 9.0), ("unigram-like", (1, 1), 0.1, 2.0)):
        rows += [{"candidate": name, "testset": t, "seeds_for_3x": s, "below_unigram": below, "seconds_per_model": cost}
                 for t, s in zip(("toxigen", "winobias"), seeds)]
    table = pd.DataFrame(rows)
    assert regime.select(table) == "good"
    assert regime.select(table[table.candidate.isin(["cheap but noisy", "unigram-like"])]) is None


def test_fallback_takes_the_least_training_time_to_3x_on_the_worst_test_set():
    rows = []
    # worst-test-set seconds to 3x: cheap 9 x 1 = 9, good 3 x 5 = 15, dear 1 x 9 = 9 but second in order,
    # unigram-like 2 but excluded (0.1 nats below the unigram), "never" has no estimate on one test set
    for name, seeds, below, cost in (("cheap but noisy", (2, 9), 1.0, 1.0), ("good", (3, 2), 0.6, 5.0),
                                     ("dear", (1, 1), 1.0, 9.0), ("unigram-like", (1, 1), 0.1, 2.0),
                                     ("never", (None, 1), 1.0, 0.5)):
        rows += [{"candidate": name, "testset": t, "seeds_for_3x": s, "below_unigram": below, "seconds_per_model": cost}
                 for t, s in zip(("toxigen", "winobias"), seeds)]
    table = pd.DataFrame(rows)
    assert regime.fallback(table) == "cheap but noisy"
    assert regime.fallback(table[table.candidate != "cheap but noisy"]) == "dear"
    assert regime.fallback(table[table.candidate.isin(["unigram-like", "never"])]) is None


def test_synthetic_candidates_change_one_thing():
    base = untrac.preset("synthetic", "mini")
    built = {name: untrac.presets.override(base, make(base)) for name, make in regime.SYNTHETIC_CANDIDATES.items()}
    assert built["as is"] == base
    assert base.train.steps == 64 == 4 * base.n_examples // base.train.batch_size  # mini: each set seen once
    assert built["8 epochs"].train.steps == 512 and built["8 epochs"].train.checkpoint_every == 128
    assert built["8 epochs"].train.lr == base.train.lr and built["8 epochs"].model == base.model
    assert built["vocabulary / 4"].model.vocab_size == 1024 and built["vocabulary / 4"].train == base.train
    with pytest.raises(ValueError, match="at least 2"):
        regime.synthetic_regime_study(base, seeds=1)
    with pytest.raises(ValueError, match="unknown candidates"):
        regime.synthetic_regime_study(base, ["bigger"])


def test_select_synthetic_needs_3x_and_a_learnt_task_on_every_family():
    rows = []
    for name, seeds, match, cost in (("cheap, task not learnt", (2, 2), (0.9, 0.0), 1.0), ("good", (3, 2), (0.3, 0.5), 5.0),
                                     ("dear", (1, 1), (1.0, 1.0), 9.0), ("noisy", (2, None), (1.0, 1.0), 2.0)):
        rows += [{"candidate": name, "family": f, "seeds_for_3x": s, "exact_match": m, "seconds_per_model": cost}
                 for f, s, m in zip("AB", seeds, match)]
    table = pd.DataFrame(rows)
    assert regime.select_synthetic(table) == "good"
    assert regime.select_synthetic(table[table.candidate != "good"]) == "dear"
    assert regime.select_synthetic(table[table.candidate.isin(["cheap, task not learnt", "noisy"])]) is None
