"""Re-score the stages of a `minimopd lineage` run from the stage cache, with more held-out items.

    python experiments/rescore.py runs/gpu-seed1/results.json --eval-per-level 300 --out runs/rescored-s1

`minimopd lineage --eval-per-level N` re-scores cached stages too, but it re-runs the recipe, and
a recipe's uncached steps run again: `r1` samples its rejection and distillation traces anew, and
on another machine (a GPU run scored on a CPU) those samples differ, so the stages trained on them
miss the cache and retrain. This script evaluates exactly the artifacts the run recorded (each
stage's `info.path`, looked up by name in the local cache), so a run trained on a lent GPU can be
scored at 300 items per level on a laptop. The run's own info (FLOPs, sampling statistics) is
kept; the tables are written as `results.md` / `results.json` beside a note of the source run.
"""
import argparse
import json
from pathlib import Path

from minimopd.artifacts import RecipeResult
from minimopd.cache import cache_root, load_artifact
from minimopd.evaluation import evaluate
from minimopd.profiles import get_profile
from minimopd.report import results_dict, results_markdown

RAW_PROMPT_RECIPES = {"r1_zero"}   # evaluated on the bare question, as the recipe does (chat=False)


def rescore(run: dict, *, n: int, profile=None, progress: bool = True) -> dict:
    """`{recipe: RecipeResult}` re-evaluated at `n` items per level; `run` is a results.json."""
    prof = get_profile(profile or run["profile"])
    seed, out = run["seed"], {}
    for name, rec in run["recipes"].items():
        res = RecipeResult(name, prof.name, seed)
        for stage, info in rec["info"].items():
            if "path" not in info or stage not in rec.get("evals", {}):
                continue
            path = cache_root() / Path(info["path"]).name
            if not path.exists():
                raise FileNotFoundError(
                    f"stage {name}/{stage}: {path.name} is not in the cache {cache_root()}; unpack the "
                    "run's cache entries there (or point MINIMOPD_CACHE at them) and run this again")
            art = load_artifact(path, prof.device)
            ev = evaluate(art.model, art.tokenizer, profile=prof, n_per_level=n, seed=seed,
                          reasoning=True, chat=name not in RAW_PROMPT_RECIPES)
            res.record(stage, art, ev)
            res.info[stage] = {**res.info[stage], **{k: v for k, v in info.items() if k not in res.info[stage]}}
            if progress:
                print(f"{name}/{stage} ({path.name}): acc {ev.summary()['acc']:.3f}", flush=True)
        out[name] = res
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="a lineage run's results.json")
    ap.add_argument("--eval-per-level", type=int, default=300)
    ap.add_argument("--profile", default=None, help="default: the run's")
    ap.add_argument("--out", required=True, help="folder for results.md / results.json")
    args = ap.parse_args(argv)
    if args.eval_per_level < 1:
        raise SystemExit(f"--eval-per-level must be a positive number of items, got {args.eval_per_level}")
    src = Path(args.results)
    run = json.loads(src.read_text())
    results = rescore(run, n=args.eval_per_level, profile=args.profile)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = f"python experiments/rescore.py {src} --eval-per-level {args.eval_per_level}"
    md = results_markdown(results, profile=run["profile"], seed=run["seed"], command=command)
    trained = src.with_name("results.md")
    machine = next((line.split("machine: ", 1)[1].rstrip(" .") for line in
                    (trained.read_text().splitlines() if trained.exists() else []) if "machine: " in line), "?")
    (out / "results.md").write_text(f"Stages trained by the run in `{src}` (machine: {machine}); "
                                    "re-scored here.\n\n" + md)
    (out / "results.json").write_text(json.dumps(
        results_dict(results, profile=run["profile"], seed=run["seed"], source=str(src),
                     eval_per_level=args.eval_per_level), indent=1, default=str))
    print(f"wrote {out / 'results.md'} and {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
