"""Notebooks that render everywhere: tidy saved outputs, figures that fit a column, live links."""
import glob
import re
from pathlib import Path

import nbformat
import pytest

from minimopd import notebooks, plots

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = sorted(glob.glob(str(ROOT / "course" / "*.ipynb")) + glob.glob(str(ROOT / "solutions" / "*.ipynb")))


def test_tidy_embeds_plotly_once_replaces_widgets_and_collapses_bars():
    import plotly.graph_objects as go
    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 2]))
    plot = {"output_type": "display_data", "metadata": {},
            "data": {notebooks.PLOTLY_MIME: fig.to_plotly_json(), "text/html": "<script src='https://cdn.plot.ly'>"}}
    widget = {"output_type": "display_data", "metadata": {},
              "data": {notebooks.WIDGET_MIME: {"model_id": "abc"}, "text/plain": "VBox(children=(...))"}}
    bar = {"output_type": "stream", "name": "stderr", "text": "sft: 10%\rsft: 50%\rsft: 100% done\n"}
    frames = [nbformat.from_dict({"output_type": "stream", "name": "stderr", "text": f"rl: {k}0%"}) for k in range(1, 6)]
    nb = nbformat.v4.new_notebook(metadata={"widgets": {"state": {}}})
    nb.cells = [nbformat.v4.new_code_cell("a", outputs=[nbformat.from_dict(plot), nbformat.from_dict(bar)],
                                          metadata={"execution": {"iopub.status.busy": "x"}}),
                nbformat.v4.new_code_cell("b", outputs=[nbformat.from_dict(widget), nbformat.from_dict(plot)]),
                nbformat.v4.new_code_cell("c", outputs=frames)]   # a bar's frames saved as separate outputs
    tidy = notebooks.tidy(nb)
    assert "widgets" not in tidy.metadata and tidy.cells[0].metadata == {}
    html = [o["data"]["text/html"] for c in tidy.cells for o in c.outputs if "data" in o and "text/html" in o["data"]]
    assert len(html) == 2 and not re.search(r"<script[^>]*src=[^>]*cdn", "".join(html))
    assert len(html[0]) > 1_000_000 > len(html[1])          # plotly.js inline once, in the first figure
    assert tidy.cells[0].outputs[1].text == "sft: 100% done\n"
    assert tidy.cells[1].outputs[0].data == {"text/plain": notebooks.WIDGET_NOTE}
    assert [o.text for o in tidy.cells[2].outputs] == ["rl: 50%"]             # the last frame only
    assert notebooks.render(notebooks.tidy(tidy)) == notebooks.render(tidy)    # idempotent


def test_tidy_notebooks_reaches_a_fixed_point(tmp_path):
    """stdout, a bar's frames saved as separate stderr outputs ending in a bare newline, stdout:
    one pass of `tidy` leaves the newline between the two stdout streams, the next merges them;
    `build-labs` must write what its own `--check` then accepts."""
    out = [nbformat.from_dict({"output_type": "stream", "name": n, "text": t})
           for n, t in (("stdout", "a\n"), ("stderr", "\rbar: 0%"), ("stderr", "\n"), ("stdout", "b\n"))]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x", outputs=out)]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, str(path))
    assert notebooks.tidy_notebooks([str(tmp_path)]) == [str(path)]
    assert notebooks.tidy_notebooks([str(tmp_path)], check=True) == []
    assert [o.text for o in nbformat.read(str(path), as_version=4).cells[0].outputs] == ["a\nb\n"]


def test_committed_notebooks_are_tidy():
    untidy = notebooks.tidy_notebooks([str(ROOT / "course"), str(ROOT / "solutions")], check=True)
    assert untidy == [], f"run `minimopd build-labs` to tidy {untidy}"


@pytest.mark.parametrize("path", EXECUTED + [str(ROOT / "README.md")], ids=lambda p: Path(p).name)
def test_relative_links_point_to_files_that_exist(path):
    if path.endswith(".ipynb"):
        text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    else:
        text = Path(path).read_text()
    for target in re.findall(r"\]\(([^)#\s]+)", text):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (Path(path).parent / target).exists(), f"{Path(path).name} links to a missing {target}"


def test_figures_fit_a_column_and_keep_legends_off_the_data():
    from minimopd.lineage import stages_matrix_figure, timeline_figure
    history = [{"step": i, "loss": 1.0 / (i + 1), "lr": 1e-3, "grad_norm": 1.0, "reward": 0.1 * i} for i in range(5)]
    figs = [plots.history_figure({"a": history, "b": history}, ["loss", "lr", "grad_norm", "reward"]),
            timeline_figure(), stages_matrix_figure()]
    for fig in figs:
        assert fig.layout.width is None, fig.layout.title.text
        assert fig.layout.legend.y is None or fig.layout.legend.y < 0, fig.layout.title.text
    # more than three panels wrap into rows instead of widening the figure
    assert len({a["domain"][0] for k, a in figs[0].layout.to_plotly_json().items() if k.startswith("xaxis")}) == 3


def test_history_against_compute():
    """x="flops": each run's curve is drawn against its own cumulative compute, so runs with
    different costs per step line up at equal compute."""
    cheap = [{"step": i, "accuracy": 0.1 * i, "flops": 1e9 * (i + 1)} for i in range(4)]
    dear = [{"step": i, "accuracy": 0.2 * i, "flops": 3e9 * (i + 1)} for i in range(4)]
    fig = plots.history_figure({"cheap": cheap, "dear": dear}, ["accuracy"], x="flops")
    assert [list(t.x) for t in fig.data] == [[1e9, 2e9, 3e9, 4e9], [3e9, 6e9, 9e9, 12e9]]
    assert "FLOPs" in fig.layout.xaxis.title.text
    assert list(plots.history_figure({"cheap": cheap}, ["accuracy"]).data[0].x) == [0, 1, 2, 3]


def test_knobs_redraw_on_change_only():
    """`plots.knobs`: one control per named argument (list -> dropdown, int pair -> slider, float
    triple -> float slider, bool -> checkbox), started at the function's defaults; the function runs only when a
    knob moves (a non-interactive notebook run never waits on widget output)."""
    import ipywidgets as widgets

    from minimopd.plots import knobs
    calls = []

    def show(domain="sort", n=3, temperature=0.5, other=None, path=True):
        calls.append((domain, n, temperature, path))

    box = knobs(show, domain=["add", "sort"], n=(1, 9), temperature=(0.0, 1.5, 0.1), path=bool)
    controls = [w for row in box.children[:-1] for w in row.children]
    assert [type(w).__name__ for w in controls] == ["Dropdown", "IntSlider", "FloatSlider", "Checkbox"]
    assert [w.value for w in controls] == ["sort", 3, 0.5, True] and calls == []
    controls[1].value = 7
    controls[3].value = False
    assert calls == [("sort", 7, 0.5, True), ("sort", 7, 0.5, False)]
    assert isinstance(box.children[-1], widgets.Output)
    with pytest.raises(TypeError, match="has no argument"):
        knobs(show, colour=["red"])
    with pytest.raises(TypeError, match="is not a control"):
        knobs(show, n="many")
