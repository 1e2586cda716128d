"""Train one stage group of a recipe into the stage cache, so that a device run can train a
recipe's independent stages in separate processes on one GPU. `minimopd lineage` afterwards
finds them in the cache (same keys: these are the recipes' own functions) and only evaluates.

    python experiments/device/stage.py --profile cpu --seed 1 cold      # R1's cold start
    python experiments/device/stage.py --profile cpu --seed 1 grpo      # grpo_vs_drgrpo's arms
    python experiments/device/stage.py --profile cpu --seed 1 dr_grpo
    python experiments/device/stage.py --profile cpu --seed 1 small     # r1's small base + cold start

Train `cold` first: the other parts start from it, and two processes building the same stage
at once would both train it.
"""
import argparse
import time

from minimopd.artifacts import base_artifact
from minimopd.profiles import get_profile
from minimopd.recipes_rl import cold_start_artifact, grpo_vs_drgrpo_arm

PARTS = ("cold", "grpo", "dr_grpo", "small")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("part", choices=PARTS)
    ap.add_argument("--profile", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    prof, progress, t0 = get_profile(args.profile), not args.no_progress, time.time()
    if args.part == "cold":
        arts = [cold_start_artifact(prof, args.seed, progress)]
    elif args.part == "small":
        small = prof.small_model_size
        arts = [base_artifact(prof, seed=args.seed, progress=progress, model_size=small),
                cold_start_artifact(prof, args.seed, progress, model_size=small)]
    else:
        arts = [grpo_vs_drgrpo_arm(prof, args.seed, args.part, progress)]
    for art in arts:
        print(f"{args.part} seed {args.seed}: {art.path.name} "
              f"(stage wall time {art.info.get('wall_time', float('nan')):.0f} s)", flush=True)
    print(f"{args.part} seed {args.seed}: done in {time.time() - t0:.0f} s on {prof.device}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
