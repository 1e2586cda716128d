"""The online trainer (GRPO family, RLOO), rule rewards, rejection sampling and their errors."""
import copy
import math

import pytest
import torch

from minimopd.rewards import (accuracy_reward, consistency_reward, format_reward, r1_reward,
                              rejection_filter)
from minimopd.signals import VerifierSignal
from minimopd.advantages import get_estimator
from minimopd.experience import Experience
from minimopd.signals import SignalOutput
from minimopd.stages.online import OnlineConfig, preset, sample_examples, train_online
from minimopd.tasks import Example, get_task

ADD = Example("What is 2+3?", "5", "add", "easy")


def test_rule_rewards():
    good = "<think>2+3=5 -> 5</think><answer>5</answer>"
    assert accuracy_reward(ADD, good) == 1.0 and format_reward(ADD, good) == 1.0
    assert consistency_reward(ADD, good) == 1.0
    assert consistency_reward(ADD, "<think>2+3=6 -> 6</think><answer>5</answer>") == 0.0
    assert format_reward(ADD, "5") == 0.0 and accuracy_reward(ADD, "5") == 1.0
    r = r1_reward(format_weight=0.5, consistency_weight=0.25)
    assert r(ADD, good) == pytest.approx(1.75)
    assert r(ADD, "5") == 0.0                      # right answer but no trace: no credit
    assert r(ADD, "<think>x</think><answer>4</answer>") == pytest.approx(0.5)


def test_rejection_filter_keeps_only_verified_and_dedupes():
    other = Example("What is 1+1?", "2", "add", "easy")
    rows = [ADD, ADD, ADD, other]
    texts = ["<think>a -> 5</think><answer>5</answer>", "<think>a -> 5</think><answer>5</answer>",
             "4", "<think>b</think><answer>3</answer>"]
    scores = [1.0, 1.0, 0.0, 0.0]
    assert rejection_filter(rows, texts, scores, per_prompt=2) == [(ADD.prompt, texts[0])]
    with pytest.raises(ValueError, match="same length"):
        rejection_filter(rows, texts, scores[:2])


def _experience(rewards, group_size):
    n = len(rewards)
    ones = torch.ones(n, 3)
    return Experience(input_ids=torch.zeros(n, 3, dtype=torch.long), attention_mask=ones.long(),
                      mask=ones, logprobs=torch.zeros(n, 3), examples=[ADD] * n, rewards=rewards,
                      scores=rewards, signal=SignalOutput(rewards, rewards), finished=ones[:, 0].bool(),
                      group_size=group_size, prompt_length=1)


def test_advantage_selection():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    cfg = OnlineConfig(group_size=4)
    exp = _experience(r, 4)
    g, returns = get_estimator(cfg.advantage)(exp, cfg)
    assert returns is None
    assert g[0] > 0 and g[1] < 0 and torch.allclose(g.view(2, 4).sum(1), torch.zeros(2), atol=1e-5)
    dr = preset("dr_grpo", cfg)
    nostd, _ = get_estimator(dr.advantage)(exp, dr)
    assert torch.allclose(nostd, torch.tensor([0.75, -0.25, -0.25, -0.25, 0.25, 0.25, -0.75, 0.25]))
    with pytest.raises(ValueError, match="needs a teacher signal"):
        get_estimator("teacher_token")(exp, cfg)
    with pytest.raises(ValueError, match="unknown advantage estimator 'token'"):
        get_estimator("token")
    with pytest.raises(ValueError, match="unknown algorithm"):
        preset("ppo2", cfg)


def test_sample_examples_spreads_domains_and_changes_per_step():
    cfg = OnlineConfig(prompts_per_step=6)
    a, b = sample_examples(cfg, 0), sample_examples(cfg, 1)
    assert len(a) == 6 and {e.domain for e in a} == {"add", "sort", "reverse", "count"}
    assert [e.prompt for e in a] != [e.prompt for e in b]


@pytest.mark.parametrize("algo", ["grpo", "dr_grpo", "dapo", "rloo"])
def test_online_loop_runs_and_logs(tok, sft_tiny, algo):
    cfg = preset(algo, OnlineConfig(steps=2, prompts_per_step=4, group_size=4, max_new_tokens=6,
                                    domains=("add",), difficulty="easy", epochs=2, minibatches=2))
    res = train_online(copy.deepcopy(sft_tiny), tok, cfg, progress=False)
    row = res.history[-1]
    for key in ("reward", "accuracy", "length", "length_correct", "length_wrong", "entropy",
                "clip_frac", "tokens_generated", "tokens_trained", "flops", "time", "format_rate"):
        assert key in row, key
    assert row["tokens_generated"] > 0
    if algo == "dapo":   # groups with equal rewards are dropped: only kept rows are trained on
        assert 0.0 <= row["kept_fraction"] <= 1.0
        assert (row["tokens_trained"] == 0) == (all(r["kept_fraction"] == 0 for r in res.history))
    else:   # 2 epochs x every token of every row
        assert row["entropy"] > 0
        assert row["tokens_trained"] == 2 * row["tokens_generated"]


def test_grpo_changes_the_policy_and_kl_is_tracked(tok, sft_tiny):
    model, ref = copy.deepcopy(sft_tiny), copy.deepcopy(sft_tiny)
    cfg = OnlineConfig(steps=3, prompts_per_step=4, group_size=4, max_new_tokens=6, lr=5e-3,
                       domains=("add",), difficulty="medium", kl_beta=0.04, epochs=2)
    # A reward that differs within every group (completion length), so advantages are non-zero
    # and the update is a real one rather than float noise in the KL term.
    by_length = VerifierSignal(lambda ex, text: float(len(text)))
    res = train_online(model, tok, cfg, signal=by_length, ref_model=ref, progress=False)
    assert res.history[0]["kl_ref"] == pytest.approx(0.0, abs=1e-6)   # starts at the reference
    assert res.history[-1]["ref_tokens"] > 0
    moved = any(not torch.equal(p, q) for p, q in zip(model.parameters(), ref.parameters()))
    assert moved and res.history[-1]["kl_ref"] > 0


def test_online_errors(tok, sft_tiny):
    base = OnlineConfig(steps=1, prompts_per_step=2, group_size=2, max_new_tokens=4, domains=("add",))
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        train_online(sft_tiny, tok, OnlineConfig(group_size=1), progress=False)
    with pytest.raises(ValueError, match="needs a frozen reference model"):
        train_online(sft_tiny, tok, OnlineConfig(kl_beta=0.1), progress=False)
    nan_signal = VerifierSignal(lambda ex, text: float("nan"))
    with pytest.raises(ValueError, match="returned nan for prompt"):
        train_online(copy.deepcopy(sft_tiny), tok, base, signal=nan_signal, progress=False)
    bad_shape = VerifierSignal(lambda ex, text: torch.ones(3))
    with pytest.raises(ValueError, match="tensor of shape \\(3,\\)"):
        train_online(copy.deepcopy(sft_tiny), tok, base, signal=bad_shape, progress=False)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        train_online(copy.deepcopy(sft_tiny), tok, OnlineConfig(max_new_tokens=400, domains=("add",)),
                     progress=False)


def test_kl_blowup_stops_with_a_message(tok, sft_tiny):
    ref = copy.deepcopy(sft_tiny)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p))               # a very different reference
    cfg = OnlineConfig(steps=2, prompts_per_step=2, group_size=2, max_new_tokens=4, domains=("add",),
                       kl_beta=0.01, max_kl=1e-3)
    with pytest.raises(FloatingPointError, match="KL to the reference reached .* at step 0"):
        train_online(copy.deepcopy(sft_tiny), tok, cfg, ref_model=ref, progress=False)


def test_flops_budget_stops_early(tok, sft_tiny):
    cfg = OnlineConfig(steps=50, prompts_per_step=2, group_size=2, max_new_tokens=4,
                       domains=("add",), flops_budget=1.0)
    res = train_online(copy.deepcopy(sft_tiny), tok, cfg, progress=False)
    assert len(res.history) == 1 and res.info["steps"] == 1 and res.info["flops"] > 1.0
