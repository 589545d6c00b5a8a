"""Tests of untrac.data.corpora: the eight corpora, block packing and the mixture (Section 5.2)."""
from __future__ import annotations

import os

import datasets
import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from untrac.data import corpora
from untrac.data.corpora import (CORPORA, CORPUS_NAMES, DIFFERENT_SIZE_BLOCKS,
                                 DIFFERENT_SIZE_PROPORTIONS, different_sizes, load_corpus,
                                 pack_blocks, pretraining_mixture, sample_rows)
from untrac.data.mirror import ENV_VAR, MirrorError

datasets.disable_progress_bars()

needs_mirror = pytest.mark.skipif(not os.environ.get(ENV_VAR),
                                  reason=f"{ENV_VAR} is unset: no offline data mirror to read")

PAPER_ORDER = ["Pile-CC", "OpenWebText2", "CCNewsV2", "BookCorpus", "Stories", "PJ Gutenberg",
               "HackerNews", "Wikipedia"]

DOCS = [
    "The quick brown fox jumps over the lazy dog.",
    "Influence functions trace predictions back to training data.",
    "Unlearning by gradient ascent raises the loss on a dataset.",
    "",
    "Short.",
    "A longer document, with punctuation; numbers 12345 and UPPER case words, goes here!",
] * 3


def _tokenizer(eos: bool = True) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(DOCS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>" if eos else None)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return _tokenizer()


def _stream(tokenizer, texts: list[str]) -> list[int]:
    out: list[int] = []
    for text in texts:
        out += tokenizer(text, add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            out.append(tokenizer.eos_token_id)
    return out


# ---------------------------------------------------------------------------------------------
# Registry and proportions
# ---------------------------------------------------------------------------------------------


def test_corpora_registry_in_paper_order():
    assert list(CORPORA) == PAPER_ORDER == list(CORPUS_NAMES)
    files = {name: spec.mirror_file for name, spec in CORPORA.items()}
    assert files == {"Pile-CC": "corpora/web_mix.jsonl", "OpenWebText2": "corpora/reviews.jsonl",
                     "CCNewsV2": "corpora/news.jsonl", "BookCorpus": "corpora/books_fiction.jsonl",
                     "Stories": "corpora/blogs.jsonl",
                     "PJ Gutenberg": "corpora/books_classic.jsonl",
                     "HackerNews": "corpora/forum.jsonl", "Wikipedia": "corpora/wikipedia.jsonl"}
    pile = {n: CORPORA[n].hub for n in ["Pile-CC", "OpenWebText2", "PJ Gutenberg", "HackerNews",
                                        "Wikipedia"]}
    assert {s.path for s in pile.values()} == {"ArmelR/the-pile-splitted"}
    assert pile["PJ Gutenberg"].name == "Gutenberg (PG-19)"
    assert pile["Wikipedia"].name == "Wikipedia (en)"
    assert CORPORA["Stories"].hub.path == "lucadiliello/STORIES"
    assert CORPORA["BookCorpus"].hub.revision == "refs/convert/parquet"


def test_different_size_proportions():
    assert dict(DIFFERENT_SIZE_BLOCKS) == {
        "Pile-CC": 96_000, "OpenWebText2": 64_000, "CCNewsV2": 48_000, "BookCorpus": 32_000,
        "Stories": 32_000, "PJ Gutenberg": 16_000, "HackerNews": 16_000, "Wikipedia": 16_000}
    assert list(DIFFERENT_SIZE_PROPORTIONS) == PAPER_ORDER
    percent = [round(100 * p, 6) for p in DIFFERENT_SIZE_PROPORTIONS.values()]
    assert percent == [30, 20, 15, 10, 10, 5, 5, 5]
    assert different_sizes(320_000) == dict(DIFFERENT_SIZE_BLOCKS)
    assert sum(different_sizes(101).values()) == 101
    assert different_sizes(40, corpora=["Pile-CC", "Wikipedia"]) == {"Pile-CC": 34, "Wikipedia": 6}
    with pytest.raises(ValueError, match="too small"):
        different_sizes(10)
    with pytest.raises(ValueError, match="unknown corpus"):
        different_sizes(100, corpora=["Reddit"])


# ---------------------------------------------------------------------------------------------
# load_corpus
# ---------------------------------------------------------------------------------------------


def test_unknown_corpus_lists_valid_names():
    with pytest.raises(ValueError) as info:
        load_corpus("web_mix")
    for name in PAPER_ORDER:
        assert repr(name) in str(info.value)


@needs_mirror
@pytest.mark.parametrize("name", PAPER_ORDER)
def test_load_corpus_from_mirror(name):
    docs = load_corpus(name, max_docs=5)
    assert docs.column_names == ["text", "corpus"]
    assert len(docs) == 5
    assert set(docs["corpus"]) == {name}
    assert all(isinstance(t, str) and t.strip() for t in docs["text"])


@needs_mirror
def test_load_corpus_whole_file():
    docs = load_corpus("PJ Gutenberg")
    assert len(docs) == 545  # books_classic.jsonl, paragraph-aligned chunks of the books


def test_empty_and_malformed_corpus(monkeypatch, tmp_path):
    (tmp_path / "corpora").mkdir()
    (tmp_path / "corpora/news.jsonl").write_text('{"text": "  "}\n', encoding="utf-8")
    (tmp_path / "corpora/forum.jsonl").write_text('{"text": "a"}\n{"body": "b"}\n',
                                                  encoding="utf-8")
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(ValueError, match="no documents"):
        load_corpus("CCNewsV2")
    with pytest.raises(MirrorError, match=r"forum\.jsonl, line 2: missing field 'text'"):
        load_corpus("HackerNews")
    with pytest.raises(MirrorError, match="wikipedia.jsonl"):
        load_corpus("Wikipedia")
    with pytest.raises(ValueError, match="max_docs"):
        load_corpus("HackerNews", max_docs=0)


def test_corpus_records_char_limit(monkeypatch, tmp_path):
    (tmp_path / "corpora").mkdir()
    lines = [f'{{"text": "{"x" * 10}", "source": "s{i}"}}' for i in range(10)]
    (tmp_path / "corpora/blogs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    records = corpora.corpus_records("Stories", max_chars=25)
    assert [r["source"] for r in records] == ["s0", "s1", "s2"]  # the crossing document is kept


# ---------------------------------------------------------------------------------------------
# pack_blocks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block_size", [1, 7, 32])
def test_pack_blocks_loses_and_duplicates_no_token(tokenizer, block_size):
    docs = datasets.Dataset.from_dict({"text": DOCS})
    blocks = pack_blocks(docs, tokenizer, block_size, batch_size=4)  # batches split the stream
    stream = _stream(tokenizer, DOCS)
    assert blocks.column_names == ["input_ids"]
    assert len(blocks) == len(stream) // block_size
    assert all(len(ids) == block_size for ids in blocks["input_ids"])
    flat = [t for ids in blocks["input_ids"] for t in ids]
    assert flat == stream[: len(flat)]
    assert len(stream) - len(flat) < block_size
    assert stream.count(tokenizer.eos_token_id) == len(DOCS)  # one EOS closes each document


def test_pack_blocks_without_eos_and_custom_column():
    tok = _tokenizer(eos=False)
    assert tok.eos_token_id is None
    docs = datasets.Dataset.from_dict({"body": DOCS, "other": list(range(len(DOCS)))})
    blocks = pack_blocks(docs, tok, 5, text_column="body")
    flat = [t for ids in blocks["input_ids"] for t in ids]
    assert flat == _stream(tok, DOCS)[: len(flat)]
    with pytest.raises(ValueError, match="no column 'text'"):
        pack_blocks(docs, tok, 5)


def test_pack_blocks_sampling(tokenizer):
    docs = datasets.Dataset.from_dict({"text": DOCS})
    everything = pack_blocks(docs, tokenizer, 4)["input_ids"]
    first = pack_blocks(docs, tokenizer, 4, num_blocks=10, seed=3)["input_ids"]
    again = pack_blocks(docs, tokenizer, 4, num_blocks=10, seed=3)["input_ids"]
    other = pack_blocks(docs, tokenizer, 4, num_blocks=10, seed=4)["input_ids"]
    assert first == again and first != other
    # the sample is 10 distinct block positions drawn by default_rng(seed), kept in corpus order
    chosen = np.sort(np.random.default_rng(3).choice(len(everything), 10, replace=False))
    assert first == [everything[i] for i in chosen]
    assert pack_blocks(docs, tokenizer, 4, num_blocks=len(everything))["input_ids"] == everything
    with pytest.raises(ValueError, match="only"):
        pack_blocks(docs, tokenizer, 4, num_blocks=len(everything) + 1)
    with pytest.raises(ValueError, match="block_size"):
        pack_blocks(docs, tokenizer, 0)


def test_pack_blocks_torch_format(tokenizer):
    docs = datasets.Dataset.from_dict({"text": DOCS})
    batch = pack_blocks(docs, tokenizer, 8).with_format("torch")[:3]["input_ids"]
    assert tuple(batch.shape) == (3, 8) and str(batch.dtype) == "torch.int64"


def test_sample_rows():
    data = datasets.Dataset.from_dict({"i": list(range(50))})
    picked = sample_rows(data, 10, seed=1)["i"]
    assert picked == sorted(picked) and len(set(picked)) == 10
    assert picked == sample_rows(data, 10, seed=1)["i"] != sample_rows(data, 10, seed=2)["i"]
    with pytest.raises(ValueError):
        sample_rows(data, 51)


# ---------------------------------------------------------------------------------------------
# pretraining_mixture
# ---------------------------------------------------------------------------------------------


@needs_mirror
def test_mixture_equal_sizes(tokenizer):
    mix = pretraining_mixture(tokenizer, 64, 6, seed=0, max_docs=3)
    assert list(mix) == PAPER_ORDER
    for name, blocks in mix.items():
        assert blocks.column_names == ["input_ids", "subset"]
        assert len(blocks) == 6 and set(blocks["subset"]) == {name}
        assert all(len(ids) == 64 for ids in blocks["input_ids"])
    again = pretraining_mixture(tokenizer, 64, 6, seed=0, max_docs=3, corpora=["Wikipedia"])
    assert again["Wikipedia"]["input_ids"] == mix["Wikipedia"]["input_ids"]  # per-corpus seeds


@needs_mirror
def test_mixture_different_sizes(tokenizer):
    sizes = different_sizes(40)
    mix = pretraining_mixture(tokenizer, 32, sizes, seed=1, max_docs=4)
    assert {name: len(blocks) for name, blocks in mix.items()} == sizes
    assert sizes == {"Pile-CC": 12, "OpenWebText2": 8, "CCNewsV2": 6, "BookCorpus": 4,
                     "Stories": 4, "PJ Gutenberg": 2, "HackerNews": 2, "Wikipedia": 2}


@needs_mirror
def test_mixture_errors(tokenizer):
    with pytest.raises(ValueError, match="'Stories'.*only"):
        pretraining_mixture(tokenizer, 512, 10_000, corpora=["Stories"], max_docs=2)
    with pytest.raises(ValueError, match="no count"):
        pretraining_mixture(tokenizer, 8, {"Stories": 2}, corpora=["Stories", "Wikipedia"])
    with pytest.raises(ValueError, match="unknown corpus"):
        pretraining_mixture(tokenizer, 8, 2, corpora=["Reddit"])
