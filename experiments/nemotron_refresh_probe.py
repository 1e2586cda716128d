"""Does `nemotron3_ultra`'s second MOPD round gain from its refreshed teachers, or from 300 more
steps? (RESULTS.md, "`nemotron3_ultra`".)

    MINIMOPD_THREADS=1 python experiments/nemotron_refresh_probe.py --seed S    # after the recipe's run of seed S

The recipe forks four new specialists from round 1's student and runs round 2 from them. This
probe runs the same round 2 (same student, steps, settings and seed) from round 1's specialists
instead, so the two rounds differ only in their teachers, then evaluates it like the recipe does
(greedy, 300 held-out items per level) next to the recipe's own rows, read from
experiments/results/v3/lineage_nemotron_sS.json. Every stage before the new round must be the one
the recipe's run trained, loaded from the cache: the script checks each one's cache folder and its
recorded training time against the committed run and stops otherwise (a stage retrained since,
with the same settings, gets the same folder but is not the run it is compared with; a missing
one is retrained before the check catches it). Writes
experiments/results/v3/nemotron_refresh_sS.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from minimopd import distill, get_profile
from minimopd.artifacts import sft_artifact
from minimopd.evaluation import EvalResult
from minimopd.recipes_opd import RecipeRun
from minimopd.tasks import VERIFIABLE_DOMAINS as D

V3 = Path(__file__).parent / "results" / "v3"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, required=True)
    args = ap.parse_args(argv)
    committed = V3 / f"lineage_nemotron_s{args.seed}.json"
    if not committed.exists():
        raise SystemExit(f"{committed} is missing: run the recipe on seed {args.seed} first (RESULTS.md gives the command)")
    rec = json.loads(committed.read_text())["recipes"]["nemotron3_ultra"]
    profile = get_profile("cpu").replace(eval_per_level=300)     # as the recipe's run: --eval-per-level 300
    run = RecipeRun("nemotron_refresh_probe", profile, args.seed, progress=False)

    def same(stage, art):
        want = rec["info"][stage]
        if (art.path.name, art.info.get("wall_time")) != (Path(want["path"]).name, want.get("wall_time")):
            raise SystemExit(f"{stage}: got {art.path.name} (trained in {art.info.get('wall_time')} s), the committed "
                             f"run used {Path(want['path']).name} (trained in {want.get('wall_time')} s); this cache is "
                             f"not the run's (rerun the recipe's command to match them)")
        return art

    student = same("student", sft_artifact(profile, seed=args.seed, reasoning=True, progress=False))
    rlvr = same("rlvr", run.mixed_rl(student))
    teachers = {d: same(f"teacher_{d}", distill.specialist_artifact(rlvr, profile, d, seed=args.seed, progress=False))
                for d in D}
    warm = same("warmup_sft", run.warmup(rlvr, teachers, "nemotron_warmup"))
    round1 = same("mopd_round1", run.mopd(warm, teachers, "nemotron_mopd1", mode="sampled", algo="opd_sampled"))
    again = run.mopd(round1, teachers, "nemotron_mopd2_round1_teachers", mode="sampled", algo="opd_sampled")
    ev = run.evaluate(again)

    def per_domain(stage):
        committed_eval = EvalResult(rec["evals"][stage])
        return {d: round(committed_eval.accuracy(d), 3) for d in D}

    acc = {r["stage"]: r["acc"] for r in rec["table"]}
    out = {"seed": args.seed, "profile": profile.name, "eval_per_level": profile.eval_per_level,
           "round1": {**per_domain("mopd_round1"), "mean": acc["mopd_round1"]},
           "round2_refreshed": {**per_domain("mopd_round2"), "mean": acc["mopd_round2"],
                                "flops": rec["info"]["mopd_round2"]["flops"],
                                "specialists_flops": sum(rec["info"][f"teacher_{d}_round2"]["flops"] for d in D)},
           "round2_round1_teachers": {**{d: round(ev.accuracy(d), 3) for d in D}, "mean": round(ev.accuracy(), 3),
                                      "flops": again.info["flops"], "train_s": round(again.info["wall_time"]),   # when trained
                                      "path": again.path.name}}
    for k in ("round1", "round2_refreshed", "round2_round1_teachers"):
        print(f"{k:<24}" + "".join(f"{d} {out[k][d]:.3f}  " for d in D) + f"mean {out[k]['mean']:.3f}", flush=True)
    (V3 / f"nemotron_refresh_s{args.seed}.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
