"""What mixed-domain RL's prompt selection costs, for stages cached before it was counted.

    python experiments/selection_cost.py --profile cpu --seeds 0 1 2

Since the selection's sampling joined an online stage's figures (`online_artifact`: tokens
generated, FLOPs, time), a freshly trained `mixed_rl` stage reports it. A stage cached earlier
does not. This reruns its selection (the same candidates, samples and seeds, so it keeps the same
prompts, which is checked) and prints the run's FLOPs, the selection's and their sum, next to
the stage's own record. It loads the reasoning SFT student and the `mixed_rl` stage from the cache
(training them first where they are missing).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minimopd.artifacts import sft_artifact  # noqa: E402
from minimopd.diagnose import select_prompts  # noqa: E402
from minimopd.profiles import get_profile  # noqa: E402
from minimopd.recipes_opd import RecipeRun, mixed_rl_config  # noqa: E402
from minimopd.recipes_rl import rl_selection  # noqa: E402


def selection_cost(profile, seed: int) -> dict:
    parent = sft_artifact(profile, seed=seed, reasoning=True, progress=False)
    art = RecipeRun("mixed_rl", profile, seed, progress=False).mixed_rl(parent)
    cfg = mixed_rl_config(profile, seed)
    pool, info = select_prompts(parent.model, parent.tokenizer, cfg, rl_selection(profile), seed=cfg.seed)
    if len(pool) != art.info["selection_kept"]:
        raise RuntimeError(f"seed {seed}: the rerun kept {len(pool)} prompts, the cached stage "
                           f"{art.info['selection_kept']}: not the same selection")
    run_flops = art.info.get("rl_flops", art.info["flops"])
    return {"seed": seed, "candidates": info["candidates"], "kept": info["kept"],
            "selection tokens generated": info["tokens_generated"],
            "run tokens generated": art.info.get("rl_tokens_generated", art.info["tokens_generated"]),
            "selection FLOPs": f"{info['flops']:.2e}", "run FLOPs": f"{run_flops:.2e}",
            "total FLOPs": f"{run_flops + info['flops']:.2e}", "selection s": round(info["wall_time"], 1),
            "recorded by the stage": "yes" if "selection_flops" in art.info else "no (cached earlier)"}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--profile", default="cpu")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = p.parse_args(argv)
    prof = get_profile(args.profile)
    rows = [selection_cost(prof, s) for s in args.seeds]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
