"""The pretraining mixture of Section 5.2: eight corpora, packed into fixed-length token blocks.

The paper trains OPT-125M from scratch on eight of OPT's pretraining corpora (BookCorpus,
CC-Stories, CCNewsV2 and five Pile subsets), each cut into 1,024-token blocks "by grouping several
examples into a sequence", either 40,000 blocks per corpus (equal setting) or 96k/64k/48k/32k/32k/
16k/16k/16k blocks (different-size setting).  Offline, each corpus has a stand-in file in the data
mirror (``corpora/*.jsonl``, see the mirror's README); online, the same names load the hub sources
in :data:`CORPORA`.

Public API: :data:`CORPORA`, :data:`CORPUS_NAMES`, :data:`DIFFERENT_SIZE_BLOCKS`,
:data:`DIFFERENT_SIZE_PROPORTIONS`, :func:`load_corpus`, :func:`corpus_records`,
:func:`pack_blocks`, :func:`sample_rows`, :func:`different_sizes`, :func:`pretraining_mixture`.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from untrac.data.batching import quiet_maps
from untrac.data.mirror import HubSource, Origin, iter_hub, load_hub, read_jsonl, use_mirror


@dataclass(frozen=True)
class CorpusSpec:
    """One pretraining corpus: the paper's name, its mirror stand-in and its hub source."""

    name: str
    mirror_file: str
    hub: HubSource
    stand_in: str = ""


_PILE = "ArmelR/the-pile-splitted"

CORPORA: Mapping[str, CorpusSpec] = MappingProxyType({spec.name: spec for spec in (
    CorpusSpec("Pile-CC", "corpora/web_mix.jsonl", HubSource(_PILE, "Pile-CC"),
               "heterogeneous web documentation (Python docs, FOLDOC, Jargon File, web text)"),
    CorpusSpec("OpenWebText2", "corpora/reviews.jsonl", HubSource(_PILE, "OpenWebText2"),
               "opinionated web reviews (Pang & Lee movie reviews)"),
    CorpusSpec("CCNewsV2", "corpora/news.jsonl",
               HubSource("vblagoje/cc_news", "plain_text"),  # the hub's `cc_news`, as Parquet
               "BBC news articles 2004-05"),
    CorpusSpec("BookCorpus", "corpora/books_fiction.jsonl",
               # script-based repository: read the hub's Parquet conversion.  Its rows are single
               # sentences, so pack_blocks puts an EOS after every sentence.
               HubSource("bookcorpus/bookcorpus", "plain_text",
                         revision="refs/convert/parquet"),
               "genre fiction from Project Gutenberg"),
    CorpusSpec("Stories", "corpora/blogs.jsonl", HubSource("lucadiliello/STORIES"),
               "first-person blog posts (Blog Authorship Corpus)"),
    CorpusSpec("PJ Gutenberg", "corpora/books_classic.jsonl",
               HubSource(_PILE, "Gutenberg (PG-19)"),
               "classics and non-fiction from Project Gutenberg"),
    CorpusSpec("HackerNews", "corpora/forum.jsonl", HubSource(_PILE, "HackerNews"),
               "Usenet discussion threads (20 Newsgroups)"),
    CorpusSpec("Wikipedia", "corpora/wikipedia.jsonl", HubSource(_PILE, "Wikipedia (en)"),
               "English Wikipedia articles"),
)})
"""The eight corpora of Section 5.2, in the paper's order, keyed by the paper's names.

Replace a hub source with ``dataclasses.replace(CORPORA[name].hub, ...)`` and pass it as
``source=`` to :func:`load_corpus` / :func:`corpus_records`."""

CORPUS_NAMES: tuple[str, ...] = tuple(CORPORA)

EQUAL_SIZE_BLOCKS = 40_000
"""Blocks per corpus in the paper's equal-size setting (Section 5.2)."""

DIFFERENT_SIZE_BLOCKS: Mapping[str, int] = MappingProxyType({
    "Pile-CC": 96_000, "OpenWebText2": 64_000, "CCNewsV2": 48_000, "BookCorpus": 32_000,
    "Stories": 32_000, "PJ Gutenberg": 16_000, "HackerNews": 16_000, "Wikipedia": 16_000,
})
"""Blocks per corpus in the paper's different-size setting (Section 5.2)."""

DIFFERENT_SIZE_PROPORTIONS: Mapping[str, float] = MappingProxyType({
    name: count / sum(DIFFERENT_SIZE_BLOCKS.values())
    for name, count in DIFFERENT_SIZE_BLOCKS.items()
})
"""Share of each corpus in the different-size setting: 30/20/15/10/10/5/5/5 %."""


def corpus_spec(name: str) -> CorpusSpec:
    """The :class:`CorpusSpec` of the paper's corpus ``name``; ``ValueError`` for unknown names."""
    try:
        return CORPORA[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown corpus {name!r}; valid names: "
                         f"{', '.join(repr(n) for n in CORPUS_NAMES)}") from None


# --------------------------------------------------------------------------------------------
# Loading documents
# --------------------------------------------------------------------------------------------


def corpus_records(name: str, *, max_docs: int | None = None, max_chars: int | None = None,
                   origin: Origin = "auto",
                   source: HubSource | None = None) -> list[dict[str, str]]:
    """Documents of corpus ``name`` as mirror records ``{"text": str, "source": str}``.

    Reads the mirror file or streams the hub source (``source`` overrides ``CORPORA[name].hub``),
    skipping empty documents, and keeps the first ``max_docs`` documents, stopping once
    ``max_chars`` characters have been collected (the document crossing the limit is kept).
    This is what :func:`untrac.data.write_mirror.write_mirror` writes.
    """
    spec = corpus_spec(name)
    _check_limit("max_docs", max_docs)
    _check_limit("max_chars", max_chars)
    if use_mirror(origin):
        rows: Iterable[Mapping[str, Any]] = read_jsonl(spec.mirror_file, {"text": str})
        text_field, default_source = "text", name
    else:
        hub = source or spec.hub
        rows = iter_hub(hub)
        text_field, default_source = hub.text_field, hub.describe()
    return list(_take(rows, text_field, default_source, max_docs, max_chars))


def _take(rows: Iterable[Mapping[str, Any]], text_field: str, default_source: str,
          max_docs: int | None, max_chars: int | None) -> Iterator[dict[str, str]]:
    docs = chars = 0
    for row in rows:
        if max_docs is not None and docs >= max_docs:
            return
        if max_chars is not None and chars >= max_chars:
            return
        if text_field not in row:
            raise ValueError(f"hub rows have no text field {text_field!r} (fields: {sorted(row)}); "
                             f"set HubSource(text_field=...)")
        text = row[text_field]
        if not isinstance(text, str) or not text.strip():
            continue
        source = row.get("source")
        yield {"text": text, "source": source if isinstance(source, str) else default_source}
        docs += 1
        chars += len(text)


def load_corpus(name: str, max_docs: int | None = None, *, origin: Origin = "auto",
                source: HubSource | None = None):
    """The documents of the paper's corpus ``name`` (Section 5.2) as a ``datasets.Dataset``.

    Columns: ``text`` (one document per row) and ``corpus`` (= ``name``).  With
    ``UNTRAC_DATA_DIR`` set (``origin="auto"``) the mirror's stand-in file is read, otherwise the
    hub source (``source`` overrides ``CORPORA[name].hub``).  ``max_docs`` keeps the first
    documents (streamed from the hub); without it the whole hub split is downloaded and cached.
    Raises ``ValueError`` for unknown names or a corpus without documents.
    """
    import datasets

    spec = corpus_spec(name)
    _check_limit("max_docs", max_docs)
    if use_mirror(origin) or max_docs is not None:
        records = corpus_records(name, max_docs=max_docs, origin=origin, source=source)
        texts = [record["text"] for record in records]
        dataset = datasets.Dataset.from_dict({"text": texts, "corpus": [name] * len(texts)})
    else:  # the whole hub split: keep it memory-mapped rather than in Python lists
        hub = source or spec.hub
        dataset = load_hub(hub)
        if hub.text_field not in dataset.column_names:
            raise ValueError(f"{hub.describe()} has no text field {hub.text_field!r} "
                             f"(columns: {dataset.column_names}); set HubSource(text_field=...)")
        dataset = dataset.select_columns([hub.text_field])
        if hub.text_field != "text":
            dataset = dataset.rename_column(hub.text_field, "text")
        dataset = dataset.filter(lambda batch: [isinstance(t, str) and bool(t.strip())
                                                for t in batch["text"]], batched=True)
        with quiet_maps():
            dataset = dataset.map(lambda batch: {"corpus": [name] * len(batch["text"])}, batched=True)
    if len(dataset) == 0:
        raise ValueError(f"corpus {name!r} has no documents")
    return dataset


# --------------------------------------------------------------------------------------------
# Packing documents into blocks
# --------------------------------------------------------------------------------------------


def _tokenize(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    try:  # `verbose=False` silences transformers' "sequence longer than model_max_length" warning
        return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    except TypeError:
        return tokenizer(texts, add_special_tokens=False)["input_ids"]


def pack_blocks(dataset, tokenizer: Any, block_size: int, num_blocks: int | None = None,
                seed: int = 0, text_column: str = "text", batch_size: int = 1_000):
    """Tokenise documents, concatenate them and cut the stream into ``block_size``-token blocks.

    As in Section 5.2 ("each training example consists of a sequence of 1,024 tokens by grouping
    several examples into a sequence"): every document of ``dataset[text_column]`` is tokenised
    with the Hugging Face ``tokenizer`` (no special tokens), followed by ``tokenizer.eos_token_id``
    when the tokenizer has one (so EOS separates consecutive documents); the token streams of all
    documents are concatenated in order, cut into consecutive blocks, and the incomplete last block
    is dropped.  No token is lost or repeated: the blocks, concatenated, are a prefix of the
    stream.  When ``num_blocks`` is given, that many blocks are sampled without replacement with
    ``numpy.random.default_rng(seed)`` and returned in corpus order (``ValueError`` when the
    corpus has fewer blocks).

    Tokenisation runs as a batched ``Dataset.map`` (cached by ``datasets`` when the input lives on
    disk); the cutting is done on the Arrow buffers.  Returns a ``datasets.Dataset`` with one
    column ``input_ids`` (fixed-length lists of ``int64``).
    """
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc

    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if text_column not in dataset.column_names:
        raise ValueError(f"dataset has no column {text_column!r} (columns: {dataset.column_names})")
    eos = getattr(tokenizer, "eos_token_id", None)

    def tokenize(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        ids = _tokenize(tokenizer, batch[text_column])
        if eos is not None:
            ids = [list(doc) + [eos] for doc in ids]
        return {"input_ids": ids}

    with quiet_maps():
        tokenized = dataset.map(tokenize, batched=True, batch_size=batch_size, remove_columns=dataset.column_names)
    column = tokenized.with_format("arrow")[:].column("input_ids")
    flat = pc.list_flatten(column)
    flat = pa.concat_arrays(flat.chunks) if flat.num_chunks else pa.array([], pa.int64())
    total = len(flat) // block_size
    if num_blocks is not None:
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        if num_blocks > total:
            raise ValueError(f"only {total} blocks of {block_size} tokens available "
                             f"({len(flat)} tokens), {num_blocks} requested")
    values = flat.slice(0, total * block_size).cast(pa.int64())
    blocks = pa.FixedSizeListArray.from_arrays(values, block_size)
    if num_blocks is not None:
        chosen = np.sort(np.random.default_rng(seed).choice(total, size=num_blocks, replace=False))
        blocks = blocks.take(pa.array(chosen, pa.int64()))
    features = datasets.Features({"input_ids": datasets.List(datasets.Value("int64"),
                                                             length=block_size)})
    return datasets.Dataset.from_dict({"input_ids": blocks}, features=features)


def sample_rows(dataset, n: int, seed: int = 0):
    """``n`` rows of ``dataset`` drawn without replacement by ``default_rng(seed)``, in order.

    Used e.g. for the paper's "10,000 examples sampled from each dataset" (Section 5.2, one sample
    per run).  ``ValueError`` when ``dataset`` has fewer than ``n`` rows.
    """
    if not 0 <= n <= len(dataset):
        raise ValueError(f"cannot sample {n} rows from a dataset of {len(dataset)}")
    chosen = np.random.default_rng(seed).choice(len(dataset), n, replace=False)
    return dataset.select(np.sort(chosen))


# --------------------------------------------------------------------------------------------
# The mixture
# --------------------------------------------------------------------------------------------


def different_sizes(total_blocks: int, corpora: Sequence[str] | None = None) -> dict[str, int]:
    """Split ``total_blocks`` over the corpora by :data:`DIFFERENT_SIZE_PROPORTIONS`.

    Largest-remainder rounding, so the counts sum to ``total_blocks`` exactly;
    ``different_sizes(320_000)`` gives the paper's 96k/64k/48k/32k/32k/16k/16k/16k.  ``corpora``
    restricts (and renormalises) to those names.  ``ValueError`` if a corpus would get no block.
    """
    names = list(CORPUS_NAMES if corpora is None else corpora)
    for name in names:
        corpus_spec(name)
    if not names:
        raise ValueError("no corpora given")
    weights = np.array([DIFFERENT_SIZE_PROPORTIONS[n] for n in names], dtype=float)
    exact = total_blocks * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    order = sorted(range(len(names)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total_blocks - int(counts.sum())]:
        counts[i] += 1
    if counts.min() < 1:
        raise ValueError(f"total_blocks={total_blocks} too small: some corpus would get no block "
                         f"({dict(zip(names, counts.tolist(), strict=True))})")
    return dict(zip(names, counts.tolist(), strict=True))


def corpus_seed(seed: int, name: str) -> int:
    """A per-corpus seed derived from ``seed`` and the corpus name (stable across runs)."""
    state = np.random.SeedSequence([seed, zlib.crc32(name.encode("utf-8"))]).generate_state(1)
    return int(state[0])


def pretraining_mixture(tokenizer: Any, block_size: int,
                        blocks_per_corpus: int | Mapping[str, int], seed: int = 0,
                        corpora: Sequence[str] | None = None, *,
                        max_docs: int | Mapping[str, int] | None = None,
                        origin: Origin = "auto",
                        sources: Mapping[str, HubSource] | None = None) -> dict[str, Any]:
    """The training datasets Z_1..Z_K of Section 5.2, one ``datasets.Dataset`` per corpus.

    ``blocks_per_corpus`` is an ``int`` (equal-size setting; the paper uses 40,000) or a mapping
    corpus -> blocks (different-size setting, e.g. :func:`different_sizes` or
    :data:`DIFFERENT_SIZE_BLOCKS`).  Each corpus is loaded with :func:`load_corpus` (``max_docs``,
    one value or per corpus; set it on the hub, whose full corpora are huge) and packed with
    :func:`pack_blocks`, sampling the blocks with a seed derived from ``seed`` and the corpus name
    (:func:`corpus_seed`).  ``corpora`` selects and orders the corpora (default: all eight, or the
    mapping's keys).  Returns ``{name: Dataset}`` in that order, each with columns ``input_ids``
    and ``subset`` (the corpus name).
    """
    if isinstance(blocks_per_corpus, Mapping):
        names = list(blocks_per_corpus) if corpora is None else list(corpora)
        missing = [n for n in names if n not in blocks_per_corpus]
        if missing:
            raise ValueError(f"blocks_per_corpus has no count for {missing}")
        counts = {n: int(blocks_per_corpus[n]) for n in names}
    else:
        names = list(CORPUS_NAMES if corpora is None else corpora)
        counts = {n: int(blocks_per_corpus) for n in names}
    if not names:
        raise ValueError("no corpora selected")
    if len(set(names)) != len(names):
        raise ValueError(f"corpora listed twice: {names}")
    out: dict[str, Any] = {}
    for name in names:
        corpus_spec(name)
        docs = max_docs.get(name) if isinstance(max_docs, Mapping) else max_docs
        documents = load_corpus(name, docs, origin=origin, source=(sources or {}).get(name))
        try:
            blocks = pack_blocks(documents, tokenizer, block_size, num_blocks=counts[name],
                                 seed=corpus_seed(seed, name))
        except ValueError as exc:
            raise ValueError(f"corpus {name!r}: {exc}") from exc
        out[name] = blocks.add_column("subset", [name] * len(blocks))
    return out


def _check_limit(label: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{label} must be a positive integer or None, got {value}")


__all__ = [
    "CORPORA", "CORPUS_NAMES", "CorpusSpec", "DIFFERENT_SIZE_BLOCKS", "DIFFERENT_SIZE_PROPORTIONS",
    "EQUAL_SIZE_BLOCKS", "HubSource", "corpus_records", "corpus_seed", "corpus_spec",
    "different_sizes", "load_corpus", "pack_blocks", "pretraining_mixture", "sample_rows",
]
