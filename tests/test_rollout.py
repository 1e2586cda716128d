"""The KV-cache sampler: log-probs equal a full forward pass, masks, stopping, seeds, errors."""
import pytest
import torch

from minimopd.models import build_model, sequence_logprobs
from minimopd.rollout import generate

PROMPTS = ["What is 48+375?", "Sort: 5 12 3 9 1", "Hi"]   # different lengths -> left padding


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9), (0.0, 1.0)])
def test_sampling_logprobs_equal_full_forward(tok, tiny_model, temperature, top_p):
    ro = generate(tiny_model, tok, PROMPTS, num_samples=3, max_new_tokens=16, seed=1,
                  temperature=temperature, top_p=top_p)
    full = sequence_logprobs(tiny_model, ro.input_ids, ro.attention_mask,
                             temperature=temperature if temperature > 0 else 1.0)
    assert ro.logprobs.shape == ro.input_ids.shape == ro.completion_mask.shape
    assert torch.allclose(full * ro.completion_mask, ro.logprobs, atol=1e-5)
    assert (ro.logprobs[ro.completion_mask == 0] == 0).all()


def test_layout_grouping_and_masks(tok, tiny_model):
    ro = generate(tiny_model, tok, PROMPTS, num_samples=2, max_new_tokens=10, seed=0)
    assert len(ro) == 6 and ro.prompts == [p for p in PROMPTS for _ in range(2)]
    assert ro.prompt_index.tolist() == [0, 0, 1, 1, 2, 2]
    P = ro.prompt_length
    assert (ro.completion_mask[:, :P] == 0).all() and (ro.completion_mask[:, P] == 1).all()
    # Prompt part is left-padded: the real prompt tokens end exactly at P.
    assert (ro.prompt_mask[:, P - 1] == 1).all()
    assert ro.prompt_mask.sum(1).tolist() == [len(tok(tok.apply_chat_template(
        [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True),
        add_special_tokens=False)["input_ids"]) for p in ro.prompts]
    # A finished row's last real completion token is <|end|>; nothing real follows it.
    for i in range(len(ro)):
        real = ro.input_ids[i][ro.completion_mask[i].bool()].tolist()
        assert (real[-1] == tok.eos_token_id) == bool(ro.finished[i])
        assert tok.eos_token_id not in real[:-1]
    assert (ro.completion_lengths <= 10).all()


def test_stops_at_end_of_turn(tok):
    # A model whose only output is <|end|>: every row stops after one token.
    model = build_model("tiny", tok, seed=0)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[tok.eos_token_id] = 1.0     # tied embeddings: make <|end|> dominant
        model.model.norm.weight.fill_(100.0)
    ro = generate(model, tok, PROMPTS, max_new_tokens=20, temperature=0.0)
    assert ro.completion_lengths.tolist() == [1, 1, 1] and ro.finished.all()
    assert ro.texts == ["", "", ""]


def test_seeded_sampling_is_reproducible(tok, tiny_model):
    a = generate(tiny_model, tok, PROMPTS, num_samples=2, max_new_tokens=12, seed=5)
    b = generate(tiny_model, tok, PROMPTS, num_samples=2, max_new_tokens=12, seed=5)
    c = generate(tiny_model, tok, PROMPTS, num_samples=2, max_new_tokens=12, seed=6)
    assert a.texts == b.texts and torch.equal(a.input_ids, b.input_ids)
    assert a.texts != c.texts


def test_greedy_matches_transformers_generate(tok, tiny_model):
    ours = generate(tiny_model, tok, ["What is 2+2?"], max_new_tokens=12, temperature=0.0)
    ids = tok(tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], tokenize=False,
                                      add_generation_prompt=True), return_tensors="pt",
              add_special_tokens=False)["input_ids"]
    hf = tiny_model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)
    real = ours.input_ids[0][ours.attention_mask[0].bool()]
    assert real.tolist() == hf[0].tolist()


def test_errors(tok, tiny_model):
    with pytest.raises(ValueError, match="empty prompt list"):
        generate(tiny_model, tok, [])
    with pytest.raises(ValueError, match="exceeds the model's context"):
        generate(tiny_model, tok, ["x" * 250], max_new_tokens=32)
    with pytest.raises(ValueError, match="top_p"):
        generate(tiny_model, tok, ["x"], top_p=0.0)
    foreign = build_model("tiny", tok, vocab_size=40)
    with pytest.raises(ValueError, match="do not belong together"):
        generate(foreign, tok, ["x"])
