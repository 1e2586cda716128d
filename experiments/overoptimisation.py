"""Reward over-optimisation (Gao et al. 2022) in miniature: PPO against the learned reward model
at several KL coefficients, proxy and gold reward against KL.

    python experiments/overoptimisation.py --profile cpu --seed 0 --betas 0 0.02 0.1 --steps 300 \
        --json experiments/results/v3/overoptimisation_s0.json --html overoptimisation_s0.html

One PPO stage of the `instructgpt` recipe per KL coefficient (`recipes_pref.ppo_artifact`,
cached, the SFT model as the frozen reference even at beta = 0 so the KL is measured), each
with `--steps` steps and the recipe's other settings (`--lr` and `--kl-target` change them). Prints
one row per run (`recipes_pref.gold_peak`: the gold score at the start, at its peak and at the
end, the KL and proxy there) and the greedy gold score of each final policy on held-out prompts;
`--html` writes `plots.overoptimisation_figure`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minimopd.profiles import get_profile  # noqa: E402
from minimopd.recipes_pref import (demonstrations_artifact, evaluate_notes, gold_peak, ppo_artifact,  # noqa: E402
                                   reward_model_artifact, reward_model_eval)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--profile", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.02, 0.1])
    p.add_argument("--steps", type=int, default=None, help="PPO steps per run (default: the profile's rl_steps)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--kl-target", type=float, default=None, help="adapt each beta > 0 towards this sequence KL")
    p.add_argument("--n", type=int, default=None, help="held-out prompts per level (default: the profile's)")
    p.add_argument("--json", default=None)
    p.add_argument("--html", default=None)
    args = p.parse_args(argv)
    prof = get_profile(args.profile)
    if args.n:
        prof = prof.replace(eval_per_level=args.n)
    common = {k: v for k, v in (("steps", args.steps), ("lr", args.lr)) if v is not None}
    sft = demonstrations_artifact(prof, seed=args.seed)
    rm = reward_model_artifact(prof, seed=args.seed, parent=sft)
    rm_eval = reward_model_eval(rm, prof, args.seed)
    print("reward model, held-out pairs:", rm_eval)
    sft_gold = evaluate_notes(sft, prof, args.seed).accuracy()
    runs, rows = {}, []
    for beta in args.betas:
        adaptive = {"kl_target": args.kl_target} if args.kl_target and beta > 0 else {}
        art = ppo_artifact(sft, rm, prof, args.seed, name="ppo", kl_beta=beta, **common, **adaptive)
        label = f"beta {beta:g}" + (f" -> KL {args.kl_target:g}" if adaptive else "")
        runs[label] = art.history
        rows.append({"run": label, **gold_peak(art.history),
                     "greedy gold (held-out)": round(evaluate_notes(art, prof, args.seed).accuracy(), 3),
                     "wall s": round(art.info["wall_time"])})
    print(f"SFT greedy gold (held-out): {sft_gold:.3f}")
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"profile": prof.name, "seed": args.seed, "settings": vars(args),
                                               "reward_model": rm_eval, "sft_greedy_gold": sft_gold, "rows": rows,
                                               "histories": runs}, indent=1, default=str))
    if args.html:
        from minimopd.plots import overoptimisation_figure
        overoptimisation_figure(runs).write_html(args.html, include_plotlyjs=True)   # offline


if __name__ == "__main__":
    main()
