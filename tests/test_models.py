"""The target-masked loss against a hand computation; model/tokenizer checks; T5 and OPT both work."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import tiny_spec


def test_example_losses_match_hand_computation(tokenizer):
    from untrac.data.batching import collate
    from untrac.models import build_model, example_losses

    model = build_model(tiny_spec(), tokenizer, seed=0).double().eval()
    rows = [{"input_ids": [1, 5, 6, 7, 8], "labels": [-100, -100, -100, 7, 8]},
            {"input_ids": [1, 9, 10], "labels": [-100, 9, 10]}]
    batch = collate(rows, tokenizer.pad_token_id)
    got = example_losses(model, batch)
    for i, r in enumerate(rows):  # unpadded, one example at a time, by hand
        ids = torch.tensor([r["input_ids"]])
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        nll = [-logp[t - 1, r["input_ids"][t]].item() for t in range(1, len(r["labels"])) if r["labels"][t] != -100]
        assert got[i].item() == pytest.approx(sum(nll) / len(nll), rel=1e-9)


def test_t5_loss_scores_only_the_target(tokenizer):
    from untrac.data.batching import collate
    from untrac.models import build_model, example_losses

    model = build_model(tiny_spec("t5"), tokenizer, seed=0).double().eval()
    batch = collate([{"input_ids": [5, 6, 2], "labels": [7, 8, 2]}], tokenizer.pad_token_id, encoder_decoder=True)
    logits = model(input_ids=batch["input_ids"], labels=batch["labels"]).logits[0]
    logp = torch.log_softmax(logits.double(), -1)
    want = -sum(logp[t, y].item() for t, y in enumerate([7, 8, 2])) / 3
    assert example_losses(model, batch).item() == pytest.approx(want, rel=1e-9)


def test_model_tokenizer_mismatch_is_clear(tokenizer):
    from untrac.models import ModelTokenizerMismatch, build_model, check_compatible, train_tokenizer

    small = build_model(tiny_spec(), train_tokenizer(["abc def"] * 5, 270), seed=0)
    with pytest.raises(ModelTokenizerMismatch, match="tokenizer has"):
        check_compatible(small, tokenizer)


def test_no_target_tokens_is_an_error(tokenizer):
    from untrac.data.batching import collate
    from untrac.models import build_model, example_losses

    model = build_model(tiny_spec(), tokenizer, seed=0)
    with pytest.raises(ValueError, match="no target tokens"):
        example_losses(model, collate([{"input_ids": [1, 5], "labels": [-100, -100]}], tokenizer.pad_token_id))


def test_dataset_loss_is_mean_of_examples_and_batching_invariant(tiny):
    from untrac.data.batching import batches
    from untrac.models import dataset_loss, example_losses

    model, train_sets, _, pad = tiny
    ds = train_sets["train3"]
    one = dataset_loss(model, batches(ds, 1, pad))
    many = dataset_loss(model, batches(ds, 5, pad, by_length=True))
    with torch.no_grad():
        per = torch.cat([example_losses(model, b) for b in batches(ds, 1, pad)])
    assert one == pytest.approx(many, rel=1e-12) and one == pytest.approx(per.mean().item(), rel=1e-12)
    assert math.isfinite(one)


def test_exact_match_is_greedy_decoding_reproducing_the_target(tokenizer):
    """Targets built by a hand-written greedy decoding loop match; the same with one token changed does not."""
    from untrac.data.batching import collate
    from untrac.models import build_model, exact_match

    model = build_model(tiny_spec(), tokenizer, seed=0).double().eval()

    def greedy(prompt: list[int], n: int) -> list[int]:
        ids = list(prompt)
        for _ in range(n):  # one token at a time, each the arg-max given everything before it
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
        return ids[len(prompt):]

    rows = []
    for prompt, n in (([1, 5, 6], 3), ([1, 9], 2), ([1, 7, 8, 9, 10], 1), ([1, 11, 12], 4)):
        target = greedy(prompt, n)
        rows.append({"input_ids": prompt + target, "labels": [-100] * len(prompt) + target})
    wrong = dict(rows[3])
    wrong["input_ids"] = wrong["input_ids"][:-1] + [(wrong["input_ids"][-1] + 1) % 200 + 3]  # the last token differs
    wrong["labels"] = wrong["labels"][:-1] + wrong["input_ids"][-1:]
    batch = collate(rows[:3] + [wrong], tokenizer.pad_token_id)  # padded: lengths 6, 4, 6, 7
    assert exact_match(model, [batch]) == 0.75
    assert exact_match(model, [collate(rows, tokenizer.pad_token_id)]) == 1.0
    assert model.training is False
