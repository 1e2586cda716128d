"""Plotly figures for stage histories and evaluations, and the HTML report of `minimopd lineage`.

Thin on purpose: every figure is drawn from a metrics history (list of dicts) or an
`EvalResult`, the same objects the tests read, so a plot can never disagree with a number.
"""
from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .tasks import DIFFICULTIES

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
MAX_COLS = 3       # subplots per row: every figure fits an 800-px notebook column


def setup_notebook() -> None:
    """The first call of every course notebook and lab.

    Figures render in JupyterLab from their data and, in a saved notebook or an HTML export
    (`jupyter nbconvert --to html`), from plotly.js embedded once per notebook, so they draw
    offline; library warnings that say nothing to a student (transformers' deprecation notices)
    stay out of the cell outputs. Progress bars are plain text (`progress.bar`), so a saved
    notebook shows their last state instead of a widget it cannot find."""
    import warnings

    import plotly.io as pio
    pio.renderers.default = "plotly_mimetype+notebook"
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(transformers|torch)(\.|$)")


def knobs(fn, **controls):
    """Controls that call `fn(**values)` again, into an output area below them, whenever one moves.

    Each keyword names an argument of `fn`: a list gives a dropdown, a (low, high) pair of ints a
    slider, a (low, high, step) triple of floats a float slider, `bool` a checkbox, an ipywidgets
    widget is used as it is; the start value is `fn`'s default for that argument. Nothing is drawn until a knob
    moves: call `fn()` once before, for the static output a saved notebook keeps (a run without a
    browser, like nbconvert's or nbgrader's, never waits on widget output).

        explore()                                           # the static output
        knobs(explore, domain=["add", "sort"], n=(1, 12))   # the interactive one
    """
    import inspect

    import ipywidgets as widgets

    params = inspect.signature(fn).parameters
    unknown = [name for name in controls if name not in params]
    if unknown:
        raise TypeError(f"knobs: {fn.__name__}() has no argument(s) {', '.join(unknown)}; "
                        f"its arguments are {', '.join(params)}")
    made = {}
    for name, spec in controls.items():
        default = params[name].default
        start = {} if default is inspect.Parameter.empty else {"value": default}
        if isinstance(spec, widgets.Widget):
            made[name] = spec
        elif spec is bool:
            made[name] = widgets.Checkbox(description=name, **start)
        elif isinstance(spec, list):
            made[name] = widgets.Dropdown(options=spec, description=name, **start)
        elif isinstance(spec, tuple) and len(spec) == 2 and all(isinstance(v, int) for v in spec):
            made[name] = widgets.IntSlider(min=spec[0], max=spec[1], description=name, **start)
        elif isinstance(spec, tuple) and len(spec) == 3:
            made[name] = widgets.FloatSlider(min=spec[0], max=spec[1], step=spec[2], description=name, **start)
        else:
            raise TypeError(f"knobs: {name}={spec!r} is not a control; give a list (dropdown), (low, high) "
                            "ints (slider), (low, high, step) floats (float slider), bool (checkbox) or an ipywidgets "
                            "widget")
    out = widgets.Output()

    def redraw(_change=None):
        with out:
            out.clear_output(wait=True)
            fn(**{name: w.value for name, w in made.items()})

    for w in made.values():
        w.observe(redraw, names="value")
    rows = [widgets.HBox(list(made.values())[i:i + 3]) for i in range(0, len(made), 3)]
    return widgets.VBox(rows + [out])


def responsive(fig: go.Figure, *, title: str = "", height: int = 360, rows: int = 1) -> go.Figure:
    """No fixed width (the figure fills its column and follows it), the legend in a row under
    the plot instead of over the data."""
    fig.update_layout(title=title, height=height * rows + 90, autosize=True, template="plotly_white",
                      margin=dict(l=50, r=20, t=60 if title else 30, b=80),
                      legend=dict(orientation="h", yanchor="top", y=-0.24 / rows, xanchor="left", x=0))
    return fig


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, MAX_COLS)
    return (n + cols - 1) // cols, cols


def _series(history: list[dict], key: str, x: str = "step"):
    rows = [r for r in history if key in r and r[key] is not None]
    return [r.get(x, i) if x == "step" else r[x] for i, r in enumerate(rows)], [r[key] for r in rows]


X_TITLES = {"step": "step", "flops": "FLOPs (cumulative, teachers included)",
            "tokens_generated": "tokens sampled (cumulative)", "time": "seconds"}


def history_figure(histories: dict[str, list[dict]] | list[dict], keys=("loss",), *,
                   title: str = "", smooth: int = 1, x: str = "step") -> go.Figure:
    """One subplot per metric in `keys`, one line per run in `histories` ({label: history}).

    `smooth` > 1 adds a trailing moving average (raw values stay visible, faded). `x` is the
    horizontal axis: "step", or a cumulative counter of the online history ("flops",
    "tokens_generated") to compare runs at equal compute.
    """
    if isinstance(histories, list):
        histories = {"run": histories}
    keys = list(keys)
    nrows, ncols = _grid(len(keys))
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=keys, vertical_spacing=0.18 if nrows > 1 else 0.1)
    for i, (label, hist) in enumerate(histories.items()):
        color = PALETTE[i % len(PALETTE)]
        for k, key in enumerate(keys):
            r, c = divmod(k, ncols)
            xs, y = _series(hist, key, x)
            if not xs:
                continue
            if smooth > 1 and len(y) > smooth:
                fig.add_trace(go.Scatter(x=xs, y=y, mode="lines", line=dict(color=color, width=1),
                                         opacity=0.3, showlegend=False, hoverinfo="skip"), r + 1, c + 1)
                y = [sum(y[max(0, j - smooth + 1):j + 1]) / len(y[max(0, j - smooth + 1):j + 1])
                     for j in range(len(y))]
            fig.add_trace(go.Scatter(x=xs, y=y, mode="lines+markers" if len(xs) < 30 else "lines",
                                     name=label, legendgroup=label, showlegend=k == 0,
                                     line=dict(color=color)), r + 1, c + 1)
            fig.update_xaxes(title_text=X_TITLES.get(x, x), row=r + 1, col=c + 1)
    fig.update_layout(hovermode="x unified")
    return responsive(fig, title=title, height=320, rows=nrows)


def accuracy_figure(evals: dict, *, title: str = "Accuracy on held-out test items") -> go.Figure:
    """Grouped bars: one group per (domain, difficulty), one bar per evaluated model."""
    fig = go.Figure()
    for i, (label, ev) in enumerate(evals.items()):
        rows = sorted(ev.rows, key=lambda r: (r["domain"], DIFFICULTIES.index(r["difficulty"])
                                              if r["difficulty"] in DIFFICULTIES else 9))
        fig.add_trace(go.Bar(
            x=[[r["domain"] for r in rows], [r["difficulty"] for r in rows]],
            y=[r["accuracy"] for r in rows], name=label, marker_color=PALETTE[i % len(PALETTE)],
            customdata=[[r["n"], r["format_rate"], r["mean_length"]] for r in rows],
            hovertemplate="%{x}<br>accuracy %{y:.3f}<br>n=%{customdata[0]} "
                          "format=%{customdata[1]:.2f} len=%{customdata[2]:.1f}<extra>" + label + "</extra>"))
    fig.update_layout(barmode="group", yaxis=dict(range=[0, 1.02], title="accuracy"))
    return responsive(fig, title=title, height=380)


def lineage_compute_figure(rows: list[dict], *,
                           title: str = "Every recipe: mean accuracy against compute") -> go.Figure:
    """`report.lineage_rows` as a picture: one marker per trained model (mean held-out accuracy over
    the verifiable domains against `FLOPs from start`, log scale), one colour per recipe. Starting
    points (0 FLOPs) cannot sit on a log axis: each model's hover names its recipe's start and
    the change from it."""
    fig = go.Figure()
    recipes = list(dict.fromkeys(r["recipe"] for r in rows))
    for i, name in enumerate(recipes):
        own = [r for r in rows if r["recipe"] == name and "mean" in r]
        if not own:
            continue
        start = own[0]
        pts = [r for r in own if r["FLOPs from start"] > 0]
        if not pts:
            continue
        fig.add_trace(go.Scatter(
            x=[r["FLOPs from start"] for r in pts], y=[r["mean"] for r in pts], mode="markers",
            name=name, marker=dict(color=PALETTE[i % len(PALETTE)], size=10),
            text=[f"{name}/{r['model']}<br>start {start['model']}: {start['mean']:.3f}, "
                  f"change {r['mean'] - start['mean']:+.3f}" for r in pts],
            hovertemplate="%{text}<br>mean %{y:.3f}<br>%{x:.2e} FLOPs<extra></extra>"))
    fig.update_layout(xaxis=dict(type="log", title="FLOPs from the recipe's start (teachers' training included)"),
                      yaxis=dict(title="mean accuracy, verifiable domains (greedy, held-out)"))
    return responsive(fig, title=title, height=420)


def overoptimisation_figure(runs: dict[str, list[dict]], *, points: int = 10,
                            title: str = "Proxy and gold reward against KL to the SFT model") -> go.Figure:
    """Gao et al.'s picture: for each PPO run ({label: history}, e.g. one per KL coefficient) the
    reward model's score (proxy) and the hidden gold score against the KL to the reference,
    each point the mean over a tenth of the run (`recipes_pref.windows`). Two subplots side by
    side; a run's proxy keeps climbing while its gold turns down where the policy exploits the
    reward model."""
    from .recipes_pref import windows
    fig = make_subplots(rows=1, cols=2, subplot_titles=("proxy: reward-model score", "gold score"))
    for i, (label, hist) in enumerate(runs.items()):
        w = windows(hist, points=points)
        color = PALETTE[i % len(PALETTE)]
        text = [f"steps {r['first']}-{r['last']}" for r in w]
        for col, key in ((1, "reward"), (2, "accuracy")):
            fig.add_trace(go.Scatter(x=[r["kl_ref"] for r in w], y=[r[key] for r in w], mode="lines+markers",
                                     name=label, legendgroup=label, showlegend=col == 1, text=text,
                                     line=dict(color=color),
                                     hovertemplate="KL %{x:.3f}<br>%{y:.3f}<br>%{text}<extra>" + label + "</extra>"),
                          1, col)
            fig.update_xaxes(title_text="KL to the SFT model (nats per token)", row=1, col=col)
    return responsive(fig, title=title, height=360)


def reward_vs_gold_figure(scores, gold, *, bins: int = 10,
                          title: str = "Reward-model score against the hidden gold score") -> go.Figure:
    """A reward model's view of held-out responses: each response's score (y) against its gold
    score (x), faded, and the mean score of each gold bin as a line. A good reward model's line
    rises steadily; where it flattens, the model cannot tell those responses apart."""
    scores, gold = [float(s) for s in scores], [float(g) for g in gold]
    if len(scores) != len(gold) or not scores:
        raise ValueError(f"reward_vs_gold_figure needs one gold score per reward score, got {len(scores)} scores "
                         f"and {len(gold)} gold scores")
    edges = [i / bins for i in range(bins + 1)]
    centres, means = [], []
    for lo, hi in zip(edges, edges[1:]):
        inside = [s for s, g in zip(scores, gold) if lo <= g < hi or (hi == 1.0 and g == 1.0)]
        if inside:
            centres.append((lo + hi) / 2)
            means.append(sum(inside) / len(inside))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=gold, y=scores, mode="markers", name="responses", opacity=0.25,
                             marker=dict(size=4, color=PALETTE[0])))
    fig.add_trace(go.Scatter(x=centres, y=means, mode="lines+markers", name="mean per gold bin",
                             line=dict(color=PALETTE[1], width=3)))
    fig.update_xaxes(title_text="gold score (hidden labeller)")
    fig.update_yaxes(title_text="reward-model score (normalised)")
    return responsive(fig, title=title, height=380)


def gold_kl_figure(models: dict[str, dict], baseline: dict, curves: dict[str, list[dict]] | None = None, *,
                   points: int = 15,
                   title: str = "Gold reward gained against KL to the SFT model") -> go.Figure:
    """Preference methods on one plane: each model ({label: `recipes_llama.place` row}) at its KL to
    the reference (x) and its gold gain over `baseline` (the reference's own row, y), both measured
    on the models' own samples of the same held-out prompts. `curves` ({label: PPO history}) adds
    a run's path through training, each point a window of steps (`recipes_pref.windows`), as its
    gain over its first window: a history measures gold on the training prompts, so gains, not
    levels, compare. Hover shows each model's gold level and sample length."""
    from .recipes_pref import windows
    fig = go.Figure()
    for i, (label, hist) in enumerate((curves or {}).items()):
        w = windows(hist, points=points)
        fig.add_trace(go.Scatter(x=[r["kl_ref"] for r in w], y=[r["accuracy"] - w[0]["accuracy"] for r in w],
                                 mode="lines", name=label, line=dict(color=PALETTE[-1 - i % 2], dash="dot"),
                                 text=[f"steps {r['first']}-{r['last']}" for r in w],
                                 hovertemplate="KL %{x:.3f}<br>gain %{y:+.3f}<br>%{text}<extra>" + label + "</extra>"))
    for i, (label, row) in enumerate(models.items()):
        gain = row["gold (T=1)"] - baseline["gold (T=1)"]
        fig.add_trace(go.Scatter(x=[row["KL to reference"]], y=[gain], mode="markers", name=label,
                                 marker=dict(size=11, color=PALETTE[i % (len(PALETTE) - 2)],
                                             symbol=("circle", "diamond", "square")[i // (len(PALETTE) - 2) % 3]),
                                 customdata=[[row["gold (T=1)"], row.get("length", float("nan"))]],
                                 hovertemplate="KL %{x:.3f}<br>gain %{y:+.3f}<br>gold %{customdata[0]:.3f}<br>"
                                               "length %{customdata[1]:.1f}<extra>" + label + "</extra>"))
    fig.add_hline(y=0, line=dict(color="#999", width=1))
    fig.update_xaxes(title_text="KL to the SFT model (nats per token, on the model's own samples)", rangemode="tozero")
    fig.update_yaxes(title_text="gold gain over the SFT model (T = 1)")
    return responsive(fig, title=title, height=400)


def pass_at_k_figure(diagnoses: dict, *, domains=None,
                     title: str = "pass@k on held-out items (before / after a stage)") -> go.Figure:
    """pass@k against k (log scale), one subplot per domain, one line per (model, level):
    `diagnoses` is {label: diagnose.Diagnosis}. RL that only sharpens raises the left end (k=1)
    towards the right end and leaves the right end where it was (Yue et al. 2025)."""
    first = next(iter(diagnoses.values()))
    domains = list(domains or dict.fromkeys(r["domain"] for r in first.rows))
    nrows, ncols = _grid(len(domains)) if len(domains) != 4 else (2, 2)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=domains, shared_yaxes=True,
                        vertical_spacing=0.2 if nrows > 1 else 0.1)
    dashes = {"easy": "dot", "medium": "dash", "hard": "solid"}
    for i, (label, diag) in enumerate(diagnoses.items()):
        color = PALETTE[i % len(PALETTE)]
        for d, domain in enumerate(domains):
            row, col = divmod(d, ncols)
            for r in (r for r in diag.rows if r["domain"] == domain):
                ks = sorted(r["pass@k"])
                fig.add_trace(go.Scatter(
                    x=ks, y=[r["pass@k"][k] for k in ks], mode="lines+markers",
                    name=f"{label} {r['difficulty']}", legendgroup=label, showlegend=d == 0,
                    line=dict(color=color, dash=dashes.get(r["difficulty"], "solid"))), row + 1, col + 1)
            fig.update_xaxes(type="log", title_text="k", row=row + 1, col=col + 1)
            fig.update_yaxes(range=[0, 1.02], row=row + 1, col=col + 1)
    fig.update_yaxes(title_text="pass@k", col=1)
    return responsive(fig, title=title, height=300, rows=nrows)


def write_report(path: str | Path, title: str, sections: list[tuple[str, object]]) -> Path:
    """Write a self-contained HTML page: each section is (heading, figure | text | html table).

    plotly.js is embedded once so the report opens offline.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts, first_fig = [], True
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(body, go.Figure):
            parts.append(body.to_html(full_html=False, include_plotlyjs=first_fig,
                                      config={"responsive": True}, default_width="100%"))
            first_fig = False
        elif isinstance(body, str) and body.lstrip().startswith("<"):
            parts.append(body)
        else:
            parts.append(f"<pre>{html.escape(str(body))}</pre>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
            "pre{background:#f6f8fa;padding:1em;overflow-x:auto}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{''.join(parts)}</body></html>")
    path.write_text(page)
    return path
