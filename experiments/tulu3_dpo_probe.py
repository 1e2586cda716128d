"""Tülu 3's DPO stage at other settings: `recipes_rl.tulu3_dpo` on the seed's reasoning SFT model
with `DPOConfig` overrides, then the DPO model's greedy notes gold and verifiable accuracy.

    python experiments/tulu3_dpo_probe.py --profile cpu --seed 0                 # the recipe's stage
    python experiments/tulu3_dpo_probe.py --profile cpu --seed 0 --set lr=1e-4   # 5x its learning rate

Prints the pairs row (as the recipe's "DPO pairs" table), the DPO run's first and last loss,
reward accuracy and margin, and the evaluations (`--n` held-out items per level, default the
profile's). `--sft` also evaluates the SFT model. Every stage is cached.
"""
import argparse
import json
import time

from minimopd.artifacts import sft_artifact
from minimopd.evaluation import evaluate
from minimopd.profiles import get_profile
from minimopd.recipes_pref import evaluate_notes
from minimopd.recipes_rl import tulu3_dpo
from minimopd.stages.dpo import DPOConfig

TYPES = {name: type(value) for name, value in vars(DPOConfig()).items()}


def override(text: str) -> tuple[str, object]:
    name, _, value = text.partition("=")
    if name not in TYPES or not value:
        raise argparse.ArgumentTypeError(f"--set {text!r}: expected NAME=VALUE with NAME one of {', '.join(TYPES)}")
    kind = TYPES[name]
    return name, (value.lower() in ("1", "true", "yes") if kind is bool else kind(value))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", type=override, action="append", default=[], help="a DPOConfig field, NAME=VALUE")
    ap.add_argument("--n", type=int, default=None, help="held-out items per level (default: the profile's)")
    ap.add_argument("--sft", action="store_true", help="evaluate the SFT model too")
    args = ap.parse_args(argv)
    profile, t0 = get_profile(args.profile), time.perf_counter()
    sft = sft_artifact(profile, seed=args.seed, reasoning=True, progress=False)
    dpo, row = tulu3_dpo(sft, profile, args.seed, progress=False, **dict(args.set))
    print("pairs:", json.dumps(row))
    first, last = dpo.history[0], dpo.history[-1]
    print("dpo:", {k: f"{float(first[k]):.3f} -> {float(last[k]):.3f}" for k in ("loss", "reward_accuracy", "reward_margin")})
    for name, art in ([("sft", sft)] if args.sft else []) + [("dpo", dpo)]:
        notes = evaluate_notes(art, profile, args.seed)
        tasks = evaluate(art.model, art.tokenizer, profile=profile, seed=args.seed, reasoning=True, n_per_level=args.n)
        print(f"{name}: notes gold (greedy) {notes.accuracy():.3f}, verifiable accuracy {tasks.accuracy():.3f} "
              f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
