"""The `minimopd` command.

    minimopd lineage [--profile cpu] [--seed 0] [--recipes sft ... | all] [--out runs/] [--eval-per-level N]
        run the recipes of the lineage (default: all of them, or a short tour on the cpu profile),
        print the results table, write results.md + results.json and report.html (skipped, with
        a message, where plotly is not installed)
    minimopd grade labs/lab01_sft.ipynb      autograde a lab notebook (points + feedback)
    minimopd build-labs [--check]            regenerate labs/ from solutions/ (or check freshness)
    minimopd tasks [--show N]                list the registered tasks with sample items
    minimopd ship [--profile cpu] [--seed 0]  (maintainers) rebuild the shipped starting checkpoints
    minimopd diagnose [--stage sft] [--model PATH] [--samples 8]
        greedy / T=1 accuracy, pass@k, learnable fraction, entropy per domain and level
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _cmd_lineage(args) -> int:
    from .profiles import get_profile
    from .recipes import RECIPES, lineage_plan, resolve_recipes, run_recipe
    from .report import html_report, results_dict, results_markdown

    prof = get_profile(args.profile)
    if args.eval_per_level is not None:
        # evaluation only: no stage's cache key holds it, so cached stages are re-scored, not retrained
        if args.eval_per_level < 1:
            raise ValueError(f"--eval-per-level must be a positive number of items per level, "
                             f"got {args.eval_per_level}")
        prof = prof.replace(eval_per_level=args.eval_per_level)
    names = resolve_recipes(args.recipes, prof)
    if args.from_scratch:
        from .cache import use_shipped
        use_shipped(False)
    out = Path(args.out or f"runs/{prof.name}-seed{args.seed}")
    print(f"minimopd lineage: profile={prof.name} device={prof.device} seed={args.seed} "
          f"recipes={','.join(names)}")
    from .cache import ensure_writable
    ensure_writable()
    plan = lineage_plan(names, prof, seed=args.seed)
    print(plan.headline())
    if args.recipes is None and len(names) < len(RECIPES):
        every = lineage_plan(list(RECIPES), prof, seed=args.seed)
        print(f"profile {prof.name}'s default is a short tour, {len(names)} of the {len(RECIPES)} recipes; "
              f"`--recipes all` runs every one ({every.brief()} on a 2-core laptop), `--recipes mopd` "
              f"multi-teacher on-policy distillation from the shipped specialists "
              f"({lineage_plan(['mopd'], prof, seed=args.seed).brief()})")
    results, started = {}, plan.started
    for k, name in enumerate(names, 1):
        t0 = time.perf_counter()
        res = run_recipe(name, prof, seed=args.seed, progress=not args.no_progress,
                         position=(k, len(names)), lineage=plan)
        results[name] = res
        print(f"\n== recipe {k}/{len(names)} {name} ({time.perf_counter() - t0:.1f}s; "
              f"lineage so far {time.perf_counter() - started:.0f}s) ==")
        print(res.table_text())
        for stage, ev in res.evals.items():
            print(f"\n[{name}/{stage}] accuracy by domain and difficulty (greedy, test split)")
            print(ev.table())
    command = "minimopd " + " ".join(args.argv)
    markdown = results_markdown(results, profile=prof.name, seed=args.seed, command=command)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(markdown)
    (out / "results.json").write_text(json.dumps(results_dict(results, profile=prof.name, seed=args.seed),
                                                 indent=1, default=str))
    try:
        report = html_report(results, out / "report.html", profile=prof.name, seed=args.seed,
                             markdown=markdown)
    except ModuleNotFoundError as e:   # plotly missing (e.g. a bare GPU image): keep the results
        print(f"\nwrote {out / 'results.md'} and {out / 'results.json'}; report.html skipped "
              f"({e}; `pip install plotly` for the interactive report)")
        return 0
    print(f"\nwrote {report}, {out / 'results.md'} and {out / 'results.json'}")
    return 0


def _cmd_diagnose(args) -> int:
    from .diagnose import diagnose
    from .models import load_model
    from .profiles import get_profile

    prof = get_profile(args.profile)
    reasoning = args.reasoning
    if args.model:
        model, tok = load_model(args.model, device=prof.device)
        what = args.model
    else:
        from . import artifacts
        builders = {"base": lambda: artifacts.base_artifact(prof, seed=args.seed),
                    "sft": lambda: artifacts.sft_artifact(prof, seed=args.seed),
                    "sft_reasoning": lambda: artifacts.sft_artifact(prof, seed=args.seed, reasoning=True)}
        if args.stage not in builders:
            raise ValueError(f"unknown stage {args.stage!r}; choose one of {', '.join(builders)} "
                             "or pass --model PATH")
        art = builders[args.stage]()
        model, tok, what = art.model, art.tokenizer, f"{args.stage} ({art.path})"
        reasoning = reasoning or args.stage == "sft_reasoning"
    print(f"minimopd diagnose: {what}, profile={prof.name}, {args.samples} samples per prompt at T={args.temperature}")
    result = diagnose(model, tok, args.tasks, profile=prof, n_per_level=args.n, samples=args.samples,
                      reasoning=reasoning, chat=not args.raw, temperature=args.temperature, seed=args.seed)
    print(result.table())
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": result.meta, "rows": result.rows}, indent=1))
        print(f"wrote {args.json}")
    return 0


def _cmd_tasks(args) -> int:
    from .tasks import get_task, list_tasks

    for name in list_tasks():
        task = get_task(name)
        print(f"{name} ({task.kind})")
        for ex in task.sample(args.show, split="test", seed=0):
            print(f"   [{ex.difficulty}] {ex.prompt!r} -> {task.solution(ex)!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minimopd", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("lineage", help="run the recipes of the lineage and write a report")
    p.add_argument("--profile", default=None, help="smoke | cpu | gpu (default: $MINIMOPD_PROFILE, "
                   "else gpu if CUDA is available, else cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recipes", nargs="+", default=None,
                   help="recipes to run, or `all` (default: every recipe on the gpu and smoke profiles, "
                   "a short tour on cpu: sft llama3 kimi_k25)")
    p.add_argument("--out", default=None, help="output directory (default runs/<profile>-seed<seed>)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--eval-per-level", type=int, default=None,
                   help="held-out items per domain and level in every evaluation (default: the profile's; "
                   "claims use >= 300). Evaluation only: cached stages are re-scored, not retrained")
    p.add_argument("--from-scratch", action="store_true",
                   help="train every stage, ignoring the starting checkpoints shipped with the package")
    p = sub.add_parser("ship", help="(maintainers) write the starting checkpoints shipped with the package")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    # `grade` parses its own options (minimopd/grading/report.py); listed here for --help
    sub.add_parser("grade", help="autograde a lab notebook (minimopd grade --help)", add_help=False)
    # `scale` too (minimopd/scale/launch.py)
    sub.add_parser("scale", help="a recipe's online stage on trl + N processes (minimopd scale --help)",
                   add_help=False)
    p = sub.add_parser("build-labs", help="regenerate labs/ from solutions/")
    p.add_argument("--check", action="store_true", help="only report stale labs (exit 1 if any)")
    p = sub.add_parser("tasks", help="list registered tasks")
    p.add_argument("--show", type=int, default=2)
    p = sub.add_parser("diagnose", help="greedy / T=1 accuracy, pass@k, learnable fraction, entropy")
    p.add_argument("--profile", default=None)
    p.add_argument("--stage", default="sft", help="cached model to diagnose: base, sft, sft_reasoning")
    p.add_argument("--model", default=None, help="a saved model directory instead of a cached stage")
    p.add_argument("--tasks", nargs="*", default=None, help="task names (default: the verifiable domains)")
    p.add_argument("--n", type=int, default=None, help="items per level (default: the profile's eval size)")
    p.add_argument("--samples", type=int, default=8, help="samples per prompt (pass@k up to this k)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--reasoning", action="store_true", help="score <think>/<answer> completions (4x tokens)")
    p.add_argument("--raw", action="store_true", help="raw-text prompts instead of the chat format")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the rows to this file")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["grade"]:
        from .grading import main as grade_main
        return grade_main(argv[1:])
    if argv[:1] == ["scale"]:
        from .scale.launch import main as scale_main
        return scale_main(argv[1:])
    args = parser.parse_args(argv)
    args.argv = argv   # recorded next to the numbers it produces (results.md)

    try:
        if args.command == "lineage":
            return _cmd_lineage(args)
        if args.command == "tasks":
            return _cmd_tasks(args)
        if args.command == "diagnose":
            return _cmd_diagnose(args)
        if args.command == "ship":
            from .shipped import ship
            print(f"wrote {ship(args.profile, args.seed)}")
            return 0
        if args.command == "build-labs":
            from .notebooks import main as build_main
            return build_main(["--check"] if args.check else [])
    except (ValueError, KeyError, FileNotFoundError, FloatingPointError) as exc:
        # Bad input gets one clear line, not a traceback (set MINIMOPD_DEBUG=1 to see it).
        import os
        if os.environ.get("MINIMOPD_DEBUG"):
            raise
        print(f"minimopd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
