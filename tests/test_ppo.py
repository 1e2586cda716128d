"""PPO's pieces around the loop (InstructGPT): the adaptive KL controller, the fixed reward of a
response that never ends, and the `instructgpt` recipe end to end on the smoke profile."""
import copy
import dataclasses

import pytest
import torch

from minimopd.models import PolicyWithValue, RewardModel, build_model
from minimopd.rollout import generate
from minimopd.signals import RewardModelSignal
from minimopd.stages.online import OnlineConfig, preset, train_online
from minimopd.tasks import get_task


def small_cfg(**kw):
    base = dict(steps=1, prompts_per_step=4, group_size=4, max_new_tokens=6, domains=("add",),
                difficulty="easy", lr=1e-2, seed=3)
    return OnlineConfig(**{**base, **kw})


def test_adaptive_kl_beta_hand_values():
    from minimopd.advantages import adaptive_kl_beta
    assert adaptive_kl_beta(0.1, 6.0, 6.0, 64, 1000) == pytest.approx(0.1)             # on target: unchanged
    assert adaptive_kl_beta(0.1, 7.2, 6.0, 100, 1000) == pytest.approx(0.1 * (1 + 0.2 * 0.1))
    assert adaptive_kl_beta(0.1, 60.0, 6.0, 100, 1000) == pytest.approx(0.1 * 1.02)      # error clipped at +20%
    assert adaptive_kl_beta(0.1, 0.0, 6.0, 100, 1000) == pytest.approx(0.1 * 0.98)       # and at -20%
    assert adaptive_kl_beta(0.1, 5.4, 6.0, 50, 1000) == pytest.approx(0.1 * (1 - 0.1 * 0.05))
    with pytest.raises(ValueError, match="must be > 0"):
        adaptive_kl_beta(0.1, 1.0, 0.0, 10)


def test_ppo_adapts_its_kl_coefficient_towards_the_target(tok, sft_tiny):
    """kl_target: each step's beta is the controller applied to the previous step's sequence KL
    (k1 summed over a response's tokens, mean over the batch), logged as kl_beta / kl_sequence;
    a target above the KL lowers beta, and only PPO's folded penalty may adapt."""
    from minimopd.advantages import adaptive_kl_beta
    rm = RewardModel(build_model("tiny", tok, seed=5))
    with torch.no_grad():
        rm.head.proj.weight.normal_(generator=torch.Generator().manual_seed(1))
    from minimopd.advantages import get_estimator
    cfg = preset("ppo", small_cfg(steps=4, group_size=1, kl_beta=0.1, kl_target=50.0, kl_horizon=20, lr=3e-3))
    used, gae = [], get_estimator("gae")

    def spy(exp, c):                  # the beta that shapes each step's rewards
        used.append(c.kl_beta)
        return gae(exp, c)
    res = train_online(PolicyWithValue(copy.deepcopy(sft_tiny)), tok, cfg, signal=RewardModelSignal(rm),
                       ref_model=copy.deepcopy(sft_tiny), estimator=spy, progress=False)
    h = res.history
    assert h[0]["kl_beta"] == 0.1 and used == [r["kl_beta"] for r in h]
    for prev, row in zip(h, h[1:]):
        assert row["kl_beta"] == pytest.approx(adaptive_kl_beta(prev["kl_beta"], prev["kl_sequence"], 50.0, 4, 20))
    assert h[-1]["kl_beta"] < 0.1
    with pytest.raises(ValueError, match="kl_target adapts the KL penalty folded into PPO's reward"):
        train_online(copy.deepcopy(sft_tiny), tok, small_cfg(kl_beta=0.1, kl_target=5.0), ref_model=sft_tiny,
                     progress=False)
    with pytest.raises(ValueError, match="kl_target adapts the KL penalty folded into PPO's reward"):
        train_online(PolicyWithValue(copy.deepcopy(sft_tiny)), tok, dataclasses.replace(cfg, loss="clipped_pg"),
                     signal=RewardModelSignal(rm), ref_model=sft_tiny, progress=False)
    with pytest.raises(ValueError, match="both must be > 0"):
        train_online(PolicyWithValue(copy.deepcopy(sft_tiny)), tok, dataclasses.replace(cfg, kl_beta=0.0),
                     signal=RewardModelSignal(rm), ref_model=sft_tiny, progress=False)


def test_reward_model_signal_gives_unfinished_responses_their_fixed_reward(tok, sft_tiny):
    rm = RewardModel(build_model("tiny", tok, seed=5))
    with torch.no_grad():
        rm.head.proj.weight.normal_(generator=torch.Generator().manual_seed(1))
    exs = get_task("add").sample(6, seed=1, difficulty="easy")
    ro = generate(sft_tiny, tok, [e.prompt for e in exs], num_samples=2, max_new_tokens=3, seed=0)
    rows = [e for e in exs for _ in range(2)]
    plain = RewardModelSignal(rm)(ro, rows)
    capped = RewardModelSignal(rm, unfinished_reward=-1.0)(ro, rows)
    unfinished = ~ro.finished.bool()
    assert unfinished.any() and (~unfinished).any(), "the budget should cut some rows and not others"
    assert torch.equal(capped.rewards[unfinished], torch.full((int(unfinished.sum()),), -1.0))
    assert torch.equal(capped.rewards[~unfinished], plain.rewards[~unfinished])
    assert capped.metrics["unfinished"] == pytest.approx(unfinished.float().mean().item())
    assert "unfinished_reward" not in RewardModelSignal(rm, key="k").spec()
    assert RewardModelSignal(rm, key="k", unfinished_reward=-1.0).spec()["unfinished_reward"] == -1.0
    with pytest.raises(ValueError, match="unfinished_reward must be a finite number"):
        RewardModelSignal(rm, unfinished_reward=float("nan"))


def test_instructgpt_recipe_sft_reward_model_ppo(smoke_run):
    """The recipe builds SFT -> reward model -> PPO, evaluates SFT and PPO on the gold score of
    held-out notes, reports the reward model's held-out accuracy under its noise ceiling, and
    PPO tracks proxy, gold and KL to the SFT model (its frozen reference) at every step."""
    res = smoke_run("instructgpt").result
    assert list(res.evals) == ["sft", "ppo"] and list(res.info)[:3] == ["sft", "reward_model", "ppo"]
    assert {r["domain"] for r in res.evals["ppo"].rows} == {"notes"}
    assert isinstance(res.models["reward_model"], RewardModel) and isinstance(res.models["ppo"], PolicyWithValue)
    (rm_row,) = res.tables["reward model: held-out pairwise accuracy"]
    assert 0.5 <= rm_row["noise_ceiling"] <= 1 and rm_row["pairs"] > 0
    assert res.info["ppo"]["parent"] == res.info["sft"]["path"].rsplit("/", 1)[-1]
    h = res.histories["ppo"]
    assert all({"reward", "accuracy", "kl_ref", "value_loss", "unfinished"} <= set(r) for r in h)
    assert h[0]["kl_ref"] == pytest.approx(0.0, abs=1e-4)      # the first batch is sampled from the reference
    (row,) = res.tables["proxy and gold reward during PPO"]
    assert row["gold at end"] == pytest.approx(h[-1]["accuracy"], abs=1e-3)   # 3 steps: one per window
    assert row["gold peak"] == pytest.approx(max(r["accuracy"] for r in h), abs=1e-3)


def test_windows_and_gold_peak_find_where_gold_turned():
    from minimopd.recipes_pref import gold_peak, windows
    gold = [0.5, 0.6, 0.7, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    h = [{"step": i, "reward": 0.1 * i, "accuracy": g, "kl_ref": 0.01 * i} for i, g in enumerate(gold)]
    w = windows(h, points=4)                               # 12 steps in windows of 3
    assert [(r["first"], r["last"]) for r in w] == [(0, 2), (3, 5), (6, 8), (9, 11)]
    assert w[1]["accuracy"] == pytest.approx(0.7) and w[1]["kl_ref"] == pytest.approx(0.04)
    peak = gold_peak(h, points=4)
    assert peak["peak at steps"] == "3-5" and peak["gold peak"] == 0.7 and peak["KL at the peak"] == 0.04
    assert peak["gold at end"] == 0.1 and peak["proxy at end"] == 1.0 and peak["proxy at peak"] == 0.4


def test_overoptimisation_figure_draws_proxy_and_gold_of_every_run_against_kl():
    from minimopd.plots import overoptimisation_figure
    from minimopd.recipes_pref import windows
    runs = {f"beta {b}": [{"step": i, "reward": i * (1 + b), "accuracy": 0.5 - b * i, "kl_ref": i / (1 + b)}
                          for i in range(20)] for b in (0.0, 0.1)}
    fig = overoptimisation_figure(runs)
    assert len(fig.data) == 4 and [t.name for t in fig.data] == ["beta 0.0"] * 2 + ["beta 0.1"] * 2
    w = windows(runs["beta 0.1"])
    assert list(fig.data[3].x) == [r["kl_ref"] for r in w] and list(fig.data[3].y) == [r["accuracy"] for r in w]
    assert list(fig.data[2].y) == [r["reward"] for r in w]


def test_demonstrations_are_ordinary_notes_of_train_prompts():
    """The notes SFT's data: one `sample_responses` note per train prompt, deterministic in the
    seed, of mixed quality (the perfect reference notes would leave RLHF nothing to improve)."""
    from minimopd.recipes_pref import demonstrations
    from minimopd.tasks import gold_score, sample_responses, split_of
    pairs = demonstrations(400, seed=1)
    assert pairs == demonstrations(400, seed=1) and pairs != demonstrations(400, seed=2)
    assert all(split_of(p) == "train" for p, _ in pairs)
    p, r = pairs[7]
    assert r in sample_responses(p, 1, seed=1 * 100_003 + 7)
    gold = [gold_score(p, r) for p, r in pairs]
    assert 0.5 < sum(gold) / len(gold) < 0.8 and min(gold) < 0.3 and max(gold) == 1.0


def test_only_ppo_stages_are_keyed_by_the_kl_controller():
    """kl_target keys PPO stages only, and kl_horizon only where kl_target is set: adding the
    controller kept every other stage's cache key."""
    from minimopd.cache import stage_key
    grpo, ppo = preset("grpo", small_cfg()), preset("ppo", small_cfg(group_size=1, kl_beta=0.1))
    key = lambda c: stage_key("s", config=c)       # noqa: E731
    assert key(grpo) == key(dataclasses.replace(grpo, kl_target=6.0)) == key(dataclasses.replace(grpo, kl_horizon=5))
    assert key(ppo) == key(dataclasses.replace(ppo, kl_horizon=5))
    adaptive = dataclasses.replace(ppo, kl_target=6.0)
    assert key(ppo) != key(adaptive) != key(dataclasses.replace(adaptive, kl_horizon=5))
