"""What `minimopd lineage` writes: a Markdown results file (the source of RESULTS.md) and an HTML
report with the plotly figures. Both are built from `RecipeResult`s only, so every number in them
comes from the run that printed it.
"""
from __future__ import annotations

import math
import platform
from pathlib import Path

import torch

from .tasks import DIFFICULTIES, VERIFIABLE_DOMAINS


def _fmt(v, digits=3):
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def _md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _curve(history: list[dict], key: str, points: int = 6) -> str:
    """A few evenly spaced values of a metric over training, e.g. 'step 0: 0.02 ... step 149: 0.93'."""
    rows = [r for r in history if key in r and not (isinstance(r[key], float) and math.isnan(r[key]))]
    if not rows:
        return "n/a"
    idx = sorted({round(i * (len(rows) - 1) / max(points - 1, 1)) for i in range(points)})
    return ", ".join(f"{rows[i]['step']}: {_fmt(rows[i][key], 2)}" for i in idx)


def window_mean(history, key, first: bool, frac: float = 0.1, *, window: int | None = None) -> float:
    """Mean of `key` over the first (or last) `frac` of a history's rows that have it (or over
    `window` rows), None and NaN skipped; NaN if no row has it."""
    vals = [r[key] for r in history if r.get(key) is not None and not math.isnan(r[key])]
    if not vals:
        return float("nan")
    k = window if window is not None else max(1, int(len(vals) * frac))
    part = vals[:k] if first else vals[-k:]
    return sum(part) / len(part)


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads, "
            f"{gpu}, torch {torch.__version__}").replace("  ", " ")


def _is_teacher(stage: str) -> bool:
    return stage.startswith("teacher")


def _learned_from_teachers(info: dict) -> bool:
    """Scored by a teacher on its own samples (on-policy) or trained on teachers' traces."""
    return bool(info.get("signal_tokens")) or "traces" in info


def lineage_rows(results: dict) -> list[dict]:
    """The lineage in one table: one row per model a recipe trained and evaluated, its teachers
    aside. Columns: accuracy per domain (greedy, held-out), `mean` over the verifiable domains
    (when all were evaluated), the stage's own FLOPs and `FLOPs from start`.

    `FLOPs from start` is what it cost to reach the model from the recipe's starting point (its
    first evaluated model, counted 0; pretraining and the shared SFT are not counted): the FLOPs
    of every stage on its path, following each stage's parent (`info["parent"]`) while the parent
    is a stage of the recipe, plus, once per path, the training FLOPs of every teacher recorded
    before a stage that learned from teachers (`info["build_flops"]` where a teacher took more
    than one stage). A teacher's scoring or sampling is in its student's stage FLOPs already.
    Comparison arms that branch from one model (GRPO vs Dr.GRPO, MOPD vs mixed RL) each count
    their own path only."""
    rows = []
    for name, res in results.items():
        evaluated = [s for s in res.evals if not _is_teacher(s)]
        if not evaluated:
            continue
        start = evaluated[0]
        order = list(res.info)                      # stages in the order the recipe recorded them
        by_path = {Path(str(res.info[s].get("path", ""))).name: s for s in order}
        memo: dict[str, tuple[float, frozenset]] = {}

        def path_cost(stage: str) -> tuple[float, frozenset]:
            if stage not in memo:
                info = res.info.get(stage, {})
                own, teachers = float(info.get("flops") or 0.0), frozenset()
                parent = by_path.get(str(info.get("parent")))
                if stage == start:
                    own = 0.0
                elif parent is not None and parent != stage:
                    parent_cost, teachers = path_cost(parent)
                    own += parent_cost
                if _learned_from_teachers(info):
                    new = frozenset(s for s in order[:order.index(stage)] if _is_teacher(s)) - teachers
                    own += sum(float(res.info[t].get("build_flops", res.info[t].get("flops")) or 0.0)
                               for t in new)
                    teachers |= new
                memo[stage] = (own, teachers)
            return memo[stage]

        for stage in evaluated:
            ev, info = res.evals[stage], res.info.get(stage, {})
            domains = list(dict.fromkeys(r["domain"] for r in ev.rows))
            row = {"recipe": name, "model": stage}
            row.update({d: round(ev.accuracy(d), 3) for d in domains})
            if all(d in domains for d in VERIFIABLE_DOMAINS):
                row["mean"] = round(sum(ev.accuracy(d) for d in VERIFIABLE_DOMAINS) / len(VERIFIABLE_DOMAINS), 3)
            row["stage FLOPs"] = float(info.get("flops") or 0.0) if stage != start else 0.0
            row["FLOPs from start"] = path_cost(stage)[0]
            rows.append(row)
    return rows


def lineage_markdown(rows: list[dict]) -> str:
    """`lineage_rows` as a Markdown table (domains in the tasks' order, FLOPs as 1.23e13)."""
    domains = [d for d in VERIFIABLE_DOMAINS if any(d in r for r in rows)]
    domains += [d for d in dict.fromkeys(k for r in rows for k in r)
                if d not in (*domains, "recipe", "model", "mean", "stage FLOPs", "FLOPs from start")]
    keys = ["recipe", "model", *domains, "mean", "stage FLOPs", "FLOPs from start"]
    cells = [[(f"{r[k]:.2e}" if r[k] else "-" if k == "stage FLOPs" else "0") if "FLOPs" in k
              else r.get(k, "") for k in keys] for r in rows]
    return _md_table(keys, cells)


def results_dict(results: dict, *, profile: str, seed: int, **extra) -> dict:
    """What `results.json` holds for a lineage run: per recipe its table, stage info, histories,
    evaluation rows and the recipe's own tables (`extra` adds top-level fields, e.g. where a
    re-scored run came from)."""
    return {"profile": profile, "seed": seed, **extra,
            "recipes": {n: {"table": r.table(), "info": r.info, "histories": r.histories,
                            "evals": {s: ev.rows for s, ev in r.evals.items()}, "tables": r.tables}
                        for n, r in results.items()}}


def results_from_dict(data: dict) -> dict:
    """The inverse of `results_dict` for what tables need: {recipe: RecipeResult} with each
    stage's evaluation rows, info and the recipe's own tables (no models; histories where kept)."""
    from .artifacts import RecipeResult
    from .evaluation import EvalResult
    out = {}
    for name, rec in data["recipes"].items():
        res = RecipeResult(name, data.get("profile", ""), data.get("seed", 0))
        res.evals = {s: EvalResult(rows) for s, rows in rec.get("evals", {}).items()}
        res.info = dict(rec.get("info", {}))
        res.histories = dict(rec.get("histories", {}))
        res.tables = dict(rec.get("tables", {}))
        out[name] = res
    return out


def results_markdown(results: dict, *, profile: str, seed: int, command: str) -> str:
    """Markdown tables for every recipe run: stage accuracy by difficulty, format, length, time,
    compute, and the training curves the course's claims are about."""
    out = [f"Command: `{command}`  ", f"Profile `{profile}`, seed {seed}, machine: {machine()}.", ""]
    rows = lineage_rows(results)
    if rows:
        out += ["### Every recipe: accuracy per domain and compute\n",
                "Greedy, held-out. `mean`: over the verifiable domains. `FLOPs from start`: from the "
                "recipe's first model (0) along the model's parents, teachers' training included "
                "where it learned from them.\n", lineage_markdown(rows), ""]
    for name, res in results.items():
        out.append(f"### Recipe `{name}`\n")
        header = ["stage"] + [f"acc {d}" for d in DIFFICULTIES] + ["acc all", "format", "length",
                                                                   "train s", "FLOPs"]
        rows = []
        for stage, ev in res.evals.items():
            s, info = ev.summary(), res.info.get(stage, {})
            flops = info.get("compute_flops", info.get("flops"))
            rows.append([stage] + [s.get(f"acc/{d}", float("nan")) for d in DIFFICULTIES] +
                        [s["acc"], s["format_rate"], round(s["mean_length"], 1),
                         round(info.get("wall_time", float("nan")), 1),
                         f"{flops:.2e}" if flops else "-"])
        if rows:
            out += [_md_table(header, rows), ""]
        for title, table in getattr(res, "tables", {}).items():
            if table:
                keys = list(dict.fromkeys(k for r in table for k in r))
                out += [f"**{title}**\n", _md_table(keys, [[r.get(k, "") for k in keys] for r in table]), ""]
        for stage, ev in res.evals.items():
            domains = list(dict.fromkeys(r["domain"] for r in ev.rows))
            cells = [[dom] + [ev.accuracy(dom, d) for d in DIFFICULTIES] for dom in domains]
            out += [f"<details><summary>{name}/{stage}: accuracy by domain</summary>\n",
                    _md_table(["domain"] + list(DIFFICULTIES), cells), "\n</details>\n"]
        for stage, hist in res.histories.items():
            if hist and "reward" in hist[0]:
                out.append(f"Training curve `{stage}` ({len(hist)} steps):  ")
                for key in ("reward", "accuracy", "format_rate", "length", "length_wrong", "kl_ref"):
                    if any(key in r for r in hist):
                        out.append(f"- {key}: first 10% {_fmt(window_mean(hist, key, True), 3)}, "
                                   f"last 10% {_fmt(window_mean(hist, key, False), 3)}; "
                                   f"steps {_curve(hist, key)}  ")
                out.append("")
        skipped = {k: v for k, v in res.info.items() if isinstance(v, dict) and "skipped" in v}
        for stage, info in skipped.items():
            out.append(f"- `{stage}` skipped: {info['skipped']}\n")
    return "\n".join(out)


def html_report(results: dict, path, *, profile: str, seed: int, markdown: str):
    """`report.html`: every stage's curves and the accuracy figure (plotly), then the Markdown.
    Imports plotly only here, so a machine without it (a bare GPU image) can still run the
    recipes and write results.md / results.json."""
    from . import plots
    sections, evals = [], {}
    for name, res in results.items():
        for stage, ev in res.evals.items():
            evals[f"{name}/{stage}"] = ev
        for stage, hist in res.histories.items():
            keys = [k for k in ("loss", "eval/heldout_loss", "reward", "accuracy", "format_rate",
                                "length_wrong") if any(k in r for r in hist)]
            if keys:
                sections.append((f"{name}: {stage} training curves",
                                 plots.history_figure({stage: hist}, keys, smooth=5)))
    if evals:
        sections.insert(0, ("Held-out accuracy of every evaluated stage", plots.accuracy_figure(evals)))
    rows = lineage_rows(results)
    if any("mean" in r and r["FLOPs from start"] > 0 for r in rows):
        sections.insert(0, ("Every recipe: mean accuracy against compute", plots.lineage_compute_figure(rows)))
    sections.append(("Results (Markdown)", markdown))
    return plots.write_report(path, f"minimopd lineage — {profile}, seed {seed}", sections)
