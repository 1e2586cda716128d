"""DPO against PPO on the gold reward at matched KL, and delta-learning pairs against reward-ranked
ones, from the same notes SFT model and reward model.

    python experiments/dpo_vs_ppo.py --profile cpu --seed 0 --betas 0.05 0.1 0.3 \
        --json experiments/results/v3/dpo_vs_ppo_s0.json

Draws the pair sets once: the SFT model's K = 4 samples per prompt ranked by the reward model
(`ranked`: best against worst; `recipes_llama.dpo_round`'s data), delta pairs (`delta`: the
shared SFT model's sample against its weak sibling's; `recipe_olmo3_delta`'s data) and on-policy
delta pairs (`delta_onpolicy`: the notes SFT model's own sample, the policy DPO trains, against the
weak sibling's: the chosen side is in the policy's own template). `--weak-fraction` stops the
weak sibling's SFT run at another share of its steps (default `recipes_llama.WEAK_FRACTION`). Trains DPO on each at every
`--betas` value (`artifacts.dpo_on_pairs`, cached) and places every model on the gold-against-KL
plane with its own samples (`recipes_llama.place`). PPO's run of the `instructgpt` recipe (cached
by `experiments/overoptimisation.py` or the recipe) gives the curve: its gold at the DPO model's
KL is interpolated between the two PPO windows around it, as a gain over PPO's start (`ppo gain
at that KL`: PPO's history measures gold on its training prompts, so gains, not levels, compare).
The final PPO models at `--ppo-betas` are placed on the same test prompts as the DPO models.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minimopd.artifacts import dpo_on_pairs, sft_artifact  # noqa: E402
from minimopd.comparisons import delta_pairs, ranked_pairs  # noqa: E402
from minimopd.profiles import get_profile  # noqa: E402
from minimopd.recipes_llama import WEAK_FRACTION, place, scored_prompts, weak_sibling_artifact  # noqa: E402
from minimopd.recipes_pref import (PPO_KL_BETA, demonstrations_artifact, evaluate_notes, ppo_artifact, ppo_config,  # noqa: E402
                                   reward_model_artifact, windows)
from minimopd.stages.dpo import DPOConfig  # noqa: E402


def gain_at_kl(curve: list[dict], kl: float) -> float | None:
    """PPO's gold gain over its own start at `kl`, linear between the two windows whose KL brackets
    it (None outside the range PPO covered). PPO's history measures gold on its training prompts,
    the DPO models are measured on test prompts: gains, not levels, are comparable."""
    start = curve[0]["accuracy"]
    for a, b in zip(curve, curve[1:]):
        if min(a["kl_ref"], b["kl_ref"]) <= kl <= max(a["kl_ref"], b["kl_ref"]) and a["kl_ref"] != b["kl_ref"]:
            t = (kl - a["kl_ref"]) / (b["kl_ref"] - a["kl_ref"])
            return a["accuracy"] + t * (b["accuracy"] - a["accuracy"]) - start
    return None


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--profile", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--betas", type=float, nargs="+", default=[0.05, 0.1, 0.3])
    p.add_argument("--lrs", type=float, nargs="+", default=None, help="DPO learning rates (default: the profile's)")
    p.add_argument("--pairs", nargs="+", default=["ranked", "delta"], choices=["ranked", "delta", "delta_onpolicy"])
    p.add_argument("--weak-fraction", type=float, default=WEAK_FRACTION,
                   help="the weak sibling: the shared SFT run stopped at this share of its steps")
    p.add_argument("--ppo-betas", type=float, nargs="*", default=[0.1, 0.02, 0.0],
                   help="PPO runs (the recipe's, at these KL coefficients; cached by overoptimisation.py) to place")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    prof, seed = get_profile(args.profile), args.seed
    sft = demonstrations_artifact(prof, seed=seed)
    rm = reward_model_artifact(prof, seed=seed, parent=sft)
    curve = windows(ppo_artifact(sft, rm, prof, seed).history, points=15)      # the recipe's run (beta 0.02)
    weak = lambda: scored_prompts(weak_sibling_artifact(prof, seed, fraction=args.weak_fraction), None, prof, seed, 30,
                                  samples=1)
    draw = {"ranked": lambda: ranked_pairs(scored_prompts(sft, rm, prof, seed, 31)),
            "delta": lambda: delta_pairs(scored_prompts(sft_artifact(prof, seed=seed), None, prof, seed, 30, samples=1),
                                         weak()),
            "delta_onpolicy": lambda: delta_pairs(scored_prompts(sft, None, prof, seed, 30, samples=1), weak())}
    sets = {name: draw[name]() for name in args.pairs}
    base = place(sft, sft, prof, seed)
    rows = [{"model": "sft", "pairs": "", "beta": "", "lr": "", **base,
             "greedy gold": round(evaluate_notes(sft, prof, seed).accuracy(), 3), "gain": 0.0,
             "ppo gain at that KL": ""}]
    for b in args.ppo_betas:
        art = ppo_artifact(sft, rm, prof, seed, kl_beta=b)
        where = place(art, sft, prof, seed)
        rows.append({"model": f"ppo, {len(art.history)} steps", "pairs": "", "beta": b, "lr": ppo_config(prof, seed).lr,
                     **where, "greedy gold": round(evaluate_notes(art, prof, seed).accuracy(), 3),
                     "gain": round(where["gold (T=1)"] - base["gold (T=1)"], 3), "ppo gain at that KL": ""})
    stats = {}
    for name, (pairs, st) in sets.items():
        stats[name] = st
        print(f"{name} pairs: {st}")
        for beta, lr in [(b, lr) for b in args.betas for lr in (args.lrs or [None])]:
            cfg = DPOConfig.from_profile(prof, seed=seed, beta=beta, **({} if lr is None else {"lr": lr}))
            art = dpo_on_pairs(sft, pairs, cfg, prof, name=f"dpo_{name}")    # keyed on the pairs themselves
            where = place(art, sft, prof, seed)
            g = gain_at_kl(curve, where["KL to reference"])
            rows.append({"model": f"dpo ({name})", "pairs": len(pairs), "beta": beta, "lr": cfg.lr, **where,
                         "greedy gold": round(evaluate_notes(art, prof, seed).accuracy(), 3),
                         "gain": round(where["gold (T=1)"] - base["gold (T=1)"], 3),
                         "ppo gain at that KL": "" if g is None else round(g, 3)})
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    print("PPO curve (windows):", [(w["first"], round(w["kl_ref"], 3), round(w["accuracy"], 3)) for w in curve])
    if args.json:
        Path(args.json).write_text(json.dumps({"profile": prof.name, "seed": seed, "rows": rows, "pair_stats": stats,
                                               "ppo_curve": curve}, indent=1, default=str))


if __name__ == "__main__":
    main()
