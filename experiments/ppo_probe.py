"""PPO against the learned reward model on `notes`: proxy, gold and KL along the run.

    python experiments/ppo_probe.py --profile cpu --seed 0 --steps 100 --kl-beta 0.02 \
        --json experiments/results/v3/ppo_probe_s0.json

Builds (or loads) the notes SFT model (`recipes_pref.demonstrations_artifact`) and its reward
model (`recipes_pref.reward_model_artifact`),
runs the `instructgpt` recipe's PPO stage with the given settings (`recipes_pref.ppo_artifact`,
cached like the recipe's), and prints, every tenth of the run, the reward model's score of the
policy's samples (proxy, normalised so the SFT model's samples score mean 0 and std 1), their
gold score, the KL to the SFT model and the response length; then the greedy gold score of SFT
and PPO on `--n` held-out prompts per level. `--kl-beta 0` is PPO without the KL penalty, the
over-optimisation setting; `--kl-target` adapts the coefficient (Ziegler et al.'s controller).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minimopd.profiles import get_profile  # noqa: E402
from minimopd.recipes_pref import (demonstrations_artifact, evaluate_notes, ppo_artifact,  # noqa: E402
                                   reward_model_artifact, reward_model_eval, windows)

KEYS = ("reward", "accuracy", "kl_ref", "length", "truncated", "entropy", "value_loss")


def trajectory(history, points: int = 10) -> list[dict]:
    """`recipes_pref.windows` of the run, rounded, with the steps as one column."""
    return [{"steps": f"{w['first']}-{w['last']}", **{k: round(w[k], 3) for k in KEYS if k in w}}
            for w in windows(history, keys=KEYS, points=points)]


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--profile", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="PPO steps (default: the profile's rl_steps)")
    p.add_argument("--kl-beta", type=float, default=None)
    p.add_argument("--kl-target", type=float, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--n", type=int, default=None, help="held-out prompts per level (default: the profile's)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    prof = get_profile(args.profile)
    if args.n:
        prof = prof.replace(eval_per_level=args.n)
    overrides = {k: v for k, v in (("steps", args.steps), ("kl_beta", args.kl_beta), ("kl_target", args.kl_target),
                                   ("lr", args.lr)) if v is not None}
    sft = demonstrations_artifact(prof, seed=args.seed)
    rm = reward_model_artifact(prof, seed=args.seed, parent=sft)
    rm_eval = reward_model_eval(rm, prof, args.seed)
    print("reward model, held-out pairs:", rm_eval)
    ppo = ppo_artifact(sft, rm, prof, args.seed, **overrides)
    rows = trajectory(ppo.history)
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    evals = {name: evaluate_notes(art, prof, args.seed) for name, art in (("sft", sft), ("ppo", ppo))}
    for name, ev in evals.items():
        print(f"{name}: greedy gold {ev.accuracy():.3f}")
        print(ev.table())
    print(f"PPO: {ppo.info['wall_time']:.0f} s, {ppo.info['flops']:.2e} FLOPs, settings {overrides or 'the recipe'}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"profile": prof.name, "seed": args.seed, "overrides": overrides, "reward_model": rm_eval,
             "trajectory": rows, "history": ppo.history,
             "greedy_gold": {name: ev.rows for name, ev in evals.items()}}, indent=1, default=str))


if __name__ == "__main__":
    main()
