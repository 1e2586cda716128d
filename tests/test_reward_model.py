"""The reward-model stage: InstructGPT's ranking loss (value and gradient against a loop),
the pairwise metrics and their noise ceiling, the batch layout, and a tiny model that learns
the labeller's taste and is normalised on its reference policy's samples."""
import copy
import math

import pytest
import torch

from minimopd.models import RewardModel, build_model, count_parameters
from minimopd.stages.reward_model import (RewardModelConfig, collate_rankings, evaluate_reward_model, normalise,
                                          pairwise_metrics, ranking_loss, ranking_rows, score_texts,
                                          train_reward_model)
from minimopd.tasks import get_task, gold_score, preference_pairs, preference_rankings


def _loop_ranking_loss(rewards, chosen, rejected, group):
    per_group = {}
    for c, r, g in zip(chosen.tolist(), rejected.tolist(), group.tolist()):
        per_group.setdefault(g, []).append(-math.log(1 / (1 + math.exp(-(rewards[c] - rewards[r]).item()))))
    return sum(sum(v) / len(v) for v in per_group.values()) / len(per_group)


def test_ranking_loss_is_the_mean_over_prompts_of_each_prompts_mean_pair_loss():
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(9, generator=g, dtype=torch.float64, requires_grad=True)
    # prompt 0: 3 responses, 3 pairs; prompt 1: 4 responses, 1 pair; prompt 2: 2 responses, 1 pair
    chosen, rejected = torch.tensor([0, 2, 2, 4, 7]), torch.tensor([1, 0, 1, 6, 8])
    group = torch.tensor([0, 0, 0, 1, 2])
    loss = ranking_loss(rewards, chosen, rejected, group)
    assert loss.item() == pytest.approx(_loop_ranking_loss(rewards.detach(), chosen, rejected, group), rel=1e-12)
    # a pair of a prompt with one pair weighs three times a pair of a prompt with three
    loss.backward()
    one = -(1 - torch.sigmoid(rewards[4] - rewards[6])) / 3
    three = -(1 - torch.sigmoid(rewards[0] - rewards[1])) / 3 / 3
    assert rewards.grad[6].item() == pytest.approx(-one.item(), rel=1e-9)
    assert rewards.grad[3].item() == 0.0                               # in no pair
    assert rewards.grad[1].item() == pytest.approx(
        -three.item() + (1 - torch.sigmoid(rewards[2] - rewards[1])).item() / 9, rel=1e-9)
    assert torch.autograd.gradcheck(lambda r: ranking_loss(r, chosen, rejected, group), (rewards.detach().requires_grad_(),))


def test_pairwise_metrics_hand_cases():
    # noiseless labeller: the ceiling is 1 on pairs with unequal gold, 1/2 on ties
    m = pairwise_metrics(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 1.0, 2.0]),
                         torch.tensor([0.9, 0.8, 0.5]), torch.tensor([0.1, 0.2, 0.5]), temperature=0)
    assert m["accuracy"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert m["noise_ceiling"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["expected_accuracy"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert m["gold_agreement"] == pytest.approx(0.5) and m["pairs"] == 3
    # a noisy labeller: p = sigmoid(gold gap / T); the gold scorer's own expected accuracy is the ceiling
    gc, gr, T = torch.tensor([0.7, 0.4, 0.2]), torch.tensor([0.5, 0.6, 0.1]), 0.1
    p = torch.sigmoid((gc - gr) / T)
    gold_as_model = pairwise_metrics(gc, gr, gc, gr, T)
    assert gold_as_model["expected_accuracy"] == pytest.approx(gold_as_model["noise_ceiling"])
    assert gold_as_model["noise_ceiling"] == pytest.approx(float(torch.maximum(p, 1 - p).mean()))
    flipped = pairwise_metrics(gr, gc, gc, gr, T)                      # prefers the worse side of every pair
    assert flipped["expected_accuracy"] == pytest.approx(1 - gold_as_model["noise_ceiling"])
    assert flipped["gold_agreement"] == 0.0


def test_preference_pairs_are_what_they_were_before_rankings():
    """`preference_pairs` is now `preference_rankings` flattened; its output is pinned to the
    digest of the pairs the earlier implementation gave for these arguments."""
    import hashlib
    import json
    pairs = preference_pairs(get_task("notes").sample(30, seed=3), responses_per_prompt=5, seed=2, temperature=0.3)
    assert len(pairs) == 300
    assert hashlib.sha256(json.dumps(pairs, sort_keys=True).encode()).hexdigest()[:16] == "a7754e5e7bb9db35"


def test_rankings_flatten_to_the_pairs_and_carry_gold(tok):
    exs = get_task("notes").sample(6, seed=4)
    rankings = preference_rankings(exs, responses_per_prompt=4, seed=2, temperature=0.3)
    assert preference_pairs(exs, responses_per_prompt=4, seed=2, temperature=0.3) == [
        {"prompt": r["prompt"], "chosen": r["responses"][c], "rejected": r["responses"][j],
         "gold_chosen": r["gold"][c], "gold_rejected": r["gold"][j]} for r in rankings for c, j in r["pairs"]]
    r = rankings[0]
    assert r["gold"] == [gold_score(r["prompt"], t) for t in r["responses"]] and len(r["pairs"]) == 6
    rows = ranking_rows(tok, rankings)
    batch = collate_rankings(rows[:2], tok.pad_token_id)
    assert batch["input_ids"].shape[0] == 8 and batch["chosen"].shape == (12,)
    assert batch["group"].tolist() == [0] * 6 + [1] * 6
    # the batch's chosen row of rankings[1]'s first pair is that response, in the chat format
    c, _ = rankings[1]["pairs"][0]
    row = batch["chosen"][6].item()
    text = tok.decode(batch["input_ids"][row][batch["attention_mask"][row].bool()])
    assert rankings[1]["responses"][c] in text and rankings[1]["prompt"] in text
    with pytest.raises(ValueError, match="no ranking has a labelled pair"):
        ranking_rows(tok, [{**r, "pairs": []}])
    with pytest.raises(ValueError, match="longer than the model's context"):
        ranking_rows(tok, rankings, context=8)
    same = {**r, "responses": [r["responses"][0]] * 4}
    with pytest.raises(ValueError, match="compares the response .* with itself"):
        ranking_rows(tok, [same])
    with pytest.raises(ValueError, match=r"the pair \(0, 4\) .* points outside its 4 responses"):
        ranking_rows(tok, [{**r, "pairs": [(0, 4)]}])


def test_a_tiny_reward_model_learns_the_labeller_and_is_normalised_on_its_policy(tok, sft_tiny):
    cfg = RewardModelConfig(steps=40, prompts_per_batch=8, lr=3e-3, normalise_samples=32, normalise_tokens=12)
    before = evaluate_reward_model(RewardModel(copy.deepcopy(sft_tiny)), tok, n_prompts=40)
    assert before["accuracy"] == 0.5 and before["gold_agreement"] == 0.0   # a zero head ties every pair
    res = train_reward_model(copy.deepcopy(sft_tiny), tok, cfg, reference_policy=sft_tiny, eval_prompts=40)
    rm, ev = res.model, res.info["eval"]
    assert isinstance(rm, RewardModel) and res.info["prompts"] == 320
    assert res.history[0]["pair_accuracy"] == 0.5                        # ties count half, as in evaluation
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert ev["expected_accuracy"] > 0.6 and ev["gold_agreement"] > 0.65
    assert res.info["flops"] > 6.0 * count_parameters(rm) * res.info["tokens"]   # + the normalisation's sampling
    # normalised: the same policy samples now score mean 0, std 1
    from minimopd.rollout import generate
    prompts = [e.prompt for e in get_task("notes").sample(32, split="train", seed=53)]
    ro = generate(sft_tiny, tok, prompts, max_new_tokens=12, temperature=1.0, seed=53)
    with torch.no_grad():
        scores = rm(ro.input_ids, ro.attention_mask)
    assert scores.mean().item() == pytest.approx(0.0, abs=1e-4) and scores.std().item() == pytest.approx(1.0, abs=1e-4)
    # score_texts reads a (prompt, response) as the chat format and agrees with the model
    r = preference_rankings(get_task("notes").sample(2, seed=9), responses_per_prompt=2)[0]
    got = score_texts(rm, tok, [r["prompt"]] * 2, r["responses"])
    rows = ranking_rows(tok, [r])
    batch = collate_rankings(rows, tok.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(got, rm(batch["input_ids"], batch["attention_mask"]).float())


def test_normalise_refuses_a_reward_model_that_scores_everything_alike(tok, sft_tiny):
    rm = RewardModel(build_model("tiny", tok, seed=1))                  # a zero head: every score is 0
    with pytest.raises(ValueError, match="scores all 8 policy samples alike"):
        normalise(rm, sft_tiny, tok, n=8, max_new_tokens=4)


def test_reward_model_artifact_is_cached_with_its_scale(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMOPD_CACHE", str(tmp_path))
    from minimopd.profiles import get_profile
    from minimopd.recipes_pref import reward_model_artifact, reward_model_eval
    art = reward_model_artifact("smoke", progress=False, steps=6)
    again = reward_model_artifact("smoke", progress=False, steps=6)
    assert not art.cached and again.cached and again.path == art.path
    assert isinstance(again.model, RewardModel)
    norm = art.info["normalisation"]
    assert again.model.norm_mean.item() == pytest.approx(norm["raw_mean"])
    assert again.model.norm_std.item() == pytest.approx(norm["raw_std"])
    ev = reward_model_eval(again, get_profile("smoke"), 0)
    assert ev["pairs"] == 6 * 3 * get_profile("smoke").eval_per_level          # K = 4: 6 pairs per prompt


def test_no_preference_stage_is_keyed_by_the_evaluation_size():
    """`minimopd lineage --eval-per-level` re-scores cached stages: the reward model's and PPO's
    configs do not depend on the profile's evaluation size."""
    from minimopd.profiles import get_profile
    from minimopd.recipes_pref import ppo_config
    for name in ("smoke", "cpu"):
        p = get_profile(name)
        assert RewardModelConfig.from_profile(p) == RewardModelConfig.from_profile(p.replace(eval_per_level=7))
        assert ppo_config(p, 0).cache_dict() == ppo_config(p.replace(eval_per_level=7), 0).cache_dict()


def test_reward_vs_gold_figure_draws_each_response_and_the_mean_of_each_gold_bin():
    from minimopd.plots import reward_vs_gold_figure
    gold = [0.05, 0.08, 0.5, 0.55, 1.0]
    scores = [-1.0, -3.0, 0.0, 1.0, 2.0]
    fig = reward_vs_gold_figure(scores, gold, bins=4)
    points, means = fig.data
    assert list(points.x) == gold and list(points.y) == scores
    assert list(means.x) == [0.125, 0.625, 0.875] and list(means.y) == [-2.0, 0.5, 2.0]   # 1.0 joins the last bin
    with pytest.raises(ValueError, match="one gold score per reward score"):
        reward_vs_gold_figure([1.0], [0.5, 0.6])


def test_pair_right_counts_a_tie_half_and_a_gap_within_the_tolerance_as_a_tie():
    from minimopd.stages.reward_model import pair_right
    c, r = torch.tensor([1.0, 0.0, 2.0, 5.0]), torch.tensor([1.0, 1.0, 2.0 + 1e-6, 4.0])
    assert pair_right(c, r).tolist() == [0.5, 0.0, 0.0, 1.0]
    assert pair_right(c, r, tie=1e-4).tolist() == [0.5, 0.0, 0.5, 1.0]


# --------------------------------------------------------------------------- Llama 2's second reward model

def test_restraint_is_the_gold_scorers_faults_and_labels_its_own_rankings():
    from minimopd.tasks import CRITERIA, restraint_score
    p = "Write a note to Ana about tea."
    assert restraint_score(p, "Hi Ana, lovely tea. So glad!") == 1.0             # two warm words, no fault
    assert restraint_score(p, "Hi there.") == 1.0                                # restraint is not helpfulness
    assert restraint_score(p, "So glad, lovely, great, nice, kind!") == pytest.approx(0.6)   # 2 warm words too many
    assert restraint_score(p, "Ana, tea tea, xqzt.") == pytest.approx(1 - 0.2 - 0.3)          # a repeat, a non-word
    assert restraint_score(p, "") == 0.0 and set(CRITERIA) == {"gold", "restraint"}
    exs = get_task("notes").sample(5, seed=4)
    gold = preference_rankings(exs, seed=2)
    safe = preference_rankings(exs, seed=2, criterion="restraint")
    assert [r["responses"] for r in safe] == [r["responses"] for r in gold]      # same notes, another judge
    assert all(r["gold"] == [restraint_score(r["prompt"], t) for t in r["responses"]] for r in safe)
    pairs = preference_pairs(exs, seed=2, criterion="restraint")
    assert len(pairs) == sum(len(r["pairs"]) for r in safe)
    assert all(p["gold_chosen"] == restraint_score(p["prompt"], p["chosen"]) for p in pairs)
    with pytest.raises(ValueError, match="unknown labelling criterion 'kindness'"):
        preference_rankings(exs, criterion="kindness")
    with pytest.raises(ValueError, match="criterion='kindness'"):
        RewardModelConfig(criterion="kindness")


def test_the_criterion_keys_a_reward_model_only_when_it_is_not_gold():
    from minimopd.cache import stage_key
    cfg = RewardModelConfig(steps=7)
    assert "criterion" not in cfg.cache_dict()                      # keys cached before criteria existed hold
    assert stage_key("reward_model", config=cfg) != stage_key("reward_model", config=RewardModelConfig(
        steps=7, criterion="restraint"))


def test_gated_reward_model_takes_the_safety_score_below_the_threshold(tok, tiny_model):
    from minimopd.models import GatedRewardModel
    from minimopd.signals import RewardModelSignal
    torch.manual_seed(0)
    helpful, safety = RewardModel(copy.deepcopy(tiny_model)), RewardModel(copy.deepcopy(tiny_model))
    with torch.no_grad():
        safety.head.proj.weight.normal_(0, 1.0)
        helpful.head.proj.weight.normal_(0, 1.0)
    ids = torch.randint(5, len(tok), (6, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    h, s = helpful(ids, mask), safety(ids, mask)
    threshold = float(s.median())
    gate = GatedRewardModel(helpful, safety, threshold)
    want = [si if si < threshold else hi for hi, si in zip(h.tolist(), s.tolist())]
    assert gate(ids, mask).tolist() == pytest.approx(want)
    assert 0 < sum(si < threshold for si in s.tolist()) < 6                  # both branches are used
    assert gate.config is helpful.config and RewardModelSignal(gate, key="k").spec()["model"] == "k"
    with pytest.raises(TypeError, match="safety model must be a RewardModel"):
        GatedRewardModel(helpful, tiny_model, 0.0)
    other = copy.deepcopy(tiny_model)
    other.resize_token_embeddings(tiny_model.config.vocab_size + 8)
    with pytest.raises(ValueError, match="same tokenizer"):
        GatedRewardModel(helpful, RewardModel(other), 0.0)
