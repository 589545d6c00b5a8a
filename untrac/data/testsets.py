"""The test sets of Section 5.2: ToxiGen, WinoBias and TruthfulQA, split into subsets.

The paper measures the influence of each pretraining corpus on "the negative log-probability of
toxic language, biased text, and false answers", and averages the correlation with the ground
truth over subsets: 13 ToxiGen target groups, 4 WinoBias subsets and 9 TruthfulQA categories
(Section 5.2, "Results"), with 256 examples per subset (spec section 2).

Every loader returns a ``datasets.Dataset`` with three string columns:

* ``prompt`` -- context that is fed to the model but not scored (``""`` when the whole text counts);
* ``target`` -- the text whose tokens' loss counts (the continuation of ``prompt``);
* ``subset`` -- the subset name.

Rows are grouped by subset (in the order of :func:`subset_names`) and keep the source order within
a subset.  With ``UNTRAC_DATA_DIR`` set the mirror's ``testsets/*.jsonl`` are read, otherwise the
hub sources (every id is a field of the ``*Source`` dataclasses, so another copy can be used).
:func:`raw_records` returns the records in the mirror's schema, from either place.
"""
from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from untrac.data.mirror import HubSource, Origin, load_hub, read_jsonl, use_mirror

# --------------------------------------------------------------------------------------------
# Sources (hub ids are settings, defaulting to the paper's data)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToxigenSource:
    """ToxiGen on the hub: the paper used the 250k machine-generated ``train`` split, keeping the
    generations of hateful prompts (``prompt_label == 1``).  The repository is gated: accept its
    terms on the hub and log in (``huggingface-cli login``) first."""

    hub: HubSource = HubSource("skg/toxigen-data", "train", split="train", text_field="generation")
    group_field: str = "group"
    label_field: str = "prompt_label"
    toxic_value: Any = 1
    mirror_file: str = "testsets/toxigen.jsonl"


@dataclass(frozen=True)
class WinoBiasSource:
    """WinoBias on the hub (Parquet), one config per type and stereotype, CoNLL-style tokens."""

    path: str = "uclanlp/wino_bias"
    revision: str | None = None
    config_template: str = "type{type}_{stereotype}"
    splits: tuple[tuple[str, str], ...] = (("dev", "validation"), ("test", "test"))
    """(mirror split name, hub split name) pairs."""
    tokens_field: str = "tokens"
    clusters_field: str = "coreference_clusters"
    mirror_file: str = "testsets/winobias.jsonl"

    def hub(self, type_: int, stereotype: str, split: str) -> HubSource:
        """The :class:`HubSource` of one (type, stereotype, mirror split) part."""
        hub_split = dict(self.splits)[split]
        return HubSource(self.path, self.config_template.format(type=type_, stereotype=stereotype),
                         split=hub_split, revision=self.revision, text_field=self.tokens_field)


@dataclass(frozen=True)
class TruthfulQASource:
    """TruthfulQA on the hub: ``truthfulqa/truthful_qa`` (Parquet), config ``generation``,
    817 questions in the ``validation`` split (the schema of the mirror file)."""

    hub: HubSource = HubSource("truthfulqa/truthful_qa", "generation", split="validation",
                               text_field="question")
    mirror_file: str = "testsets/truthfulqa.jsonl"


TOXIGEN_SOURCE = ToxigenSource()
WINOBIAS_SOURCE = WinoBiasSource()
TRUTHFULQA_SOURCE = TruthfulQASource()

TOXIGEN_GROUPS: tuple[str, ...] = (
    "asian", "black", "chinese", "jewish", "latino", "lgbtq", "mental_dis", "mexican",
    "middle_east", "muslim", "native_american", "physical_dis", "women")
"""The 13 ToxiGen target groups (the subsets of :func:`load_toxigen`)."""

WINOBIAS_SUBSETS: tuple[str, ...] = ("pro_female", "pro_male", "anti_female", "anti_male")
"""The 4 WinoBias subsets: stereotype x pronoun gender."""

TRUTHFULQA_CATEGORIES: tuple[str, ...] = (
    "confusion", "conspiracies", "economics", "health", "indexical_error", "law",
    "misconceptions", "paranormal", "sociology")
"""The 9 TruthfulQA categories with >= 128 (question, incorrect answer) pairs."""

FEMALE_PRONOUNS = frozenset({"she", "her", "hers", "herself"})
MALE_PRONOUNS = frozenset({"he", "his", "him", "himself"})

_WORD = re.compile(r"[A-Za-z]+")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def subset_seed(seed: int, subset: str) -> int:
    """The sampling seed of one subset, derived from ``seed`` and the subset's name, so that a
    subset's sample does not depend on which other subsets exist."""
    state = np.random.SeedSequence([seed, zlib.crc32(subset.encode("utf-8"))]).generate_state(1)
    return int(state[0])


def _sample(items: list[Any], k: int | None, seed: int, subset: str) -> list[Any]:
    """Up to ``k`` of ``items`` drawn without replacement (seeded per subset), in source order."""
    if k is None or len(items) <= k:
        return list(items)
    chosen = np.sort(np.random.default_rng(subset_seed(seed, subset)).choice(len(items), k,
                                                                             replace=False))
    return [items[i] for i in chosen]


def _dataset(groups: Mapping[str, list[tuple[str, str]]], order: Sequence[str],
             max_per_subset: int | None, seed: int):
    """Build the ``prompt``/``target``/``subset`` dataset from ``{subset: [(prompt, target)]}``."""
    import datasets

    if max_per_subset is not None and max_per_subset < 1:
        raise ValueError(f"max_per_subset must be a positive integer or None, got {max_per_subset}")
    columns: dict[str, list[str]] = {"prompt": [], "target": [], "subset": []}
    for subset in order:
        for prompt, target in _sample(groups[subset], max_per_subset, seed, subset):
            columns["prompt"].append(prompt)
            columns["target"].append(target)
            columns["subset"].append(subset)
    if not columns["subset"]:
        raise ValueError("the test set has no examples after filtering")
    features = datasets.Features({name: datasets.Value("string") for name in columns})
    return datasets.Dataset.from_dict(columns, features=features)


def subset_names(dataset) -> list[str]:
    """The subsets of a test-set dataset, in order of first appearance."""
    return list(dict.fromkeys(dataset["subset"]))


def _dedupe(items: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


# --------------------------------------------------------------------------------------------
# ToxiGen
# --------------------------------------------------------------------------------------------


def _toxigen_raw(origin: Origin = "auto", source: ToxigenSource = TOXIGEN_SOURCE,
                 max_per_group: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    if use_mirror(origin):
        records = read_jsonl(source.mirror_file, {"text": str, "group": str, "label": str})
    else:
        hub = load_hub(source.hub)
        for name in (source.hub.text_field, source.group_field, source.label_field):
            if name not in hub.column_names:
                raise ValueError(f"{source.hub.describe()} has no column {name!r} "
                                 f"(columns: {hub.column_names}); adjust ToxigenSource")
        hub = hub.select_columns([source.hub.text_field, source.group_field, source.label_field])
        hub = hub.filter(lambda batch: [v == source.toxic_value for v in batch[source.label_field]],
                         batched=True)
        records = [{"text": row[source.hub.text_field], "group": row[source.group_field],
                    "label": "hate", "toxicity_human": None, "toxicity_ai": None}
                   for row in hub if isinstance(row[source.hub.text_field], str)]
    if max_per_group is not None:
        by_group: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            by_group.setdefault(record["group"], []).append(record)
        records = [record for group in sorted(by_group)
                   for record in _sample(by_group[group], max_per_group, seed, group)]
    return records


def load_toxigen(max_per_subset: int | None = 256, seed: int = 0, min_words: int = 9,
                 max_words: int = 24, *, origin: Origin = "auto",
                 source: ToxigenSource = TOXIGEN_SOURCE):
    """Toxic ToxiGen statements of ``min_words``..``max_words`` words, one subset per target group.

    Section 5.2: the loss is taken over the whole statement (``prompt=""``, ``target`` = text).
    Mirror: the human-annotated statements with ``label == "hate"``; hub: the generations of the
    ``train`` split whose ``prompt_label == 1`` (the paper's data).  Words are whitespace-separated
    tokens, bounds inclusive; texts are stripped and de-duplicated within a group.  Up to
    ``max_per_subset`` statements per group (all when ``None``) are sampled with ``seed``.
    """
    if min_words > max_words:
        raise ValueError(f"min_words={min_words} > max_words={max_words}")
    groups: dict[str, list[str]] = {}
    for record in _toxigen_raw(origin, source):
        if record["label"] != "hate":
            continue
        text = record["text"].strip()
        if min_words <= len(text.split()) <= max_words:
            groups.setdefault(record["group"], []).append(text)
    pairs = {group: [("", text) for text in _dedupe(texts)] for group, texts in groups.items()}
    return _dataset(pairs, sorted(pairs), max_per_subset, seed)


# --------------------------------------------------------------------------------------------
# WinoBias
# --------------------------------------------------------------------------------------------


def detokenize(tokens: Sequence[str]) -> str:
    """Join CoNLL-style tokens into a sentence (no space before punctuation and clitics)."""
    text = " ".join(tokens)
    text = re.sub(r" ([.,;:!?%)\]])", r"\1", text)
    text = re.sub(r"([(\[$]) ", r"\1", text)
    return re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", text, flags=re.IGNORECASE)


def _winobias_marked(tokens: Sequence[str], clusters: Sequence[Any]) -> str:
    """The sentence with the coreferent entity and pronoun in brackets, as in the original
    WinoBias files; ``clusters`` holds inclusive token spans as flat (start, end) pairs."""
    try:
        spans = [(int(clusters[i]), int(clusters[i + 1])) for i in range(0, len(clusters) - 1, 2)]
    except (TypeError, ValueError):
        spans = []
    out = list(tokens)
    for start, end in spans:
        if 0 <= start <= end < len(out):
            out[start] = "[" + out[start]
            out[end] = out[end] + "]"
    return detokenize(out)


def _winobias_raw(origin: Origin = "auto", source: WinoBiasSource = WINOBIAS_SOURCE,
                  types: Sequence[int] = (1, 2)) -> list[dict[str, Any]]:
    if use_mirror(origin):
        return read_jsonl(source.mirror_file, {"text": str, "type": int, "stereotype": str,
                                               "split": str})
    records = []
    for type_ in types:
        for stereotype in ("pro", "anti"):
            for split, _hub_split in source.splits:
                hub = source.hub(type_, stereotype, split)
                for row in load_hub(hub):
                    tokens = list(row[source.tokens_field])
                    records.append({
                        "text": detokenize(tokens),
                        "marked": _winobias_marked(tokens, row.get(source.clusters_field) or []),
                        "type": type_, "stereotype": stereotype, "split": split})
    return records


def pronoun_gender(text: str) -> str | None:
    """``"female"`` if ``text`` has only female pronouns (she/her/hers/herself), ``"male"`` if only
    male ones (he/his/him/himself), ``None`` if it has both or neither (whole words, any case)."""
    words = {w.lower() for w in _WORD.findall(text)}
    female, male = bool(words & FEMALE_PRONOUNS), bool(words & MALE_PRONOUNS)
    if female == male:
        return None
    return "female" if female else "male"


def load_winobias(max_per_subset: int | None = 256, seed: int = 0, *,
                  types: Sequence[int] = (1,), splits: Sequence[str] = ("dev", "test"),
                  origin: Origin = "auto", source: WinoBiasSource = WINOBIAS_SOURCE):
    """WinoBias type-1 sentences (dev + test) in 4 subsets: {pro, anti} x {female, male}.

    Section 5.2: the loss is taken over the whole sentence (``prompt=""``).  The gender is that of
    the pronouns in the sentence (:func:`pronoun_gender`): female = she/her (and hers/herself),
    male = he/his/him (and himself).  Sentences with pronouns of both genders are excluded (one in
    the data, a typo "since she he did not visit"), and so are exact duplicates within a subset (a
    few sentences occur in both dev and test).  Up to ``max_per_subset`` per subset, sampled with
    ``seed``; subsets are named ``pro_female``, ``pro_male``, ``anti_female``, ``anti_male``.
    """
    wanted_splits = set(splits)
    unknown = wanted_splits - {name for name, _ in source.splits}
    if unknown:
        raise ValueError(f"unknown WinoBias splits {sorted(unknown)}; valid: "
                         f"{[name for name, _ in source.splits]}")
    groups: dict[str, list[str]] = {name: [] for name in WINOBIAS_SUBSETS}
    for record in _winobias_raw(origin, source, types=tuple(types)):
        if record["type"] not in types or record["split"] not in wanted_splits:
            continue
        gender = pronoun_gender(record["text"])
        subset = f"{record['stereotype']}_{gender}"
        if gender is not None and subset in groups:
            groups[subset].append(record["text"].strip())
    pairs = {subset: [("", text) for text in _dedupe(texts)] for subset, texts in groups.items()}
    return _dataset(pairs, [s for s in WINOBIAS_SUBSETS if pairs[s]], max_per_subset, seed)


# --------------------------------------------------------------------------------------------
# TruthfulQA
# --------------------------------------------------------------------------------------------


def truthfulqa_category(category: str) -> str:
    """The paper's category name: lower-cased, ``Indexical Error: *`` -> ``indexical_error``,
    any ``*Confusion*`` -> ``confusion``."""
    name = category.strip().lower()
    if name.startswith("indexical error"):
        return "indexical_error"
    if "confusion" in name:
        return "confusion"
    return name


def _truthfulqa_raw(origin: Origin = "auto",
                    source: TruthfulQASource = TRUTHFULQA_SOURCE) -> list[dict[str, Any]]:
    if use_mirror(origin):
        return read_jsonl(source.mirror_file, {"question": str, "category": str,
                                               "incorrect_answers": list})
    fields = ("question", "category", "type", "best_answer", "correct_answers",
              "incorrect_answers", "source")
    return [{name: (list(row[name]) if isinstance(row.get(name), (list, tuple)) else row.get(name))
             for name in fields} for row in load_hub(source.hub)]


def load_truthfulqa(max_per_subset: int | None = 256, seed: int = 0, min_examples: int = 128, *,
                    origin: Origin = "auto", source: TruthfulQASource = TRUTHFULQA_SOURCE):
    """TruthfulQA as (question -> incorrect answer) pairs, one subset per category.

    Section 5.2: one example per (question, incorrect answer); the loss counts on the answer only:
    ``prompt`` = the question, ``target`` = ``" " + answer`` (the space separates the two when the
    scorer concatenates them).  Answers are stripped and de-duplicated per question.  Categories
    are normalised by :func:`truthfulqa_category` and only those with at least ``min_examples``
    pairs are kept (9 in the data: :data:`TRUTHFULQA_CATEGORIES`), sorted by name.  Up to
    ``max_per_subset`` pairs per category, sampled with ``seed``.
    """
    groups: dict[str, list[tuple[str, str]]] = {}
    for record in _truthfulqa_raw(origin, source):
        question = record["question"].strip()
        answers = _dedupe(a.strip() for a in record["incorrect_answers"]
                          if isinstance(a, str) and a.strip())
        category = truthfulqa_category(record["category"])
        groups.setdefault(category, []).extend((question, " " + answer) for answer in answers)
    kept = {name: pairs for name, pairs in groups.items() if len(pairs) >= min_examples}
    return _dataset(kept, sorted(kept), max_per_subset, seed)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

TESTSETS: Mapping[str, Callable[..., Any]] = {
    "toxigen": load_toxigen,
    "winobias": load_winobias,
    "truthfulqa": load_truthfulqa,
}
"""Test-set name -> loader (each returns ``prompt``/``target``/``subset`` examples)."""

_RAW: Mapping[str, Callable[..., list[dict[str, Any]]]] = {
    "toxigen": _toxigen_raw, "winobias": _winobias_raw, "truthfulqa": _truthfulqa_raw}

_MIRROR_FILES = {"toxigen": TOXIGEN_SOURCE.mirror_file, "winobias": WINOBIAS_SOURCE.mirror_file,
                 "truthfulqa": TRUTHFULQA_SOURCE.mirror_file}


def _check_name(name: str) -> None:
    if name not in TESTSETS:
        raise ValueError(f"unknown test set {name!r}; valid names: {', '.join(TESTSETS)}")


def load_testset(name: str, **kwargs: Any):
    """Load the test set ``name`` (``"toxigen"``, ``"winobias"`` or ``"truthfulqa"``)."""
    _check_name(name)
    return TESTSETS[name](**kwargs)


def raw_records(name: str, **kwargs: Any) -> list[dict[str, Any]]:
    """The records of test set ``name`` in the mirror's schema (from the mirror or the hub).

    Keyword arguments go to the reader: ``origin``, ``source``; for ToxiGen also
    ``max_per_group`` and ``seed`` (hub: only the toxic generations are returned); for WinoBias
    ``types``.  Used by :func:`untrac.data.write_mirror.write_mirror`.
    """
    _check_name(name)
    return _RAW[name](**kwargs)


def mirror_relpath(name: str) -> str:
    """The mirror path of test set ``name``, e.g. ``testsets/toxigen.jsonl``."""
    _check_name(name)
    return _MIRROR_FILES[name]


__all__ = [
    "FEMALE_PRONOUNS", "MALE_PRONOUNS", "TESTSETS", "TOXIGEN_GROUPS", "TOXIGEN_SOURCE",
    "TRUTHFULQA_CATEGORIES", "TRUTHFULQA_SOURCE", "ToxigenSource", "TruthfulQASource",
    "WINOBIAS_SOURCE", "WINOBIAS_SUBSETS", "WinoBiasSource", "detokenize", "load_testset",
    "load_toxigen", "load_truthfulqa", "load_winobias", "mirror_relpath", "pronoun_gender",
    "raw_records", "subset_names", "subset_seed", "truthfulqa_category",
]
