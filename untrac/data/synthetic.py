"""The synthetic task families A and B of paper Sec. 5.1 (Table 1), generated from a seed.

Each family has one test set (task P, format P) and four training sets of ``n`` examples:
1 = similar task, same format (P/P); 2 = similar task, other format (P/Q);
3 = unrelated task, same format (Q/P); 4 = unrelated task, other format (Q/Q).

A: successor of a number.  test "What is the number that comes after N?" (N in 512..767, digits);
   train 1/2 "Determine the number that succeeds <N digit by digit>." with even / odd N < 512,
   answered in digits / in words (digit by digit); train 3/4 "Determine the length of '<noun>'."
   in digits / in words, over two disjoint sets of nouns of 4-14 letters.
B: the character left after removing four.  test: five distinct letters; train 1: four digits and
   one letter a-m (answer: the letter); train 2: five digits (answer: the digit); train 3/4: part
   of speech with lettered (nouns, verbs) / numbered (adjectives, adverbs) choices, from WordNet.
"""
from __future__ import annotations

import string
from functools import lru_cache

import numpy as np
from datasets import Dataset

from .mirror import ENV_VAR, MirrorError, mirror_file

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
POS = ("noun", "verb", "adj", "adv")
TRAIN_NAMES = ("train1", "train2", "train3", "train4")
FAMILIES = ("A", "B")


def spell(n: int) -> str:
    """A number spelled digit by digit: 510 -> 'five one zero'."""
    return " ".join(DIGIT_WORDS[int(d)] for d in str(n))


@lru_cache(maxsize=1)
def wordnet_lemmas() -> dict[str, frozenset[str]]:
    """Lemmas of each part of speech, from the mirror's ``wordnet/index.*`` or NLTK's WordNet."""
    try:
        paths = {pos: mirror_file(f"wordnet/index.{pos}") for pos in POS}
    except MirrorError as err:
        raise MirrorError(f"{err} (WordNet is needed for synthetic family B and nouns of family A)") from err
    if all(p is not None for p in paths.values()):
        lemmas = {}
        for pos, path in paths.items():
            with open(path, encoding="utf-8") as f:
                lemmas[pos] = frozenset(line.split(" ", 1)[0] for line in f if line.strip() and not line.startswith("  "))
        return lemmas
    try:  # online fallback: NLTK's WordNet corpus (nltk.download("wordnet"))
        from nltk.corpus import wordnet as wn

        tags = {"noun": wn.NOUN, "verb": wn.VERB, "adj": wn.ADJ, "adv": wn.ADV}
        return {pos: frozenset(wn.all_lemma_names(pos=t)) for pos, t in tags.items()}
    except (ImportError, LookupError) as err:
        raise MirrorError(
            f"WordNet not found: set {ENV_VAR} to a data mirror with wordnet/index.* files, "
            "or install nltk and run nltk.download('wordnet')"
        ) from err


def unambiguous_words(min_len: int = 4, max_len: int = 14) -> dict[str, list[str]]:
    """Alphabetic lower-case lemmas that belong to exactly one part of speech, sorted."""
    lemmas = wordnet_lemmas()
    out = {}
    for pos in POS:
        others = frozenset().union(*(lemmas[p] for p in POS if p != pos))
        out[pos] = sorted(
            w for w in lemmas[pos] - others if w.isalpha() and w.isascii() and w.islower() and min_len <= len(w) <= max_len
        )
    return out


def _family_a(n: int, rng: np.random.Generator) -> dict[str, list[tuple[str, str]]]:
    def successor(numbers: np.ndarray, as_words: bool) -> list[tuple[str, str]]:
        return [
            (f"Determine the number that succeeds {spell(int(x))}. Provide your answer in {'words' if as_words else 'numerical form'}.",
             spell(int(x) + 1) if as_words else str(int(x) + 1))
            for x in numbers
        ]

    def length(nouns: list[str], as_words: bool) -> list[tuple[str, str]]:
        return [
            (f"Determine the length of '{w}'. Provide your answer in {'words' if as_words else 'numerical form'}.",
             spell(len(w)) if as_words else str(len(w)))
            for w in nouns
        ]

    nouns = unambiguous_words()["noun"]
    if len(nouns) < 2 * n:
        raise ValueError(f"only {len(nouns)} nouns available for 2 x {n} examples")
    picked = [nouns[i] for i in rng.choice(len(nouns), 2 * n, replace=False)]
    evens, odds, tests = np.arange(0, 512, 2), np.arange(1, 512, 2), np.arange(512, 768)
    return {
        "test": [(f"What is the number that comes after {int(x)}?", str(int(x) + 1)) for x in rng.choice(tests, n, replace=n > len(tests))],
        "train1": successor(rng.choice(evens, n, replace=n > len(evens)), False),
        "train2": successor(rng.choice(odds, n, replace=n > len(odds)), True),
        "train3": length(picked[:n], False),
        "train4": length(picked[n:], True),
    }


def _quoted(chars: list[str]) -> str:
    return ", ".join(f"'{c}'" for c in chars)


def _family_b(n: int, rng: np.random.Generator) -> dict[str, list[tuple[str, str]]]:
    letters, digits = list(string.ascii_lowercase), list(string.digits)

    def removal(pool_for_kept: list[str], removed_pool: list[str], test: bool) -> tuple[str, str]:
        kept = str(rng.choice(pool_for_kept))
        removed = [str(c) for c in rng.choice([c for c in removed_pool if c != kept], 4, replace=False)]
        shown = removed + [kept]
        rng.shuffle(shown)
        word = "".join(shown)
        order = list(removed)
        rng.shuffle(order)
        if test:
            return f"What letter remains in '{word}' after extracting {_quoted(order)}?", kept
        return f"Identify the character left after removing {_quoted(order)} from '{word}'.", kept

    words = unambiguous_words()
    half = n // 2

    def pick(pos: str, k: int) -> list[str]:
        return [words[pos][i] for i in rng.choice(len(words[pos]), k, replace=False)]

    lettered = [(w, "a") for w in pick("noun", n - half)] + [(w, "b") for w in pick("verb", half)]
    numbered = [(w, "2") for w in pick("adj", n - half)] + [(w, "3") for w in pick("adv", half)]
    rng.shuffle(lettered)
    rng.shuffle(numbered)
    return {
        "test": [removal(letters, letters, True) for _ in range(n)],
        "train1": [removal(letters[:13], digits, False) for _ in range(n)],
        "train2": [removal(digits, digits, False) for _ in range(n)],
        "train3": [(f"Identify the part of speech of '{w}'. Select your answer with the associated letter. "
                    "Choices: a. noun b. verb c. adjective d. adverb", a) for w, a in lettered],
        "train4": [(f"Identify the part of speech of '{w}'. Select your answer with the associated number. "
                    "Choices: 0. noun 1. verb 2. adjective 3. adverb", a) for w, a in numbered],
    }


def synthetic_task(family: str, n: int = 256, seed: int = 0) -> dict[str, Dataset]:
    """Test set and four training sets of family ``"A"`` or ``"B"`` (Table 1), ``n`` examples each.

    Returns ``{"test": ..., "train1": ..., "train4": ...}``; every dataset has the columns
    ``prompt``, ``target`` (the answer, with a leading space) and ``subset``. Deterministic in
    ``seed``.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown synthetic family {family!r}; choose from {FAMILIES}")
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    rng = np.random.default_rng([seed, ord(family)])
    parts = (_family_a if family == "A" else _family_b)(n, rng)
    return {
        name: Dataset.from_dict({"prompt": [p for p, _ in rows], "target": [" " + a for _, a in rows], "subset": [name] * len(rows)})
        for name, rows in parts.items()
    }
