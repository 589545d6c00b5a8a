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

The words come from WordNet 3.0: the lemmas of exactly one part of speech (:func:`unambiguous_words`).
Those of 4-14 letters are packaged with untrac (``untrac/data/wordnet/``, WordNet licence beside
them), so both families need no data mirror; they are regenerated from the mirror's
``wordnet/index.*`` files by :func:`write_word_lists` and give the same words.
"""
from __future__ import annotations

import gzip
import string
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
from datasets import Dataset

from .mirror import ENV_VAR, MirrorError, mirror_file, verify_file

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
POS = ("noun", "verb", "adj", "adv")
TRAIN_NAMES = ("train1", "train2", "train3", "train4")
FAMILIES = ("A", "B")
WORD_LENGTHS = (4, 14)
"""The word lengths (in letters, inclusive) of the packaged word lists."""
WORDS_RESOURCE = "wordnet/unambiguous_words.tsv.gz"
"""The packaged word lists, a resource of :mod:`untrac.data`: gzipped ``pos<TAB>word`` lines."""


def spell(n: int) -> str:
    """A number spelled digit by digit: 510 -> 'five one zero'."""
    return " ".join(DIGIT_WORDS[int(d)] for d in str(n))


def _read_index(path: str | Path) -> frozenset[str]:
    with open(path, encoding="utf-8") as f:
        return frozenset(line.split(" ", 1)[0] for line in f if line.strip() and not line.startswith("  "))


def read_wordnet(root: str | Path) -> dict[str, frozenset[str]]:
    """Lemmas of each part of speech from ``root/wordnet/index.*`` (checked like mirror files)."""
    root = Path(root).expanduser()
    for pos in POS:
        if not (root / f"wordnet/index.{pos}").is_file():
            raise MirrorError(f"{root / f'wordnet/index.{pos}'} not found: {root} has no WordNet index files.")
        verify_file(root, f"wordnet/index.{pos}")
    return {pos: _read_index(root / f"wordnet/index.{pos}") for pos in POS}


@lru_cache(maxsize=1)
def wordnet_lemmas() -> dict[str, frozenset[str]]:
    """Lemmas of each part of speech, from the mirror's ``wordnet/index.*`` or NLTK's WordNet."""
    try:
        paths = {pos: mirror_file(f"wordnet/index.{pos}") for pos in POS}
    except MirrorError as err:
        raise MirrorError(f"{err} (WordNet is needed beyond the packaged word lists of the synthetic tasks)") from err
    if all(p is not None for p in paths.values()):
        return {pos: _read_index(path) for pos, path in paths.items()}
    try:  # online fallback: NLTK's WordNet corpus (nltk.download("wordnet"))
        from nltk.corpus import wordnet as wn

        tags = {"noun": wn.NOUN, "verb": wn.VERB, "adj": wn.ADJ, "adv": wn.ADV}
        return {pos: frozenset(wn.all_lemma_names(pos=t)) for pos, t in tags.items()}
    except (ImportError, LookupError) as err:
        raise MirrorError(
            f"WordNet not found: set {ENV_VAR} to a data mirror with wordnet/index.* files, "
            "or install nltk and run nltk.download('wordnet')"
        ) from err


def _unambiguous(lemmas: dict[str, frozenset[str]], min_len: int, max_len: int) -> dict[str, list[str]]:
    out = {}
    for pos in POS:
        others = frozenset().union(*(lemmas[p] for p in POS if p != pos))
        out[pos] = sorted(
            w for w in lemmas[pos] - others if w.isalpha() and w.isascii() and w.islower() and min_len <= len(w) <= max_len
        )
    return out


def packaged_words_path() -> Path:
    """Where the packaged word lists live (in the installed package)."""
    return Path(str(resources.files("untrac.data"))) / WORDS_RESOURCE


@lru_cache(maxsize=1)
def packaged_words() -> dict[str, tuple[str, ...]]:
    """The packaged word lists: ``unambiguous_words(*WORD_LENGTHS, source="wordnet")``, stored."""
    try:
        text = gzip.decompress(resources.files("untrac.data").joinpath(WORDS_RESOURCE).read_bytes()).decode("utf-8")
    except OSError as err:
        raise MirrorError(f"the packaged word lists untrac/data/{WORDS_RESOURCE} are missing ({err}): reinstall "
                          f"untrac, or pass source='wordnet' with {ENV_VAR} set to a data mirror") from err
    words: dict[str, list[str]] = {pos: [] for pos in POS}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            pos, word = line.split("\t")
            words[pos].append(word)
    return {pos: tuple(ws) for pos, ws in words.items()}


def write_word_lists(path: str | Path | None = None, mirror: str | Path | None = None) -> Path:
    """Write the packaged word lists (default: :func:`packaged_words_path`) from WordNet: the
    mirror at ``mirror`` (default: :func:`wordnet_lemmas`, i.e. ``$UNTRAC_DATA_DIR`` or NLTK)."""
    lemmas = read_wordnet(mirror) if mirror is not None else wordnet_lemmas()
    words = _unambiguous(lemmas, *WORD_LENGTHS)
    lines = [f"# WordNet 3.0 lemmas of exactly one part of speech, alphabetic lower-case ASCII, "
             f"{WORD_LENGTHS[0]}-{WORD_LENGTHS[1]} letters; written by untrac.data.synthetic.write_word_lists; "
             "licence: LICENSE beside this file"]
    lines += [f"{pos}\t{w}" for pos in POS for w in words[pos]]
    path = Path(path) if path is not None else packaged_words_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), compresslevel=9, mtime=0))
    packaged_words.cache_clear()
    return path


def unambiguous_words(min_len: int = 4, max_len: int = 14, *,
                      source: Literal["auto", "packaged", "wordnet"] = "auto") -> dict[str, list[str]]:
    """Alphabetic lower-case lemmas that belong to exactly one part of speech, sorted.

    ``source="wordnet"`` computes them from WordNet (:func:`wordnet_lemmas`: the mirror or NLTK);
    ``"packaged"`` filters the packaged lists (lengths within :data:`WORD_LENGTHS` only); ``"auto"``
    uses the packaged lists when they cover the lengths, else WordNet.  Both give the same words.
    """
    if source not in ("auto", "packaged", "wordnet"):
        raise ValueError(f"source must be 'auto', 'packaged' or 'wordnet', not {source!r}")
    covered = WORD_LENGTHS[0] <= min_len and max_len <= WORD_LENGTHS[1]
    if source == "packaged" and not covered:
        raise ValueError(f"the packaged word lists cover {WORD_LENGTHS[0]}-{WORD_LENGTHS[1]} letters only")
    if source == "wordnet" or not covered:
        return _unambiguous(wordnet_lemmas(), min_len, max_len)
    return {pos: [w for w in ws if min_len <= len(w) <= max_len] for pos, ws in packaged_words().items()}


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
