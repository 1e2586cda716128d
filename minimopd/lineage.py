"""The post-training lineage as data, plus two interactive figures.

Each :class:`Recipe` records one published post-training pipeline: who, when, the ordered
stages, and which miniature recipe of this course re-runs it on tiny models. The figures are
pure ``plotly.graph_objects``; nothing here touches torch, the network or the disk.

>>> from minimopd.lineage import RECIPES, timeline_figure
>>> timeline_figure().show()          # doctest: +SKIP
"""
from __future__ import annotations

import html
import re
from collections import Counter
from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.subplots import make_subplots

FAMILIES = ("RLHF", "preference", "RLVR/reasoning", "specialists+distillation")
FAMILY_COLORS = {"RLHF": "#3b5ba5", "preference": "#c08a00",
                 "RLVR/reasoning": "#c0392b", "specialists+distillation": "#1e8449"}
MINIATURES = ("instructgpt", "llama2", "llama3", "olmo3_delta", "tulu3", "r1_zero", "r1", "opd", "deepseek_v32", "mimo_v2_flash",
              "kimi_k25", "glm5", "deepseek_v4", "nemotron3_ultra", "mai_thinking1")


@dataclass(frozen=True)
class Recipe:
    name: str
    org: str
    date: str                      # "YYYY-MM": month of the paper or report
    stages: tuple[str, ...]        # ordered post-training stages, labels from STAGE_GLOSSARY
    family: str                    # one of FAMILIES
    note: str                      # what was new, in one or two sentences
    minimopd_recipe: str | None    # miniature in this course that re-runs it, or None


# label -> (stage kind used for colour, one-line explanation)
_STAGES = {
    "SFT": ("supervised",
            "Supervised fine-tuning: next-token cross-entropy on curated prompt/response pairs, human-written or "
            "model-generated."),
    "cold-start SFT": ("supervised",
                       "A small SFT pass on a few thousand readable long chain-of-thought examples, so that RL "
                       "starts from tidy reasoning."),
    "reward model": ("reward model",
                     "A scalar scorer fitted to pairwise comparisons with the Bradley-Terry loss; it stands in for "
                     "the human labeller."),
    "rejection sampling": ("rejection sampling",
                           "Draw several responses per prompt, keep the best ones by reward model or verifier, and "
                           "fine-tune on the keepers."),
    "DPO": ("preference",
            "Direct preference optimisation: a logistic loss on chosen/rejected pairs with implicit reward "
            "beta*log(pi/pi_ref); no sampling, no reward model."),
    "PPO": ("RL",
            "Proximal policy optimisation against a reward model, with a per-token KL penalty to the reference and a"
            " learned value head."),
    "RLVR": ("RL",
             "RL with verifiable rewards: a program checks the answer (exact match, unit tests) instead of a learned"
             " reward model."),
    "GRPO": ("RL",
             "Group relative policy optimisation: sample a group of answers per prompt, advantage = reward relative "
             "to the group; no value head."),
    "reasoning RL": ("RL", "An RL stage aimed at maths, code and logic problems whose answers can be checked."),
    "agentic RL": ("RL",
                   "RL on multi-step tool-use tasks run inside environments (search, terminals, code repositories)."),
    "general RL": ("RL",
                   "RL for broad chat quality, instruction following and safety, usually graded by reward models or "
                   "rubrics."),
    "multi-domain RL": ("RL",
                        "One joint RL run whose batches mix many domains (for Kimi K2.5 also text and vision)."),
    "final RL": ("RL", "A last RL pass over the consolidated model, after the specialists have been merged in."),
    "specialist SFT": ("specialists",
                       "Domain teachers trained mostly by SFT on traces that other (often external) models "
                       "generated."),
    "specialist RL": ("specialists",
                      "Separate domain experts, each trained with domain SFT then RL on that domain only; later used"
                      " as teachers."),
    "distillation SFT": ("distillation",
                         "Offline distillation: SFT on complete responses written by a stronger model or by the "
                         "specialists."),
    "OPD": ("distillation",
            "On-policy distillation from one teacher: the student samples, the teacher's log-probs on those tokens "
            "give a dense per-token signal."),
    "MOPD warm-up": ("distillation",
                     "A light SFT on teacher-generated data that moves the student onto the teachers' support before"
                     " on-policy distillation."),
    "MOPD": ("distillation",
             "Multi-teacher on-policy distillation: each student rollout is scored token by token by the teacher of "
             "its domain (reverse KL)."),
}
STAGE_GLOSSARY: dict[str, str] = {label: text for label, (_, text) in _STAGES.items()}
STAGE_KIND: dict[str, str] = {label: kind for label, (kind, _) in _STAGES.items()}
STAGE_KINDS = ("supervised", "reward model", "rejection sampling", "preference", "RL", "specialists", "distillation")
STAGE_KIND_COLORS = {"supervised": "#4c78a8", "reward model": "#f58518", "rejection sampling": "#b279a2",
                     "preference": "#cf9f00", "RL": "#e45756", "specialists": "#4fa3a5", "distillation": "#54a24b"}
_SHORT = {"reward model": "RM", "rejection sampling": "rej. sample", "cold-start SFT": "cold-start",
          "distillation SFT": "distill SFT", "specialist RL": "spec. RL", "specialist SFT": "spec. SFT",
          "MOPD warm-up": "warm-up", "multi-domain RL": "multi RL", "reasoning RL": "reason. RL",
          "agentic RL": "agent RL", "general RL": "general RL"}

RECIPES: tuple[Recipe, ...] = (
    Recipe("InstructGPT", "OpenAI", "2022-03", ("SFT", "reward model", "PPO"), "RLHF",
           "Fixed the three-step RLHF template: imitate human demonstrations, fit a reward model to human "
           "rankings, then optimise the policy against it with PPO.", "instructgpt"),
    Recipe("Llama 2", "Meta", "2023-07", ("SFT", "reward model", "rejection sampling", "PPO"), "RLHF",
           "Ran RLHF in rounds: rejection sampling alone for the first four (RLHF-V1 to V4), then PPO on top of "
           "the last of them (V5); the reward was split into two models, helpfulness and safety.", "llama2"),
    Recipe("Llama 3", "Meta", "2024-07", ("reward model", "rejection sampling", "SFT", "DPO"), "preference",
           "No online RL at all: in each of six rounds the reward model only picks the best of K samples for SFT, "
           "DPO follows, and the best checkpoints seed the next round.", "llama3"),
    Recipe("Tülu 3", "Ai2", "2024-11", ("SFT", "DPO", "RLVR"), "preference",
           "A fully open three-stage recipe on curated prompts (SFT, then DPO, then RL on verifiable rewards); "
           "the paper coined the name RLVR.", "tulu3"),
    Recipe("DeepSeek V3", "DeepSeek", "2024-12", ("SFT", "GRPO"), "RLVR/reasoning",
           "Before R1: SFT then RL with GRPO, much like the open SFT-then-RLVR recipes of the same months.", None),
    Recipe("DeepSeek R1-Zero", "DeepSeek", "2025-01", ("GRPO",), "RLVR/reasoning",
           "GRPO straight on the base model with rule rewards for correctness and format, no SFT: AIME rose from "
           "15.6% to 71.0% and responses grew longer. It seeded R1 rather than being the product.", "r1_zero"),
    Recipe("DeepSeek R1", "DeepSeek", "2025-01",
           ("cold-start SFT", "GRPO", "rejection sampling", "SFT", "GRPO", "distillation SFT"), "RLVR/reasoning",
           "Put large-scale RL at the centre: cold-start SFT, reasoning RL, SFT on ~600k reasoning + 200k other "
           "rejection-sampled answers, a final RL over all scenarios, then distillation into small dense models.",
           "r1"),
    Recipe("Qwen3 (small models)", "Alibaba Qwen", "2025-05", ("distillation SFT", "OPD"), "specialists+distillation",
           "Small models skip their own RL: off-policy then on-policy distillation from the flagship, which beat "
           "RL (74.4 vs 67.6) with about a tenth of the GPU hours (1,800 vs 17,920).", "opd"),
    Recipe("OLMo 3", "Ai2", "2025-12", ("SFT", "DPO", "RLVR"), "preference",
           "Added reasoning to the Tülu 3 shape instead of rebuilding around RL; DPO pairs come from a stronger "
           "and a weaker model of the same family (delta learning).", "olmo3_delta"),
    Recipe("DeepSeek V3.2", "DeepSeek", "2025-12", ("specialist RL", "distillation SFT", "GRPO"),
           "specialists+distillation",
           "Six specialists trained with RL are merged by SFT on their outputs, followed by one mixed-domain GRPO run.",
           "deepseek_v32"),
    Recipe("MiMo-V2-Flash", "Xiaomi", "2026-01", ("SFT", "specialist RL", "MOPD"), "specialists+distillation",
           "First clean statement of MOPD: about six domain teachers, then the student learns on its own rollouts "
           "from the matching teacher's token log-probs, replacing one monolithic RL run.", "mimo_v2_flash"),
    Recipe("Kimi K2.5", "Moonshot AI", "2026-01", ("SFT", "multi-domain RL"), "RLVR/reasoning",
           "Text-only SFT, then one joint text-and-vision RL run across coding, reasoning, vision and agentic "
           "tasks; no on-policy distillation is mentioned.", "kimi_k25"),
    Recipe("GLM-5", "Zhipu AI", "2026-02", ("SFT", "reasoning RL", "agentic RL", "general RL"), "RLVR/reasoning",
           "RL staged by capability: reasoning first, then agentic tasks, then general behaviour.", "glm5"),
    Recipe("DeepSeek V4", "DeepSeek", "2026-04", ("specialist RL", "MOPD"), "specialists+distillation",
           "More than ten domain experts, all forked from one base, merged into the student by exact full-vocabulary "
           "reverse KL on its rollouts; the student gets no RL of its own.", "deepseek_v4"),
    Recipe("Nemotron 3 Ultra", "NVIDIA", "2026-06",
           ("SFT", "RLVR", "specialist SFT", "MOPD warm-up", "MOPD", "MOPD"), "specialists+distillation",
           "More than ten teachers, many taught with external models' data; a warm-up SFT pulls the student onto "
           "their support, then two rounds of sampled-token MOPD.", "nemotron3_ultra"),
    Recipe("MAI-Thinking-1", "Microsoft AI", "2026-06", ("specialist RL", "distillation SFT", "final RL"),
           "specialists+distillation",
           "Three specialist RL 'climbs' are merged by SFT on their traces, then one last RL climb: closer to R1 "
           "than to on-policy MOPD.", "mai_thinking1"),
)


def get_recipe(name: str, recipes=RECIPES) -> Recipe:
    for r in recipes:
        if r.name == name:
            return r
    raise KeyError(f"no recipe named {name!r}; known: {[r.name for r in recipes]}")


def validate(recipes=RECIPES) -> None:
    """Raise ValueError if a recipe has an unknown stage, family, miniature or a malformed date."""
    for r in recipes:
        if not re.fullmatch(r"(19|20)\d\d-(0[1-9]|1[0-2])", r.date):
            raise ValueError(f"{r.name}: date {r.date!r} is not YYYY-MM")
        if not r.stages or any(s not in STAGE_GLOSSARY for s in r.stages):
            raise ValueError(f"{r.name}: stages {r.stages!r} must be non-empty labels from STAGE_GLOSSARY")
        if r.family not in FAMILIES:
            raise ValueError(f"{r.name}: family {r.family!r} not in {FAMILIES}")
        if r.minimopd_recipe is not None and r.minimopd_recipe not in MINIATURES:
            raise ValueError(f"{r.name}: minimopd_recipe {r.minimopd_recipe!r} not in {MINIATURES}")


def chain(recipe: Recipe) -> str:
    return " → ".join(recipe.stages)


def _sorted(recipes) -> list[Recipe]:
    validate(recipes)
    return sorted(recipes, key=lambda r: r.date)   # stable: ties keep their given order


def _hover(r: Recipe) -> str:
    mini = r.minimopd_recipe or "none in this course"
    return (f"<b>{html.escape(r.name)}</b> ({html.escape(r.org)}, {r.date})<br>"
            f"family: {r.family}<br>stages: {html.escape(chain(r))}<br>miniature: {mini}<br>"
            f"<i>{_wrap(html.escape(r.note))}</i>")


def _wrap(text: str, width: int = 70) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "<br>".join(lines + [line])


_ERAS = (("2022-01-01", "2024-01-01", "RLHF"), ("2024-01-01", "2025-01-01", "DPO+RLVR"),
         ("2025-01-01", "2026-01-01", "RL first"), ("2026-01-01", "2026-09-01", "MOPD"))


def timeline_figure(recipes=RECIPES) -> go.Figure:
    """Left: when each recipe appeared (colour = family). Right: its ordered stages as coloured boxes."""
    rs = _sorted(recipes)
    ys = list(range(len(rs)))
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, column_widths=[0.36, 0.64], horizontal_spacing=0.015,
                        subplot_titles=("release (month of the report)", "post-training pipeline, in order"))
    for fam in FAMILIES:                                   # one trace (and legend entry) per family
        idx = [i for i, r in enumerate(rs) if r.family == fam]
        if not idx:
            continue
        fig.add_trace(go.Scatter(
            x=[rs[i].date + "-01" for i in idx], y=idx, mode="markers", name=fam, legendgroup=fam,
            marker=dict(size=13, color=FAMILY_COLORS[fam], line=dict(width=1, color="white")),
            hovertext=[_hover(rs[i]) for i in idx], hoverinfo="text"), row=1, col=1)
    # grey connectors first, so that the stage boxes are drawn over them
    shapes = [dict(type="line", xref="x2", yref="y2", x0=0, x1=len(r.stages) - 1, y0=i, y1=i,
                   line=dict(color="#bbbbbb", width=2), layer="below") for i, r in enumerate(rs) if len(r.stages) > 1]
    for kind in STAGE_KINDS:                               # one text/hover trace per stage kind
        px, py, txt, hov = [], [], [], []
        for i, r in enumerate(rs):
            for j, s in enumerate(r.stages):
                if STAGE_KIND[s] != kind:
                    continue
                px.append(j)
                py.append(i)
                txt.append(_SHORT.get(s, s))
                hov.append(f"<b>{html.escape(r.name)}</b>, step {j + 1}/{len(r.stages)}: <b>{html.escape(s)}</b>"
                           f"<br>{_wrap(html.escape(STAGE_GLOSSARY[s]))}")
                shapes.append(dict(type="rect", xref="x2", yref="y2", x0=j - 0.44, x1=j + 0.44, y0=i - 0.36,
                                   y1=i + 0.36, fillcolor=STAGE_KIND_COLORS[kind], line=dict(width=0), layer="below"))
        if not px:
            continue
        fig.add_trace(go.Scatter(
            x=px, y=py, mode="text", text=txt, textfont=dict(size=10, color="white"), hovertext=hov,
            hoverinfo="text", showlegend=False, legendgroup=f"stage:{kind}"), row=1, col=2)
        fig.add_trace(go.Scatter(   # legend swatch only
            x=[None], y=[None], mode="markers", name=kind, legendgroup=f"stage:{kind}", legend="legend2",
            marker=dict(symbol="square", size=12, color=STAGE_KIND_COLORS[kind])))
    max_len = max(len(r.stages) for r in rs)
    fig.update_layout(
        # no fixed width: the figure fills its column (an 800-px notebook column included); both
        # legends sit in rows under the plot, never over the data
        shapes=shapes, autosize=True, height=max(460, 190 + 30 * len(rs)), template="plotly_white",
        title=dict(text="From InstructGPT to MOPD: post-training recipes over time", x=0.01, y=0.98),
        margin=dict(l=10, r=10, t=70, b=130), hoverlabel=dict(align="left"),
        legend=dict(title_text="family", orientation="h", x=0, y=-0.07, xanchor="left", yanchor="top",
                    font=dict(size=11)),
        legend2=dict(title_text="stage kind", orientation="h", x=0, y=-0.16, xanchor="left", yanchor="top",
                     font=dict(size=11)))
    for k, (x0, x1, label) in enumerate(_ERAS):          # the four eras of the course, alternately shaded
        if k % 2 == 0:
            fig.add_vrect(x0=x0, x1=x1, fillcolor="#888888", opacity=0.07, line_width=0, layer="below", row=1, col=1)
        fig.add_annotation(x=x0, y=-0.75, xanchor="left", text=label, showarrow=False,
                           font=dict(size=9, color="#777"), row=1, col=1)
    fig.update_yaxes(tickvals=ys, ticktext=[r.name for r in rs], autorange="reversed", showgrid=True,
                     gridcolor="#f0f0f0", zeroline=False, row=1, col=1)
    fig.update_yaxes(showgrid=False, zeroline=False, row=1, col=2)
    fig.update_xaxes(type="date", dtick="M12", tickformat="%Y", range=[_ERAS[0][0], _ERAS[-1][1]],
                     row=1, col=1)
    fig.update_xaxes(range=[-0.55, max_len - 0.45], tickvals=list(range(max_len)),
                     ticktext=[f"step {k + 1}" for k in range(max_len)], showgrid=False, zeroline=False, row=1, col=2)
    return fig


def stages_matrix_figure(recipes=RECIPES) -> go.Figure:
    """Heatmap: which recipe uses which stage label (cell = how many times), plus a family column."""
    rs = _sorted(recipes)
    used = Counter(s for r in rs for s in r.stages)
    labels = [s for s in STAGE_GLOSSARY if used[s]]       # glossary order = grouped by stage kind
    z, text, hov = [], [], []
    for r in rs:
        counts = Counter(r.stages)
        z.append([counts[s] for s in labels])
        text.append(["●" * counts[s] for s in labels])
        hov.append([f"<b>{html.escape(r.name)}</b> · {html.escape(s)}: "
                    + (f"used {counts[s]}× (step {', '.join(str(j + 1) for j, t in enumerate(r.stages) if t == s)}"
                       f" of {len(r.stages)})<br>{_wrap(html.escape(STAGE_GLOSSARY[s]))}" if counts[s] else "not used")
                    for s in labels])
    zmax = max(max(row) for row in z)
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(len(labels))), y=list(range(len(rs))), text=text, texttemplate="%{text}",
        textfont=dict(size=11, color="white"), hovertext=hov, hoverinfo="text", showscale=False, xgap=2, ygap=2,
        zmin=0, zmax=max(zmax, 2), colorscale=[[0, "#f2f2f2"], [0.01, "#9ecae1"], [1, "#08519c"]]))
    for fam in FAMILIES:                                   # family column on the left, one trace per family
        idx = [i for i, r in enumerate(rs) if r.family == fam]
        if idx:
            fig.add_trace(go.Scatter(
                x=[-1.1] * len(idx), y=idx, mode="markers", name=fam, legendgroup=fam,
                marker=dict(symbol="square", size=14, color=FAMILY_COLORS[fam]),
                hovertext=[_hover(rs[i]) for i in idx], hoverinfo="text"))
    for k, s in enumerate(labels):                         # thin coloured bar = stage kind, above each column
        fig.add_shape(type="rect", x0=k - 0.45, x1=k + 0.45, y0=-0.95, y1=-0.7,
                      fillcolor=STAGE_KIND_COLORS[STAGE_KIND[s]], line=dict(width=0))
    fig.update_layout(
        autosize=True, height=max(420, 210 + 28 * len(rs)), template="plotly_white",
        title=dict(text="Which recipe uses which stage (● = once, ●● = twice)", x=0.01, y=0.99, yanchor="top"),
        margin=dict(l=10, r=10, t=150, b=60), hoverlabel=dict(align="left"),
        legend=dict(title_text="family", orientation="h", x=0, y=-0.02, yanchor="top", xanchor="left",
                    tracegroupgap=0))
    fig.update_xaxes(tickvals=[-1.1] + list(range(len(labels))), ticktext=["family"] + labels, tickangle=-40,
                     side="top", showgrid=False, zeroline=False, range=[-1.7, len(labels) - 0.5])
    fig.update_yaxes(tickvals=list(range(len(rs))), ticktext=[r.name for r in rs], range=[len(rs) - 0.5, -1.0],
                     showgrid=False, zeroline=False)
    return fig


def recipes_table(recipes=RECIPES) -> list[dict]:
    """One dict per recipe, in date order, ready for a DataFrame or an HTML table."""
    return [{"date": r.date, "name": r.name, "org": r.org, "family": r.family, "stages": chain(r),
             "n_stages": len(r.stages), "miniature": r.minimopd_recipe or "", "note": r.note}
            for r in _sorted(recipes)]


def recipe_card_html(recipe: Recipe) -> str:
    """A small HTML card: the recipe's stages as coloured boxes, the note and the glossary of its stages."""
    boxes = " <span style='color:#999'>→</span> ".join(
        f"<span style='background:{STAGE_KIND_COLORS[STAGE_KIND[s]]};color:white;padding:2px 6px;"
        f"border-radius:4px'>{html.escape(s)}</span>" for s in recipe.stages)
    gloss = "".join(f"<li><b>{html.escape(s)}</b>: {html.escape(STAGE_GLOSSARY[s])}</li>"
                    for s in dict.fromkeys(recipe.stages))
    mini = f"<code>{recipe.minimopd_recipe}</code>" if recipe.minimopd_recipe else "none in this course"
    return (f"<div style='font-family:sans-serif;line-height:1.6'>"
            f"<h4 style='margin:4px 0'>{html.escape(recipe.name)} "
            f"<small style='color:#666'>({html.escape(recipe.org)}, {recipe.date}, "
            f"<span style='color:{FAMILY_COLORS[recipe.family]}'>{recipe.family}</span>)</small></h4>"
            f"<div>{boxes}</div><p>{html.escape(recipe.note)}</p><p>miniature: {mini}</p><ul>{gloss}</ul></div>")
