"""Single-source labs: `solutions/labNN_*.ipynb` -> the student version `labs/labNN_*.ipynb`.

Each lab is written once, complete, with nbgrader metadata and markers:

    ### BEGIN SOLUTION            (in solution cells: the student writes this part)
    ### END SOLUTION
    ### BEGIN HIDDEN TESTS        (in test cells: only the autograder runs these)
    ### END HIDDEN TESTS

`build_lab` runs nbgrader's own preprocessors as a library, in the order nbgrader's
`generate_assignment` uses them: LockCells (test cells read-only, graded cells undeletable),
ClearSolutions (each solution region -> `# YOUR CODE HERE` / `raise NotImplementedError()`),
ClearHiddenTests, ClearOutput, then CheckCellMetadata validates the nbgrader metadata. Execution
counts, run-dependent cell metadata and notebook metadata (widget state, Python version) are
dropped, so the student notebook depends on the source's text only and is byte-for-byte
reproducible: CI runs `minimopd build-labs --check` and fails when `labs/` is stale.
The nbgrader cell metadata is kept, so instructors can still use nbgrader on either version.

The executed notebooks (`course/`, `solutions/`: their saved outputs are what a reader sees) are
tidied by the same command (`tidy`): plotly.js embedded once per notebook so the figures draw
offline and in `jupyter nbconvert --to html`; widget outputs replaced by a line saying to run the
cell (a saved widget has no model to show: "Error displaying widget: model not found"); progress
bars' carriage-return frames collapsed to their last state; per-run cell metadata dropped; and
each figure gets a static PNG snapshot (when kaleido and a Chromium are installed): JupyterLab's
plotly renderer shows the snapshot until the mouse enters the figure, instead of writing a PNG
into the notebook on open, which marked every notebook as modified.
`--check` fails when a committed notebook is not tidy.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from typing import Optional

import nbformat

# Cell metadata that belongs to the lab itself; anything else (timings, scroll state, ...) is
# an artefact of whoever last ran the source notebook and is dropped.
CELL_METADATA_KEEP = ("nbgrader", "tags", "deletable", "editable")
EXECUTED_DIRS = ("course", "solutions")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_NOTE = "[interactive controls: run this cell in Jupyter to use them; the output above is static]"
PNG_WIDTH = 800    # px: the static snapshot of a figure, as wide as a notebook column
DEFAULT_KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def _preprocessors() -> list:
    from nbgrader.preprocessors import (CheckCellMetadata, ClearHiddenTests, ClearOutput,
                                        ClearSolutions, LockCells)
    from traitlets.config import Config

    cfg = Config()
    # Solution / hidden-test regions must sit in cells marked as such: nbgrader needs their
    # grade_id, and an unmarked region is almost certainly a mistake that would leak an answer.
    cfg.ClearSolutions.enforce_metadata = True
    cfg.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
    cfg.ClearHiddenTests.enforce_metadata = True
    return [LockCells(config=cfg), ClearSolutions(config=cfg), ClearHiddenTests(config=cfg),
            ClearOutput(config=cfg), CheckCellMetadata(config=cfg)]


def build_lab(src_path: str) -> nbformat.NotebookNode:
    """The student version of the solution notebook `src_path` (nothing is written)."""
    nb = nbformat.read(src_path, as_version=4)
    resources: dict = {}
    for pre in _preprocessors():
        nb, resources = pre.preprocess(nb, resources)
    nb.metadata = nbformat.from_dict({
        "kernelspec": dict(DEFAULT_KERNELSPEC),
        "language_info": {"name": "python"},
    })
    for cell in nb.cells:
        cell.metadata = nbformat.from_dict({k: cell.metadata[k] for k in CELL_METADATA_KEEP
                                            if k in cell.metadata})
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


def _collapse_cr(text: str) -> str:
    """What a terminal shows of text with carriage returns: per line, the part after the last one."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def _plotly_html(figure: dict, *, with_js: bool, div_id: str) -> str:
    import plotly.graph_objects as go
    import plotly.io as pio

    fig = go.Figure(figure, skip_invalid=True)
    return pio.to_html(fig, include_plotlyjs=with_js, full_html=False, default_width="100%",
                       config={"responsive": True}, div_id=div_id)


def _plotly_bootstrap(data: dict) -> bool:
    """The output plotly's notebook renderer emits once to load plotly.js (no figure in it)."""
    html = data.get("text/html", "")
    html = "".join(html) if isinstance(html, list) else html
    return PLOTLY_MIME not in data and "window.PlotlyConfig" in html and "Plotly.newPlot" not in html


def _png(figure: dict) -> Optional[str]:
    """A static PNG (base64) of a figure at the width of a notebook column, if plotly can render
    one here (kaleido and a Chromium installed); else None."""
    try:
        import base64

        import plotly.graph_objects as go
        fig = go.Figure(figure, skip_invalid=True)
        png = fig.to_image(format="png", width=PNG_WIDTH, height=int(fig.layout.height or 450), scale=1)
        return base64.b64encode(png).decode()
    except Exception:  # noqa: BLE001 - no kaleido / no browser: the figure keeps its other forms
        return None


def tidy(nb: nbformat.NotebookNode, *, snapshots: bool = True) -> nbformat.NotebookNode:
    """An executed notebook made to render everywhere (see the module docstring); idempotent."""
    nb = nbformat.from_dict(nb)
    nb.metadata.pop("widgets", None)
    # the kernel every notebook runs on, named as JupyterLab names it when the kernel starts (a
    # notebook saved by nbconvert says "Python 3" and would open as modified)
    nb.metadata["kernelspec"] = nbformat.from_dict(DEFAULT_KERNELSPEC)
    first_plot = True
    for c, cell in enumerate(nb.cells):
        cell.metadata = nbformat.from_dict({k: cell.metadata[k] for k in CELL_METADATA_KEEP
                                            if k in cell.metadata})
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.outputs:
            data = out.get("data", {})
            if out.get("output_type") == "stream":
                prev = outputs[-1] if outputs else None
                if prev is not None and prev.get("output_type") == "stream" and prev.name == out.name:
                    # one stream: a progress bar's frames arrive as outputs without a newline,
                    # each one replacing the unfinished last line before it (a terminal's \r)
                    prev.text = _collapse_cr(prev.text[: prev.text.rfind("\n") + 1] + out.text)
                    continue
                out.text = _collapse_cr(out.text)
                if not out.text.strip():
                    continue
            elif _plotly_bootstrap(data):
                continue       # the renderer's own copy of plotly.js: the first figure carries it
            elif WIDGET_MIME in data:
                out = nbformat.v4.new_output("display_data", data={"text/plain": WIDGET_NOTE})
            elif PLOTLY_MIME in data:
                data["text/html"] = _plotly_html(data[PLOTLY_MIME], with_js=first_plot, div_id=f"figure-{c}-{len(outputs)}")
                first_plot = False
                if snapshots and "image/png" not in data and (png := _png(data[PLOTLY_MIME])):
                    data["image/png"] = png
            outputs.append(out)
        cell.outputs = outputs
    return nb


def tidy_notebooks(dirs=EXECUTED_DIRS, *, check: bool = False) -> list[str]:
    # `minimopd build-labs` tidies its --src folder and the `course` folder beside it
    """Tidy every notebook in `dirs` in place; with `check`, write nothing and return the untidy ones."""
    out = []
    for path in sorted(p for d in dirs for p in glob.glob(os.path.join(d, "*.ipynb"))):
        with open(path, encoding="utf-8") as f:
            current = f.read()
        text = current
        for _ in range(4):   # to a fixed point: merging the streams around a dropped empty one can merge more
            again = render(tidy(nbformat.reads(text, as_version=4)))
            if again == text:
                break
            text = again
        if text != current:
            out.append(path)
            if not check:
                with open(path, "w", encoding="utf-8", newline="\n") as f:
                    f.write(text)
    return out


def render(nb: nbformat.NotebookNode) -> str:
    """The exact text written to disk (nbformat's JSON layout plus a final newline)."""
    return nbformat.writes(nb) + "\n"


def _pairs(src_dir: str, dst_dir: str) -> list[tuple[str, str]]:
    if not os.path.isdir(src_dir):
        raise FileNotFoundError(f"no lab sources in {src_dir!r} (run from the repository root, "
                                "or pass the solutions folder)")
    return [(src, os.path.join(dst_dir, os.path.basename(src)))
            for src in sorted(glob.glob(os.path.join(src_dir, "lab*.ipynb")))]


def build_labs(src_dir: str = "solutions", dst_dir: str = "labs", *, check: bool = False) -> list[str]:
    """Regenerate `dst_dir/labNN_*.ipynb` from every `src_dir/labNN_*.ipynb`.

    Returns the student notebooks written (only those whose content changed are touched on
    disk), or with `check=True` writes nothing and returns those that are missing or stale.
    """
    out = []
    for src, dst in _pairs(src_dir, dst_dir):
        text = render(build_lab(src))
        current = None
        if os.path.exists(dst):
            with open(dst, encoding="utf-8") as f:
                current = f.read()
        if check:
            if current != text:
                out.append(dst)
            continue
        if current != text:
            os.makedirs(dst_dir, exist_ok=True)
            with open(dst, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
        out.append(dst)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    """`minimopd build-labs [--check]`: 0 when labs/ is (now) up to date, 1 when stale (--check)."""
    parser = argparse.ArgumentParser(prog="minimopd build-labs",
                                     description="Generate the student labs from solutions/.")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if labs/ is missing or out of date")
    parser.add_argument("--src", default="solutions", help="folder of lab sources (default: solutions)")
    parser.add_argument("--dst", default="labs", help="folder of student labs (default: labs)")
    args = parser.parse_args(argv)
    try:
        course = os.path.join(os.path.dirname(os.path.abspath(args.src)), "course")
        untidy = tidy_notebooks([d for d in (args.src, course) if os.path.isdir(d)], check=args.check)
        paths = build_labs(args.src, args.dst, check=args.check)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"minimopd build-labs: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if untidy:
            print("these executed notebooks are not tidy (CDN plotly, saved widgets, per-run metadata):\n"
                  + "\n".join(f"  {p}" for p in untidy) + "\nrun `minimopd build-labs` to tidy them",
                  file=sys.stderr)
        if paths:
            print("these student labs are stale or missing:\n" + "\n".join(f"  {p}" for p in paths)
                  + "\nrun `minimopd build-labs` to regenerate them from solutions/", file=sys.stderr)
        if untidy or paths:
            return 1
        print(f"{args.dst}/ is up to date ({len(_pairs(args.src, args.dst))} labs); notebooks are tidy")
        return 0
    for p in untidy:
        print(f"tidied {p}")
    for p in paths:
        print(f"built {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
