"""The KV-cache sampler: log-probs equal a full forward pass, masks, stopping, seeds, errors."""
import pytest
import torch

from minimopd.models import build_model, sequence_logprobs
from minimopd.rollout import generate
from minimopd.tasks import get_task

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


def _prompt_batch(tok, prompts):
    from minimopd.rollout import encode_prompts
    enc = encode_prompts(tok, prompts)
    P = max(map(len, enc))
    ids = torch.full((len(prompts), P), tok.pad_token_id)
    attn = torch.zeros(len(prompts), P, dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, P - len(e):] = torch.tensor(e)
        attn[i, P - len(e):] = 1
    return ids, attn


@pytest.mark.parametrize("graphs", [False, True])   # True: the fixed-shape step CUDA would capture
def test_engine_greedy_equals_the_transformers_loop(tok, sft_tiny, graphs):
    from minimopd import engine
    from minimopd.rollout import _decode_with_transformers
    prompts = PROMPTS + ["What is 12+7?", "What is 48+375?"]
    ids, attn = _prompt_batch(tok, prompts)
    kw = dict(num_samples=2, max_new_tokens=12, temperature=0.0, top_p=1.0, generator=None, topk=3,
              eos=tok.eos_token_id, pad=tok.pad_token_id)
    ours = engine.decode(sft_tiny, ids, attn, graphs=graphs, **kw)
    ref = _decode_with_transformers(sft_tiny, ids, attn, **kw)
    assert torch.equal(ours.tokens, ref.tokens) and torch.equal(ours.finished, ref.finished)
    ended = (ours.tokens == tok.eos_token_id).float().argmax(dim=1)
    assert ended.unique().numel() > 1                            # rows end at different steps
    torch.testing.assert_close(ours.logprobs, ref.logprobs, atol=1e-5, rtol=0)
    real = torch.ones_like(ours.tokens, dtype=torch.bool)            # up to and including <|end|>
    real[:, 1:] = ~(ours.tokens[:, :-1] == tok.eos_token_id).cumsum(1).bool()
    assert torch.equal(ours.topk[real], ref.topk[real])


def test_rows_that_finish_early_leave_the_batch_and_logprobs_stay_exact(tok, sft_tiny):
    prompts = [e.prompt for e in get_task("add").sample(12, seed=3, difficulty="easy")] + ["Hi"] * 4
    ro = generate(sft_tiny, tok, prompts, num_samples=4, max_new_tokens=24, seed=2)
    lengths = ro.completion_lengths
    assert lengths.unique().numel() > 2         # rows end at different steps: the batch shrinks
    full = sequence_logprobs(sft_tiny, ro.input_ids, ro.attention_mask)
    assert torch.allclose(full * ro.completion_mask, ro.logprobs, atol=1e-5)
    for i in range(len(ro)):                                     # nothing real after <|end|>
        real = ro.input_ids[i][ro.completion_mask[i].bool()].tolist()
        assert (real[-1] == tok.eos_token_id) == bool(ro.finished[i])


def test_sampling_follows_the_model_distribution(tok, tiny_model):
    # One prompt, 4000 samples of one token: the empirical frequencies match softmax(logits).
    ro = generate(tiny_model, tok, ["Hi"], num_samples=4000, max_new_tokens=1, seed=0, eos_token_id=-1)
    first = ro.input_ids[:, ro.prompt_length]
    probs = sequence_logprobs(tiny_model, ro.input_ids[:1], ro.attention_mask[:1])  # only for shape
    logits = tiny_model(input_ids=ro.input_ids[:1, :ro.prompt_length]).logits[0, -1]
    p = torch.softmax(logits, -1)
    counts = torch.bincount(first, minlength=p.numel()).float() / len(first)
    assert probs.shape[0] == 1
    assert (counts - p).abs().max() < 0.03


@pytest.mark.parametrize("with_value", [False, True])
def test_window_forward_shares_each_prompt_and_equals_a_full_forward(tok, sft_tiny, with_value):
    """`decoder.window_forward` with `prompt_index` computes each distinct prompt once for all its
    rows (`Decoder.prefix_forward`); at every real position its logits, values and gradients equal
    one full forward pass (padding after a row's end is never read by a loss)."""
    import copy

    from minimopd.decoder import supports, window_forward
    from minimopd.models import PolicyWithValue
    assert supports(sft_tiny) is None                                # the shared-prompt path runs
    model = copy.deepcopy(sft_tiny)
    model = PolicyWithValue(model) if with_value else model
    ro = generate(sft_tiny, tok, PROMPTS, num_samples=3, max_new_tokens=10, seed=4)
    real = ro.attention_mask[:, ro.prompt_length - 1:].bool()      # positions holding a real token
    assert not real.all()                                            # some rows ended early: padding
    runs = []
    for index in (ro.prompt_index, None):
        model.zero_grad()
        logits, values = window_forward(model, ro.input_ids, ro.attention_mask, ro.prompt_length, index)
        loss = logits.float().logsumexp(-1)[real].mean() + (values[real].sum() if with_value else 0)
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        runs.append((logits.detach(), values, grads))
    (shared, v_shared, g_shared), (full, v_full, g_full) = runs
    assert shared.shape == (len(ro), ro.input_ids.shape[1] - ro.prompt_length + 1, full.shape[-1])
    torch.testing.assert_close(shared[real], full[real], atol=2e-5, rtol=1e-4)
    if with_value:
        torch.testing.assert_close(v_shared.detach()[real], v_full.detach()[real], atol=2e-5, rtol=1e-4)
        assert (v_shared[:, 0] == 0).all()
    assert len(g_shared) == len(g_full) > 0
    for a, b in zip(g_shared, g_full):
        torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-3)
