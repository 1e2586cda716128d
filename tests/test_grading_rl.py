"""The lab02 (reward model), lab03 (PPO), lab04 (DPO), lab05 (GRPO), lab06 (R1), lab07 (on-policy distillation), lab08 (MOPD) and lab09 (support overlap) autograders: the references pass, every classic bug is caught
with feedback that names it."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minimopd import grading
from minimopd.grading import LABS, NOT_IMPLEMENTED, check
from minimopd.kl import kl_estimate
from minimopd.losses import group_advantages as ref_group_advantages
from minimopd.losses import grpo_loss as ref_grpo_loss
from minimopd.rewards import accuracy_reward as ref_accuracy_reward
from minimopd.rewards import format_reward as ref_format_reward
from minimopd.rewards import rejection_filter as ref_rejection_filter

LAB05 = [gf.name for gf in LABS["lab05"]]
LAB06 = [gf.name for gf in LABS["lab06"]]
LAB07 = [gf.name for gf in LABS["lab07"]]
LAB08 = [gf.name for gf in LABS["lab08"]]
LAB09 = [gf.name for gf in LABS["lab09"]]
GRADED = [(lab, gf.name) for lab in ("lab02", "lab03", "lab04", "lab05", "lab06", "lab07", "lab08", "lab09") for gf in LABS[lab]]


def test_registries():
    assert LAB05 == ["group_advantages", "k3_kl", "grpo_loss"]
    assert LAB06 == ["format_reward", "accuracy_reward", "r1_reward", "rejection_filter"]
    assert LAB07 == ["opd_advantages", "full_reverse_kl", "topk_reverse_kl"]
    assert LAB08 == ["route", "mopd_advantages", "mopd_loss"]
    assert LAB09 == ["support_overlap", "compute_to_reach", "gap_recovery"]
    for lab in ("lab05", "lab06", "lab07", "lab08", "lab09"):
        assert sum(gf.points for gf in LABS[lab]) == 10, lab
    names = [gf.name for lab in LABS.values() for gf in lab]
    assert len(names) == len(set(names)), "graded function names must be unique across labs"


@pytest.mark.parametrize("lab,name", GRADED)
@pytest.mark.parametrize("hidden", [False, True])
def test_reference_passes_against_itself(lab, name, hidden, capsys):
    gf = grading.find(name, lab)
    assert check(name, gf.resolve(), lab=lab, hidden=hidden) == gf.points
    out = capsys.readouterr().out
    assert "FAILED" not in out and f"{gf.points:g}/{gf.points:g} points" in out


@pytest.mark.parametrize("lab,name", GRADED)
def test_stub_is_not_implemented(lab, name):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    with pytest.raises(AssertionError) as info:
        check(name, stub, lab=lab)
    assert str(info.value).startswith(f"{name}: {NOT_IMPLEMENTED}")


# --------------------------------------------------------------------------- lab05 bugs

def ga_global_std(rewards, group_size, scale_std=True, eps=1e-4):
    g = rewards.float().view(-1, group_size)
    c = g - g.mean(1, keepdim=True)
    return (c / (rewards.float().std() + eps) if scale_std else c).reshape(-1)


def ga_biased_std(rewards, group_size, scale_std=True, eps=1e-4):
    g = rewards.view(-1, group_size)
    c = g - g.mean(1, keepdim=True)
    return (c / (g.std(1, unbiased=False, keepdim=True) + eps) if scale_std else c).reshape(-1)


def ga_no_eps(rewards, group_size, scale_std=True, eps=1e-4):
    g = rewards.view(-1, group_size)
    c = g - g.mean(1, keepdim=True)
    return (c / g.std(1, keepdim=True) if scale_std else c).reshape(-1)


def ga_ignores_scale_std(rewards, group_size, scale_std=True, eps=1e-4):
    return ref_group_advantages(rewards, group_size, scale_std=True, eps=eps)


def ga_hardcoded_eps(rewards, group_size, scale_std=True, eps=1e-4):
    return ref_group_advantages(rewards, group_size, scale_std=scale_std)


def ga_torch_std_g1(rewards, group_size, scale_std=True, eps=1e-4):
    g = rewards.view(-1, group_size)
    c = g - g.mean(1, keepdim=True)
    return (c / (g.std(1, keepdim=True) + eps) if scale_std else c).reshape(-1)


def ga_batch_mean(rewards, group_size, scale_std=True, eps=1e-4):
    g = rewards.view(-1, group_size)
    c = g - rewards.mean()
    return (c / (g.std(1, keepdim=True) + eps) if scale_std else c).reshape(-1)


def ga_wrong_layout(rewards, group_size, scale_std=True, eps=1e-4):
    g = rewards.view(group_size, -1)
    c = g - g.mean(0, keepdim=True)
    return (c / (g.std(0, keepdim=True) + eps) if scale_std else c).reshape(-1)


def kl_reversed(logprobs, ref_logprobs):
    x = logprobs - ref_logprobs
    return torch.exp(x) - x - 1            # uses pi / ref instead of ref / pi


def kl_k1(logprobs, ref_logprobs):
    return logprobs - ref_logprobs


def kl_no_minus_one(logprobs, ref_logprobs):
    x = ref_logprobs - logprobs
    return torch.exp(x) - x


def kl_detached(logprobs, ref_logprobs):
    return kl_estimate(logprobs.detach(), ref_logprobs, "k3")


def _grpo(lp, old, adv, mask, *, eps_low=0.2, eps_high=None, aggregation="grpo", max_tokens=None,
          ref_logprobs=None, beta=0.0, pick=torch.maximum, clip_adv=False, kl_sign=1.0, norm=None,
          skip_empty=False, clamp=True):
    """A hand-written GRPO loss with switches for the classic bugs."""
    hi = eps_low if eps_high is None else eps_high
    a = adv[:, None] if adv.dim() == 1 else adv
    ratio = torch.exp(lp - old)
    if clip_adv:
        per = pick(-a * ratio, -a.clamp(1 - eps_low, 1 + hi) * ratio)
    else:
        per = pick(-a * ratio, -a * ratio.clamp(1 - eps_low, 1 + hi))
    if beta:
        x = ref_logprobs - lp
        per = per + kl_sign * beta * (torch.exp(x) - x - 1)
    m = mask
    lens = m.sum(1)
    c = (lambda t: t.clamp(min=1)) if clamp else (lambda t: t)
    N = int((lens > 0).sum()) if skip_empty else m.shape[0]
    L = m.shape[1] if max_tokens is None else max_tokens
    agg = norm or aggregation
    if agg == "grpo":
        loss = ((per * m).sum(1) / c(lens)).sum() / N
    elif agg == "dr_grpo":
        loss = (per * m).sum() / (N * L)
    elif agg == "dr_grpo_T":
        loss = (per * m).sum() / (m.shape[0] * m.shape[1])
    else:
        loss = (per * m).sum() / c(m.sum())
    return loss, {}


def gl_correct(*args, **kw):
    return _grpo(*args, **kw)


def gl_min(*args, **kw):
    return _grpo(*args, pick=torch.minimum, **kw)


def gl_clip_adv(*args, **kw):
    return _grpo(*args, clip_adv=True, **kw)


def gl_kl_sign(*args, **kw):
    return _grpo(*args, kl_sign=-1.0, **kw)


def gl_token_mean_always(*args, aggregation="grpo", **kw):
    return _grpo(*args, norm="dapo", **kw)


def gl_drgrpo_ignores_max_tokens(*args, aggregation="grpo", **kw):
    return _grpo(*args, aggregation=aggregation, norm="dr_grpo_T" if aggregation == "dr_grpo" else None, **kw)


def gl_ignores_eps_high(*args, eps_high=None, **kw):
    return _grpo(*args, **kw)


def gl_skip_empty_rows(*args, **kw):
    return _grpo(*args, skip_empty=True, **kw)


def gl_nan_on_empty(*args, **kw):
    return _grpo(*args, clamp=False, **kw)


def gl_loss_only(*args, **kw):
    return ref_grpo_loss(*args, **kw)[0]


def gl_item(*args, **kw):
    loss, stats = ref_grpo_loss(*args, **kw)
    return loss.item(), stats


def gl_objective(*args, **kw):
    loss, stats = ref_grpo_loss(*args, **kw)
    return -loss, stats


def gl_stats_not_dict(*args, **kw):
    loss, stats = ref_grpo_loss(*args, **kw)
    return loss, [stats["clip_frac"]]


LAB05_BUGS = [
    # (function, buggy implementation, the case family it must fail first, words of the feedback)
    ("group_advantages", ga_global_std, "binary rewards", "std must be taken per group"),
    ("group_advantages", ga_biased_std, "binary rewards", "UNBIASED std"),
    ("group_advantages", ga_no_eps, "binary rewards", "(std + eps)"),
    ("group_advantages", ga_ignores_scale_std, "scale_std=False", "no division by the std"),
    ("group_advantages", ga_hardcoded_eps, "custom eps", "eps argument"),
    ("group_advantages", ga_torch_std_g1, "group_size=1", "a group of one has no spread"),
    ("group_advantages", ga_batch_mean, "binary rewards", "per group"),
    ("group_advantages", ga_wrong_layout, "binary rewards", "reshape(-1, G)"),
    ("k3_kl", kl_reversed, "random log-probs", "wrong direction"),
    ("k3_kl", kl_k1, "random log-probs", "that is k1"),
    ("k3_kl", kl_no_minus_one, "random log-probs", "subtract 1"),
    ("k3_kl", kl_detached, "random log-probs", "not differentiable"),
    ("grpo_loss", gl_min, "aggregation='grpo'", "min instead of max"),
    ("grpo_loss", gl_clip_adv, "aggregation='grpo'", "not the advantage"),
    ("grpo_loss", gl_token_mean_always, "aggregation='grpo'", "wrong normaliser: your value is the 'dapo'"),
    ("grpo_loss", gl_drgrpo_ignores_max_tokens, "aggregation='dr_grpo', max_tokens=L_max", "N * max_tokens"),
    ("grpo_loss", gl_ignores_eps_high, "asymmetric clipping", "eps_high is ignored"),
    ("grpo_loss", gl_kl_sign, "beta > 0", "KL sign"),
    ("grpo_loss", gl_skip_empty_rows, "rows with an all-zero mask", "still counts in N"),
    ("grpo_loss", gl_nan_on_empty, "rows with an all-zero mask", "must not give nan"),
    ("grpo_loss", gl_loss_only, "aggregation='grpo'", "expected a tuple (loss, stats)"),
    ("grpo_loss", gl_item, "aggregation='grpo'", "no .item()"),
    ("grpo_loss", gl_objective, "aggregation='grpo'", "sign flipped"),
    ("grpo_loss", gl_stats_not_dict, "aggregation='grpo'", "stats: expected a dict"),
]


def _ids(bugs):
    return [f"{b[0]}-{b[1].__name__}" for b in bugs]


def _assert_caught(name, fn, family, words, capsys):
    with pytest.raises(AssertionError) as info:
        check(name, fn)
    msg = str(info.value)
    assert msg.startswith(f"{name}: {family}"), msg
    assert words in msg, msg
    out = capsys.readouterr().out
    assert "FAILED" in out and "0/" in out


@pytest.mark.parametrize("name,fn,family,words", LAB05_BUGS, ids=_ids(LAB05_BUGS))
def test_lab05_classic_bug_is_caught(name, fn, family, words, capsys):
    _assert_caught(name, fn, family, words, capsys)


def test_a_correct_hand_written_grpo_loss_passes(capsys):
    """torch.maximum (not the library's explicit branch) and an empty stats dict are fine."""
    assert check("grpo_loss", gl_correct, hidden=True) == 5
    assert "FAILED" not in capsys.readouterr().out


def test_grpo_loss_gradient_is_checked():
    def half_gradient(*args, **kw):
        loss, stats = ref_grpo_loss(*args, **kw)
        return loss.detach() + 0.5 * (loss - loss.detach()), stats

    with pytest.raises(AssertionError, match=r"gradient w\.r\.t\. `logprobs`"):
        check("grpo_loss", half_gradient)


# --------------------------------------------------------------------------- lab06 bugs

_FORMAT = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.S)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def fr_no_end_cut(example, completion):
    return float(bool(_FORMAT.fullmatch(completion)) and all(completion.count(t) == 1 for t in _TAGS))


def fr_no_tag_count(example, completion):
    return float(bool(_FORMAT.fullmatch(completion.split("<|end|>")[0])))


def fr_no_whitespace(example, completion):
    text = completion.split("<|end|>")[0]
    ok = re.fullmatch(r"<think>(.*?)</think><answer>(.*?)</answer>", text, re.S)
    return float(bool(ok) and all(text.count(t) == 1 for t in _TAGS))


def fr_search(example, completion):
    text = completion.split("<|end|>")[0]
    return float(bool(_FORMAT.search(text)) and all(text.count(t) == 1 for t in _TAGS))


def fr_contains(example, completion):
    return float(all(t in completion for t in _TAGS))


def fr_nonempty(example, completion):
    text = completion.split("<|end|>")[0]
    m = _FORMAT.fullmatch(text)
    return float(bool(m) and all(text.count(t) == 1 for t in _TAGS) and all(g.strip() for g in m.groups()))


def fr_constant_one(example, completion):
    return 1.0


def fr_returns_str(example, completion):
    return "yes" if ref_format_reward(example, completion) else "no"


def ar_raw_equality(example, completion):
    return float(completion.strip() == example.answer)


def ar_first_answer(example, completion):
    m = re.search(r"<answer>(.*?)</answer>", completion, re.S)
    text = m.group(1) if m else completion
    return float(" ".join(text.split()) == example.answer)


def ar_ignores_end(example, completion):
    spans = re.findall(r"<answer>(.*?)</answer>", completion, re.S)
    return float(" ".join((spans[-1] if spans else completion).split()) == example.answer)


def r1_no_format_gate(example, completion, format_weight=0.5):
    return ref_accuracy_reward(example, completion) + format_weight * ref_format_reward(example, completion)


def r1_hardcoded_weight(example, completion, format_weight=0.5):
    f = ref_format_reward(example, completion)
    return f * ref_accuracy_reward(example, completion) + 0.5 * f


def r1_format_counts_one(example, completion, format_weight=0.5):
    f = ref_format_reward(example, completion)
    return f * ref_accuracy_reward(example, completion) + f


def _rf(examples, completions, scores, per_prompt=1, *, ok=lambda s: s == 1.0, strip=True, dedup=True,
        cap=True, grouped=True, global_dedup=False):
    kept, flat, seen = {}, [], set()
    for ex, text, score in zip(examples, completions, scores):
        if not ok(score):
            continue
        text = text.rstrip() if strip else text
        bucket = kept.setdefault(ex.prompt, [])
        dup = (text in seen) if global_dedup else (dedup and text in bucket)
        if (not cap or len(bucket) < per_prompt) and not dup:
            bucket.append(text)
            seen.add(text)
            flat.append((ex.prompt, text))
    return [(p, t) for p, ts in kept.items() for t in ts] if grouped else flat


def rf_keep_partial(examples, completions, scores, *, per_prompt=1):
    return _rf(examples, completions, scores, per_prompt, ok=lambda s: s > 0)


def rf_keep_all(examples, completions, scores, *, per_prompt=1):
    return _rf(examples, completions, scores, per_prompt, ok=lambda s: True)


def rf_no_dedup(examples, completions, scores, *, per_prompt=1):
    return _rf(examples, completions, scores, per_prompt, dedup=False)


def rf_global_dedup(examples, completions, scores, *, per_prompt=1):
    return _rf(examples, completions, scores, per_prompt, global_dedup=True)


def rf_no_cap(examples, completions, scores, *, per_prompt=1):
    return _rf(examples, completions, scores, per_prompt, cap=False)


def rf_no_strip(examples, completions, scores, *, per_prompt=1):
    return _rf(examples, completions, scores, per_prompt, strip=False)


def rf_sample_order(examples, completions, scores, *, per_prompt=1):
    return _rf(examples, completions, scores, per_prompt, grouped=False)


def rf_texts_only(examples, completions, scores, *, per_prompt=1):
    return [t for _, t in ref_rejection_filter(examples, completions, scores, per_prompt=per_prompt)]


LAB06_BUGS = [
    ("format_reward", fr_no_end_cut, "<|end|> tail", "first <|end|>"),
    ("format_reward", fr_no_tag_count, "duplicate or nested tags", "exactly one of each tag"),
    ("format_reward", fr_no_whitespace, "well-formed traces", "only whitespace (any amount)"),
    ("format_reward", fr_search, "text outside the blocks", "nothing but whitespace"),
    ("format_reward", fr_contains, "duplicate or nested tags", "exactly one of each tag"),
    ("format_reward", fr_nonempty, "empty blocks", "contents may be empty"),
    ("format_reward", fr_constant_one, "missing or unclosed tag", "closing tag"),
    ("format_reward", fr_returns_str, "well-formed traces", "return a float"),
    ("accuracy_reward", ar_raw_equality, "correct reasoning trace", "get_task(example.domain).score"),
    ("accuracy_reward", ar_first_answer, "several answer blocks", "get_task(example.domain).score"),
    ("accuracy_reward", ar_ignores_end, "text after <|end|> is ignored", "get_task(example.domain).score"),
    ("r1_reward", r1_no_format_gate, "correct answer, broken format", "only counts when the format is right"),
    ("r1_reward", r1_hardcoded_weight, "custom format_weight", "hard-coded 0.5"),
    ("r1_reward", r1_format_counts_one, "correct and well-formed", "worth format_weight, not 1"),
    ("rejection_filter", rf_keep_all, "G samples per prompt", "verified-correct"),
    ("rejection_filter", rf_keep_partial, "partial credit is not verified", "partial credit (0.5)"),
    ("rejection_filter", rf_no_dedup, "per_prompt=2", "DISTINCT"),
    ("rejection_filter", rf_global_dedup, "the same text for different prompts", "PER PROMPT"),
    ("rejection_filter", rf_no_cap, "G samples per prompt", "at most per_prompt"),
    ("rejection_filter", rf_no_strip, "trailing whitespace", "rstrip"),
    ("rejection_filter", rf_sample_order, "interleaved prompts", "group the pairs by prompt"),
    ("rejection_filter", rf_texts_only, "G samples per prompt", "pair (example.prompt, completion)"),
]


@pytest.mark.parametrize("name,fn,family,words", LAB06_BUGS, ids=_ids(LAB06_BUGS))
def test_lab06_classic_bug_is_caught(name, fn, family, words, capsys):
    _assert_caught(name, fn, family, words, capsys)


def test_format_cases_cover_both_outcomes():
    """Neither 'always 1' nor 'always 0' can pass: every seed has well- and malformed strings."""
    gf = grading.find("format_reward", "lab06")
    for seed in grading.HIDDEN_SEEDS:
        values = {ref_format_reward(*c.args) for c in gf.cases(seed)}
        assert values == {0.0, 1.0}


def test_accuracy_cases_cover_both_outcomes():
    gf = grading.find("accuracy_reward", "lab06")
    values = [ref_accuracy_reward(*c.args) for c in gf.cases(0)]
    assert 0.0 in values and 1.0 in values


def test_python_m_grading_grades_a_student_lab():
    """`python -m minimopd.grading` (the package's __main__) still works after the split."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "minimopd.grading", str(root / "labs" / "lab05_grpo.ipynb")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "lab05" in proc.stdout and "not implemented yet" in proc.stdout and "0 / 10" in proc.stdout
