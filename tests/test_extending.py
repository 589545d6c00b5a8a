"""The package is open for extension without editing it: a method from outside (one module's
worth of code: a name, a typed settings dataclass, a compute function) runs through
``attribute()``, a preset and a results table; a task family of one's own runs through the same
synthetic pipeline and tables as families A and B."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from datasets import Dataset

from conftest import needs_mirror


# ----------------------------------------------------------------------------- a toy method, outside the package

@dataclass(frozen=True)
class OverlapSettings:
    """Bag-of-words overlap: Jaccard similarity of the token-id sets (``binary``) or of counts."""

    binary: bool = True


def overlap(problem, settings: OverlapSettings):
    from untrac.methods import Cost

    def bag(ds: Dataset) -> set[int]:
        return {t for ids in ds["input_ids"] for t in ids}

    trains = {k: bag(ds) for k, ds in problem.train_sets.items()}
    tests = {k: bag(ds) for k, ds in problem.test_sets.items()}
    values = np.array([[len(a & b) / len(a | b) for b in tests.values()] for a in trains.values()])
    return problem.influence("Overlap", values, Cost(), settings)


@pytest.fixture
def toy_method():
    import untrac
    from untrac.methods import unregister

    method = untrac.register_method(untrac.Method("Overlap", OverlapSettings(), overlap, order=200))
    yield method
    unregister("Overlap")


def _exact_overlap(train_sets, test_sets) -> np.ndarray:
    bags = lambda ds: {t for ids in ds["input_ids"] for t in ids}  # noqa: E731
    return np.array([[len(bags(a) & bags(b)) / len(bags(a) | bags(b)) for b in test_sets.values()]
                     for a in train_sets.values()])


def test_a_method_from_outside_runs_through_attribute(tiny, toy_method):
    import untrac

    model, train_sets, test_sets, pad = tiny
    inf = untrac.attribute("Overlap", model, train_sets, test_sets, pad)
    np.testing.assert_allclose(inf.values, _exact_overlap(train_sets, test_sets))
    assert inf.method == "Overlap" and inf.config == {"binary": True}
    with pytest.raises(ValueError, match=r"method 'Overlap' has no setting 'damping'.*\['binary'\]"):
        untrac.attribute("Overlap", model, train_sets, test_sets, pad, damping=0.1)
    with pytest.raises(ValueError, match="a method named 'Overlap' exists"):
        untrac.register_method(untrac.Method("Overlap", OverlapSettings(), overlap))


def test_misspelled_settings_of_a_builtin_method_name_it(tiny):
    import untrac

    model, train_sets, test_sets, pad = tiny
    with pytest.raises(ValueError, match=r"method 'GradDot' has no setting 'damping'"):
        untrac.attribute("GradDot", model, train_sets, test_sets, pad, damping=0.1)
    with pytest.raises(ValueError, match=r"unknown method 'GradDott'"):
        untrac.attribute("GradDott", model, train_sets, test_sets, pad)
    with pytest.raises(ValueError, match="TracIn needs the checkpoints.*checkpoint_every"):
        untrac.attribute("TracIn", model, train_sets, test_sets, pad)


# ----------------------------------------------------------------------------- a family of one's own

WORDS = ["apple", "river", "stone", "cloud", "table", "green", "light", "music", "paper", "house", "water", "night"]


def reverse_family(n: int, seed: int) -> dict[str, Dataset]:
    """Test: reverse a word. Training: the same task, the same task worded differently,
    upper-casing (same format, another task), and counting letters."""
    rng = np.random.default_rng(seed)
    words = lambda: [WORDS[i] for i in rng.integers(0, len(WORDS), n)]  # noqa: E731

    def ds(prompt: str, answer) -> Dataset:
        ws = words()
        return Dataset.from_dict({"prompt": [prompt.format(w) for w in ws], "target": [" " + answer(w) for w in ws]})

    return {
        "test": ds("Reverse the word {}.", lambda w: w[::-1]),
        "reverse": ds("Reverse the word {}.", lambda w: w[::-1]),
        "backwards": ds("Write {} backwards:", lambda w: w[::-1]),
        "upper": ds("Upper-case the word {}.", str.upper),
        "count": ds("How many letters has {}?", lambda w: str(len(w))),
    }


@needs_mirror
def test_a_custom_family_and_method_run_through_the_pipeline_and_tables(toy_method):
    import untrac
    from untrac import evaluate, report
    from untrac.experiments import synthetic

    synthetic.register_family("R", reverse_family)
    try:
        p = untrac.preset("synthetic", "smoke", families=("R",), runs=2, baselines={"Overlap": {"binary": True}})
        results = synthetic.synthetic_experiment(p, methods=("UnTrac", "GradDot", "Overlap"), progress=False)
        assert list(results) == ["R"] and len(results["R"]) == 2
        run = results["R"][1]
        assert run["Ground truth"].train_names == ["reverse", "backwards", "upper", "count"]
        # run 1 trains with seeds 1 and 2: the methods see seed 1's model, the truth is seed 2's, the ceiling seed 1's
        tokenizer, base = synthetic.synthetic_setup(p, progress=False)
        _, train_sets, test_sets = synthetic.synthetic_data(p, "R", 1, tokenizer, base)
        per_seed = synthetic.synthetic_truths(p, train_sets, test_sets, 1, tokenizer.pad_token_id, base, progress=False)
        assert synthetic.run_seeds(p, 1) == list(per_seed) == [1, 2]
        np.testing.assert_array_equal(run["Ground truth"].values, per_seed[2][1].values)
        np.testing.assert_array_equal(run[evaluate.CEILING].values, per_seed[1][1].values)
        graddot = untrac.attribute("GradDot", per_seed[1][0].model, train_sets, test_sets, tokenizer.pad_token_id)
        np.testing.assert_allclose(run["GradDot"].values, graddot.values, rtol=1e-6)
        noise = synthetic.synthetic_noise_floor(p, progress=False)
        assert list(noise[["family", "run"]].itertuples(index=False, name=None)) == [("R", 0), ("R", 1)]
        assert noise.loc[1, "seed_sd"] == pytest.approx(np.abs(per_seed[2][1].values - per_seed[1][1].values).mean() / np.sqrt(2))
    finally:
        synthetic._FAMILIES.pop("R")
    corr = evaluate.correlation_table(results["R"])
    table = report.mean_std(corr.assign(family="R"), "method", "family", "pearson")
    assert list(table["method"]) == ["UnTrac", "GradDot", "Overlap", evaluate.CEILING]
    z = evaluate.standardised_frame(results)
    assert set(z["method"]) == {"Ground truth", "UnTrac", "GradDot", "Overlap", evaluate.CEILING}
    with pytest.raises(ValueError, match="one of the package's"):
        synthetic.register_family("A", reverse_family)
