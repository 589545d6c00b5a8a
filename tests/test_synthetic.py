"""The generator of paper Table 1: templates, answers, ranges, disjointness, determinism, and the
packaged WordNet word lists (no mirror needed; identical to the mirror's)."""
from __future__ import annotations

import re

import pytest

from conftest import MIRROR, needs_mirror


def _task(family, n=256, seed=0):
    from untrac.data.synthetic import synthetic_task

    return synthetic_task(family, n, seed)


def _words_to_int(text: str) -> int:
    from untrac.data.synthetic import DIGIT_WORDS

    return int("".join(str(DIGIT_WORDS.index(w)) for w in text.split()))


def test_family_a_answers_are_right():
    d = _task("A")
    assert set(d) == {"test", "train1", "train2", "train3", "train4"}
    assert all(len(v) == 256 for v in d.values())
    for row in d["test"]:
        n = int(re.fullmatch(r"What is the number that comes after (\d+)\?", row["prompt"]).group(1))
        assert 512 <= n <= 767 and row["target"] == f" {n + 1}"
    for name, parity, words in (("train1", 0, False), ("train2", 1, True)):
        for row in d[name]:
            m = re.fullmatch(r"Determine the number that succeeds ([a-z ]+)\. Provide your answer in (words|numerical form)\.", row["prompt"])
            n = _words_to_int(m.group(1))
            assert n % 2 == parity and 0 <= n <= 511
            assert m.group(2) == ("words" if words else "numerical form")
            assert (_words_to_int(row["target"]) if words else int(row["target"])) == n + 1
    nouns = []
    for name, words in (("train3", False), ("train4", True)):
        for row in d[name]:
            w = re.fullmatch(r"Determine the length of '([a-z]+)'\. Provide your answer in .*\.", row["prompt"]).group(1)
            assert 4 <= len(w) <= 14
            assert (_words_to_int(row["target"]) if words else int(row["target"])) == len(w)
            nouns.append((name, w))
    three = {w for n, w in nouns if n == "train3"}
    four = {w for n, w in nouns if n == "train4"}
    assert len(three) == len(four) == 256 and not three & four


@needs_mirror
def test_family_b_answers_are_right():
    from untrac.data.synthetic import wordnet_lemmas

    d = _task("B")
    for row in d["test"]:
        m = re.fullmatch(r"What letter remains in '([a-z]{5})' after extracting '(.)', '(.)', '(.)', '(.)'\?", row["prompt"])
        word, removed = m.group(1), set(m.groups()[1:])
        left = set(word) - removed
        assert len(set(word)) == 5 and removed < set(word) and row["target"] == f" {left.pop()}"
    for name, kept_class in (("train1", "abcdefghijklm"), ("train2", "0123456789")):
        for row in d[name]:
            m = re.fullmatch(r"Identify the character left after removing '(.)', '(.)', '(.)', '(.)' from '(.{5})'\.", row["prompt"])
            removed, word = set(m.groups()[:4]), m.group(5)
            assert removed <= set("0123456789")
            (left,) = set(word) - removed
            assert left in kept_class and row["target"] == f" {left}"
    lemmas = wordnet_lemmas()
    for name, answers in (("train3", {"a": "noun", "b": "verb"}), ("train4", {"2": "adj", "3": "adv"})):
        seen = set()
        for row in d[name]:
            w = re.search(r"part of speech of '([a-z]+)'", row["prompt"]).group(1)
            pos = answers[row["target"].strip()]
            assert w in lemmas[pos] and not any(w in lemmas[p] for p in lemmas if p != pos)
            seen.add(pos)
        assert seen == set(answers.values())


def test_generator_is_deterministic_and_seeded():
    a, b, c = _task("A", 32, 1), _task("A", 32, 1), _task("A", 32, 2)
    assert a["train3"]["prompt"] == b["train3"]["prompt"]
    assert a["train3"]["prompt"] != c["train3"]["prompt"]
    assert set(a["train1"]["subset"]) == {"train1"}


def test_bad_family_and_size():
    from untrac.data.synthetic import synthetic_task

    with pytest.raises(ValueError, match="unknown synthetic family"):
        synthetic_task("C")
    with pytest.raises(ValueError, match="positive"):
        synthetic_task("A", 0)


def test_missing_wordnet_names_the_env_var(tmp_path, monkeypatch):
    from untrac.data import synthetic
    from untrac.data.mirror import MirrorError

    synthetic.wordnet_lemmas.cache_clear()
    monkeypatch.setenv("UNTRAC_DATA_DIR", str(tmp_path))
    try:
        with pytest.raises(MirrorError, match="UNTRAC_DATA_DIR"):
            synthetic.unambiguous_words(source="wordnet")
        assert len(synthetic.synthetic_task("B", 4)["train3"]) == 4  # the packaged words suffice
    finally:
        synthetic.wordnet_lemmas.cache_clear()


def test_synthetic_tasks_need_no_mirror(monkeypatch):
    from untrac.data import synthetic

    def no_wordnet():
        raise AssertionError("WordNet must not be read")

    monkeypatch.delenv("UNTRAC_DATA_DIR", raising=False)
    monkeypatch.setattr(synthetic, "wordnet_lemmas", no_wordnet)
    for family in ("A", "B"):
        assert all(len(d) == 16 for d in synthetic.synthetic_task(family, 16, seed=3).values())
    words = synthetic.unambiguous_words()
    assert [len(words[pos]) for pos in synthetic.POS] == [46049, 4195, 14186, 2961]
    assert synthetic.unambiguous_words(5, 6)["verb"] == [w for w in words["verb"] if 5 <= len(w) <= 6]
    with pytest.raises(ValueError, match="4-14"):
        synthetic.unambiguous_words(3, 14, source="packaged")
    with pytest.raises(ValueError, match="source"):
        synthetic.unambiguous_words(source="nltk")  # type: ignore[arg-type]


@needs_mirror
def test_packaged_words_are_the_mirrors(monkeypatch, tmp_path):
    from untrac.data import synthetic

    assert synthetic.unambiguous_words(source="packaged") == synthetic.unambiguous_words(source="wordnet")
    regenerated = synthetic.write_word_lists(tmp_path / "words.tsv.gz", MIRROR)
    assert regenerated.read_bytes() == synthetic.packaged_words_path().read_bytes()


@needs_mirror
@pytest.mark.parametrize("family", ["A", "B"])
def test_tasks_are_identical_to_the_mirror_based_generation(monkeypatch, family):
    from untrac.data import synthetic

    packaged = {seed: synthetic.synthetic_task(family, 256, seed) for seed in (0, 1)}
    from_mirror = synthetic.unambiguous_words(source="wordnet")
    monkeypatch.setattr(synthetic, "unambiguous_words", lambda: from_mirror)
    for seed, parts in packaged.items():
        mirrored = synthetic.synthetic_task(family, 256, seed)
        assert {k: v.to_dict() for k, v in mirrored.items()} == {k: v.to_dict() for k, v in parts.items()}
