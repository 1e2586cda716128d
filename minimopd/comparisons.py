"""Sampled responses, scored: the data of rejection sampling and of DPO.

Every preference recipe after InstructGPT turns a policy's own samples into training data:

* **Best-of-K** (Llama 2's rejection sampling): sample K responses per prompt, keep the one
  the reward model scores highest, fine-tune on the kept ones (`best_of_k`).
* **Reward-ranked pairs**: from the same K samples, the highest- and the lowest-scored
  response form a (chosen, rejected) pair (`ranked_pairs`). This course's stand-in for Llama 3's
  DPO data, which were human comparisons of two responses from different models.
* **Delta pairs** (OLMo 3's delta learning, Geng et al. 2025): chosen from a stronger model of
  the family, rejected from a weaker one, no judge at all (`delta_pairs`). The bet is that the
  *difference* between two models teaches, even when neither is better than the policy.
* **Judged pairs** (Tülu 3's preference data): the policy's own samples pooled with responses
  from other models, a judge (the labeller on notes, the verifier on the verifiable tasks) rates
  every candidate, the best-rated is chosen and a random lower-rated one rejected
  (`judged_pairs`).

`sample_scored` draws the samples once and scores them by the reward model (the proxy, what
training may use) and by the hidden gold scorer (what the tables report, never what selects).
The builders only read its rows, so one draw feeds any of them.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .kl import kl_estimate
from .models import count_parameters, sequence_logprobs
from .rollout import generate
from .tasks import extract_answer, get_task, gold_score, label_pair, sample_responses


@dataclass
class Scored:
    """K samples per prompt: `texts[i]`, `proxy[i]` (reward model, None without one), `gold[i]`,
    `finished[i]` for the i-th prompt's K responses; and what drawing them cost."""
    prompts: list[str]
    texts: list[list[str]]
    gold: list[list[float]]
    finished: list[list[bool]]
    proxy: list[list[float]] | None = None
    cost: dict = field(default_factory=dict)

    def mean_gold(self) -> float:
        """The mean gold score of all samples (the policy's T = 1 quality)."""
        flat = [g for row in self.gold for g in row]
        return sum(flat) / max(1, len(flat))


@torch.no_grad()
def sample_scored(policy, tokenizer, examples: Sequence, *, samples: int, max_new_tokens: int, seed: int = 0,
                  reward_model=None, temperature: float = 1.0, chunk: int = 128) -> Scored:
    """`samples` responses of `policy` to each example (T = `temperature`), each scored by the
    example's task (gold) and, given one, by `reward_model` (its normalised score; a response that
    never ends gets -inf, so it is neither kept nor chosen). Cost: tokens generated and the
    FLOPs of sampling and scoring (2 x params x forward tokens)."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if not examples:
        raise ValueError("sample_scored() got no examples")
    out = Scored(prompts=[e.prompt for e in examples], texts=[], gold=[], finished=[],
                 proxy=[] if reward_model is not None else None)
    generated = forward = 0
    rm_device = next(reward_model.parameters()).device if reward_model is not None else None
    for start in range(0, len(examples), chunk):
        part = examples[start:start + chunk]
        ro = generate(policy, tokenizer, [e.prompt for e in part], num_samples=samples,
                      max_new_tokens=max_new_tokens, temperature=temperature, seed=seed + start)
        generated += int(ro.completion_mask.sum())
        forward += int(ro.attention_mask.sum())
        finished = ro.finished.cpu()
        if reward_model is not None:
            rm = reward_model(ro.input_ids.to(rm_device), ro.attention_mask.to(rm_device)).float().cpu()
            rm = torch.where(finished, rm, torch.full_like(rm, float("-inf")))
        for i, ex in enumerate(part):
            rows = range(i * samples, (i + 1) * samples)
            task = get_task(ex.domain)
            out.texts.append([ro.texts[j] for j in rows])
            out.gold.append([float(task.score(ex, ro.texts[j])) for j in rows])
            out.finished.append([bool(finished[j]) for j in rows])
            if reward_model is not None:
                out.proxy.append([float(rm[j]) for j in rows])
    params = count_parameters(policy) + (count_parameters(reward_model) if reward_model is not None else 0)
    out.cost = {"tokens_generated": generated, "forward_tokens": forward, "flops": 2.0 * params * forward,
                "samples": len(examples) * samples}
    return out


def _need_proxy(scored: Scored, what: str) -> None:
    if scored.proxy is None:
        raise ValueError(f"{what} selects by the reward model's score: draw the samples with "
                         "sample_scored(..., reward_model=rm)")


def best_of_k(scored: Scored) -> tuple[list[tuple[str, str]], dict]:
    """Rejection sampling's SFT data: for each prompt, the finished response the reward model
    scores highest. Returns `(pairs, stats)`: (prompt, response) pairs, and the mean gold of the
    kept responses next to the mean gold of all samples (what selection bought, on the hidden
    scale)."""
    _need_proxy(scored, "best_of_k")
    pairs, kept_gold = [], []
    for prompt, texts, proxy, gold in zip(scored.prompts, scored.texts, scored.proxy, scored.gold):
        best = max(range(len(texts)), key=lambda j: proxy[j])
        if proxy[best] == float("-inf"):
            continue                                   # no response of this prompt finished
        pairs.append((prompt, texts[best].strip()))
        kept_gold.append(gold[best])
    return pairs, {"prompts": len(scored.prompts), "kept": len(pairs), "gold_all": scored.mean_gold(),
                   "gold_kept": sum(kept_gold) / max(1, len(kept_gold))}


def ranked_pairs(scored: Scored, *, min_margin: float = 0.0) -> tuple[list[dict], dict]:
    """DPO pairs ranked by the reward model: per prompt, the highest-scored and the lowest-scored
    *finished* response (chosen, rejected), when their texts differ and the reward model
    separates them by more than `min_margin`. A response cut off at the token budget is never
    paired: as a chat example it would end with an end-of-turn token it never produced, and DPO
    would learn to avoid stopping there. Returns `(pairs, stats)`; pairs are dicts `prompt`,
    `chosen`, `rejected`, `gold_chosen`, `gold_rejected` (`tasks.preference_pairs`' keys), stats
    include how often gold agrees with the order."""
    _need_proxy(scored, "ranked_pairs")
    pairs = []
    for prompt, texts, proxy, gold, done in zip(scored.prompts, scored.texts, scored.proxy, scored.gold,
                                                scored.finished):
        order = sorted((j for j in range(len(texts)) if done[j]), key=lambda j: proxy[j])
        if len(order) < 2:
            continue
        lo, hi = order[0], order[-1]
        if texts[hi].strip() == texts[lo].strip():
            continue
        if not proxy[hi] - proxy[lo] > min_margin:
            continue
        pairs.append({"prompt": prompt, "chosen": texts[hi].strip(), "rejected": texts[lo].strip(),
                      "gold_chosen": gold[hi], "gold_rejected": gold[lo]})
    return pairs, _pair_stats(pairs, len(scored.prompts))


def delta_pairs(strong: Scored, weak: Scored) -> tuple[list[dict], dict]:
    """OLMo 3's delta-learning pairs: for each prompt, the stronger model's first finished sample
    (chosen) against the weaker model's first finished sample (rejected); no reward model. Both
    must be drawn on the same prompts in the same order. A prompt where either model never
    finished gives no pair (see `ranked_pairs`)."""
    if strong.prompts != weak.prompts:
        raise ValueError("delta_pairs: the strong and weak samples are for different prompts; draw both with "
                         "sample_scored on the same examples")
    pairs = []
    for prompt, s_texts, s_fin, s_gold, w_texts, w_fin, w_gold in zip(
            strong.prompts, strong.texts, strong.finished, strong.gold, weak.texts, weak.finished, weak.gold):
        j = next((j for j, f in enumerate(s_fin) if f), None)
        k = next((k for k, f in enumerate(w_fin) if f), None)
        if j is None or k is None or s_texts[j].strip() == w_texts[k].strip():
            continue
        pairs.append({"prompt": prompt, "chosen": s_texts[j].strip(), "rejected": w_texts[k].strip(),
                      "gold_chosen": s_gold[j], "gold_rejected": w_gold[k]})
    return pairs, _pair_stats(pairs, len(strong.prompts))


def judged_pairs(scored: Scored, *, judge: str = "labeller", off_policy: int = 3, seed: int = 0,
                 temperature: float = 0.1) -> tuple[list[dict], dict]:
    """Tülu 3's preference pairs: per prompt the candidates are the policy's finished samples
    (on-policy) and, on notes, `off_policy` responses of other models (`tasks.sample_responses`,
    the pool of varied-quality notes the labeller's data come from); a judge rates every
    candidate, the best-rated (the first on a tie) is chosen and a random lower-rated one is
    rejected; a prompt whose candidates all tie gives no pair. Tülu 3 rated each response with
    GPT-4o on four aspects on a 1-5 scale, drawing from 22 models' outputs. The judges:

    * "labeller" (notes): the simulated labeller compares every two distinct candidates
      (`tasks.label_pair`, Bradley-Terry noise at `temperature`); a rating is a number of wins.
    * "verifier" (verifiable tasks): a rating is the sample's verifier score (`scored.gold`), so
      a right answer is chosen against a wrong one. There is no off-policy pool: `off_policy=0`.

    Returns `(pairs, stats)`: pairs as `ranked_pairs`' plus `chosen_on_policy` and
    `rejected_on_policy`; stats as theirs plus the share of chosen and of rejected responses
    that are the policy's own. Deterministic in `seed`."""
    if judge not in ("labeller", "verifier"):
        raise ValueError(f"unknown judge {judge!r}: 'labeller' (notes, pairwise labels) or 'verifier' (verifiable "
                         "tasks, the verifier's score)")
    if off_policy < 0 or (judge == "verifier" and off_policy):
        raise ValueError(f"off_policy={off_policy}: the number of other models' responses per prompt must be >= 0, "
                         "and 0 for the verifier judge (the off-policy pool holds notes only)")
    rng = random.Random(f"judged-pairs/{seed}/{temperature}/{judge}")
    pairs = []
    for i, (prompt, texts, done, golds) in enumerate(zip(scored.prompts, scored.texts, scored.finished, scored.gold)):
        own, own_gold = [], []
        for text, fin, g in zip(texts, done, golds):
            if fin and text.strip() not in own:
                own.append(text.strip())
                own_gold.append(g)
        pool = [t for t in sample_responses(prompt, off_policy, seed=seed * 100_003 + i) if t not in own] \
            if off_policy else []
        candidates = own + pool
        if len(candidates) < 2:
            continue
        if judge == "verifier":
            ratings, gold = own_gold, own_gold
        else:
            judged = [extract_answer(t) for t in candidates]    # what the judge reads: the answer
            ratings, gold = [0] * len(candidates), [gold_score(prompt, t) for t in judged]
            for a, b in itertools.combinations(range(len(candidates)), 2):
                label = label_pair(prompt, judged[a], judged[b], rng, temperature)
                ratings[a if label["chosen"] is judged[a] else b] += 1
        best = max(range(len(candidates)), key=ratings.__getitem__)
        lower = [j for j in range(len(candidates)) if ratings[j] < ratings[best]]
        if not lower:
            continue
        worst = rng.choice(lower)
        pairs.append({"prompt": prompt, "chosen": candidates[best], "rejected": candidates[worst],
                      "gold_chosen": gold[best], "gold_rejected": gold[worst],
                      "chosen_on_policy": best < len(own), "rejected_on_policy": worst < len(own)})
    stats = _pair_stats(pairs, len(scored.prompts))
    n = max(1, len(pairs))
    stats.update(chosen_on_policy=sum(p["chosen_on_policy"] for p in pairs) / n,
                 rejected_on_policy=sum(p["rejected_on_policy"] for p in pairs) / n)
    return pairs, stats


def _pair_stats(pairs: list[dict], prompts: int) -> dict:
    n = max(1, len(pairs))
    return {"prompts": prompts, "pairs": len(pairs),
            "gold_chosen": sum(p["gold_chosen"] for p in pairs) / n,
            "gold_rejected": sum(p["gold_rejected"] for p in pairs) / n,
            "gold_agrees": sum(p["gold_chosen"] > p["gold_rejected"] for p in pairs) / n}


@torch.no_grad()
def drift(policy, reference, tokenizer, examples: Sequence, *, max_new_tokens: int, seed: int = 0,
          chunk: int = 128) -> dict:
    """Where a policy stands on its own samples (T = 1): their mean task (gold) score and the
    per-token KL to `reference`, estimated as PPO's history logs it (`kl_ref`: the k1 estimate
    log pi - log ref, averaged over the sampled tokens), so a DPO or rejection-sampling model can
    be placed on PPO's gold-against-KL curve. Also the mean length and the unfinished share."""
    device = next(reference.parameters()).device
    gold, kl_sum, tokens, unfinished = [], 0.0, 0.0, 0
    for start in range(0, len(examples), chunk):
        part = examples[start:start + chunk]
        ro = generate(policy, tokenizer, [e.prompt for e in part], max_new_tokens=max_new_tokens,
                      temperature=1.0, seed=seed + start)
        ref = sequence_logprobs(reference, ro.input_ids.to(device), ro.attention_mask.to(device)).float().cpu()
        mask = ro.completion_mask.cpu()
        kl_sum += float((kl_estimate(ro.logprobs.float().cpu(), ref, "k1") * mask).sum())
        tokens += float(mask.sum())
        unfinished += int((~ro.finished.cpu()).sum())
        gold += [float(get_task(e.domain).score(e, t)) for e, t in zip(part, ro.texts)]
    return {"gold": sum(gold) / len(gold), "kl_ref": kl_sum / max(tokens, 1.0), "length": tokens / len(gold),
            "unfinished": unfinished / len(gold)}
