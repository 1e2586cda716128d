"""R1-Zero attempts beyond the recipe: a base pretrained on more tagged traces, and RL prompt
selection. The `r1_zero` recipe's settings (GRPO from the base, raw-text prompts, reward
accuracy x format + 0.5 x format, 2 x rl_steps steps) with two knobs:

    python experiments/r1_zero_probe.py --profile cpu --seed 0 --tagged-fraction 0.15
    python experiments/r1_zero_probe.py --profile cpu --seed 0 --tagged-fraction 0.15 --select 4800

`--tagged-fraction`: share of pretraining lines written as `<think>`/`<answer>` traces (the
profile's base: 0.05 on `cpu`); `--select N`: diagnose N train prompts (8 samples each) and train
only on those the base solves sometimes but not always (`recipes_rl.rl_selection`). Every stage is
cached, so the recipe's own run (tagged fraction of the profile, no selection) is the baseline.
Prints the held-out table (greedy, `--n` items per level, raw prompts) and the training curves.
"""
import argparse
import json
from pathlib import Path

from minimopd.artifacts import base_artifact
from minimopd.diagnose import PromptSelection
from minimopd.evaluation import evaluate
from minimopd.profiles import get_profile
from minimopd.recipes_rl import r1_zero_stage
from minimopd.report import window_mean


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tagged-fraction", type=float, default=None, help="default: the profile's")
    ap.add_argument("--select", type=int, default=0, help="candidate prompts to diagnose (0: no selection)")
    ap.add_argument("--n", type=int, default=300, help="held-out items per level")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    prof = get_profile(args.profile)
    frac = prof.pretrain_tagged_fraction if args.tagged_fraction is None else args.tagged_fraction
    if not 0.0 <= frac <= 1.0:
        raise SystemExit(f"--tagged-fraction is a share of corpus lines in [0, 1], got {frac}")
    extra = {} if frac == prof.pretrain_tagged_fraction else {"tagged_fraction": frac}
    base = base_artifact(prof, seed=args.seed, progress=False, **extra)
    selection = PromptSelection(candidates=args.select, samples=8) if args.select else None
    rl = r1_zero_stage(base, prof, args.seed, False, selection=selection)
    out = {"profile": prof.name, "seed": args.seed, "tagged_fraction": frac, "select": args.select,
           "base": base.path.name, "r1_zero": rl.path.name,
           "selection": {k: v for k, v in rl.info.items() if k.startswith("selection_")}}
    for name, art in (("base", base), ("r1_zero", rl)):
        ev = evaluate(art.model, art.tokenizer, profile=prof, n_per_level=args.n, seed=args.seed,
                      reasoning=True, chat=False)
        out[f"eval_{name}"] = ev.rows
        s = ev.summary()
        print(f"--- {name} ({art.path.name}): acc {s['acc']:.3f} (easy {s['acc/easy']:.3f} / medium "
              f"{s['acc/medium']:.3f} / hard {s['acc/hard']:.3f}), format {s['format_rate']:.3f}")
        print(ev.table())
    curves = {}
    for key in ("reward", "accuracy", "format_rate", "length", "entropy"):
        curves[key] = (window_mean(rl.history, key, True), window_mean(rl.history, key, False))
        print(f"{key}: first 10% {curves[key][0]:.3f} -> last 10% {curves[key][1]:.3f}")
    print("selection:", out["selection"] or "none")
    out["curves"] = curves
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
