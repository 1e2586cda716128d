"""A real browser (headless Debian chromium, driven by playwright) opens what a student opens: the
`minimopd lineage` HTML report, a course chapter and a solution notebook in JupyterLab.

Every plotly figure must have drawn (an SVG of non-zero size), none may be wider than the page
(the JupyterLab window is 1100 px wide with the file browser open), no "Error displaying
widget" may show, and a notebook opened and saved in JupyterLab must be written back unchanged
(a notebook JupyterLab would change opens as modified). Screenshots of each page are written to $MINIMOPD_SCREENSHOTS (default: the
test's tmp dir) and named in the failure message.

Needs `chromium` (Debian package; `.ci/run` installs it) and `playwright` (the test extra)."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium: apt-get install chromium (.ci/run does)")

VIEWPORT = {"width": 1100, "height": 900}
FIGURES = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(el => {
    const svg = el.querySelector('svg.main-svg'); const r = (svg || el).getBoundingClientRect();
    return {svg: !!svg, width: r.width, height: r.height, right: r.right}; })"""


def _check_page(page, name: str, shots: Path, *, min_figures: int, page_width: float) -> None:
    shot = shots / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    figures = page.evaluate(FIGURES)
    text = page.inner_text("body")
    problems = []
    if len(figures) < min_figures:
        problems.append(f"{len(figures)} plotly figures drew, expected at least {min_figures}")
    problems += [f"figure {i} has no SVG or zero size: {f}" for i, f in enumerate(figures)
                 if not f["svg"] or f["width"] <= 0 or f["height"] <= 0]
    problems += [f"figure {i} is {f['width']:.0f} px wide, past the page's {page_width:.0f} px"
                 for i, f in enumerate(figures) if f["right"] > page_width + 1]
    if "Error displaying widget" in text:
        problems.append('the page shows "Error displaying widget"')
    assert not problems, f"{name}: " + "; ".join(problems) + f" (screenshot: {shot})"


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path):
    d = Path(os.environ.get("MINIMOPD_SCREENSHOTS") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_lineage_report_draws_every_figure(browser, shots, tmp_path, monkeypatch):
    from minimopd.cli import main
    monkeypatch.setenv("MINIMOPD_CACHE", str(tmp_path / "cache"))
    assert main(["lineage", "--profile", "smoke", "--recipes", "sft", "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    page = browser.new_page(viewport={"width": 900, "height": 900})
    page.goto((tmp_path / "run" / "report.html").as_uri())
    page.wait_for_selector(".js-plotly-plot svg.main-svg", timeout=30_000)
    _check_page(page, "lineage-report", shots, min_figures=2, page_width=900)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """A JupyterLab server over copies of one chapter and one solution notebook."""
    root = tmp_path_factory.mktemp("lab")
    for nb in ("course/00_lineage.ipynb", "solutions/lab05_grpo.ipynb"):
        shutil.copy(ROOT / nb, root)
    settings = tmp_path_factory.mktemp("settings")   # render every cell (no windowing), no news prompt
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        '{"windowingMode": "none"}')
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false"}')
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
                             "--ServerApp.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
                             f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
                             f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={settings}",
                             "--ServerApp.allow_root=True"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, JUPYTER_PLATFORM_DIRS="1"))
    url = f"http://127.0.0.1:{port}"
    for _ in range(360):    # a loaded 2-core machine can take over a minute to start the server
        try:
            urllib.request.urlopen(url + "/api/status", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("JupyterLab did not start within 180 s")
    yield url, root
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.parametrize("notebook, min_figures", [("00_lineage.ipynb", 2), ("lab05_grpo.ipynb", 1)])
def test_notebooks_render_in_jupyterlab(browser, jupyterlab, shots, notebook, min_figures):
    jupyterlab, jupyterlab_root = jupyterlab
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(f"{jupyterlab}/lab/tree/{notebook}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_timeout(3000)
    selector = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-RenderedPlotly"
    try:   # outputs render progressively after the cells appear: wait for them, then count
        page.wait_for_function(f"n => document.querySelectorAll({selector!r}).length >= n",
                               arg=min_figures, timeout=60_000)
    except playwright.TimeoutError:
        pass   # the count assertion below reports it
    page.wait_for_timeout(2000)     # then save: JupyterLab must write back exactly the committed file
    written = Path(jupyterlab_root) / notebook
    before = written.stat().st_mtime_ns
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").first.click(position={"x": 5, "y": 5})
    page.keyboard.press("Control+s")
    for _ in range(120):            # poll: a loaded machine can take seconds to write it
        if written.stat().st_mtime_ns != before:
            break
        page.wait_for_timeout(500)
    else:
        pytest.fail(f"{notebook}: JupyterLab did not write the notebook within 60 s of Ctrl+S")
    page.wait_for_timeout(500)      # the write may still be in flight: let it finish before reading
    saved = json.loads(written.read_text())
    committed = json.loads(next(ROOT.glob(f"*/{notebook}")).read_text())
    changed = sorted(k for k in set(saved) | set(committed) if saved.get(k) != committed.get(k))
    changed += [f"cell {i}" for i, (a, b) in enumerate(zip(saved.get("cells", []), committed.get("cells", [])))
                if a != b]
    figures = page.locator(selector)
    count = figures.count()
    boxes = []
    for i in range(count):          # each figure shows its saved snapshot; the mouse makes it live
        fig = figures.nth(i)
        fig.evaluate("e => e.scrollIntoView({block: 'center'})")
        if fig.locator("img.plot-img").count():
            fig.locator("img.plot-img").dispatch_event("mouseenter")
        box = None
        for _ in range(120):        # poll: the live graph replaces the snapshot asynchronously
            fig.evaluate("e => e.scrollIntoView({block: 'center'})")
            box = fig.evaluate("""e => { const s = e.querySelector('svg.main-svg');
                if (!s) return null; const r = s.getBoundingClientRect();
                return r.width > 0 ? {x: r.x, width: r.width, height: r.height} : null; }""")
            if box:
                break
            if fig.locator("img.plot-img").count():
                fig.locator("img.plot-img").dispatch_event("mouseenter")
            page.wait_for_timeout(500)
        right = page.evaluate("() => document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)')"
                              ".getBoundingClientRect().right")
        boxes.append((box, right))
    name = notebook.replace(".ipynb", "")
    shot = shots / f"{name}.png"
    page.screenshot(path=str(shot))
    assert count >= min_figures, f"{name}: {count} plotly outputs, expected at least {min_figures}"
    assert not changed, \
        f"{name}: JupyterLab changes the notebook when it opens and saves it: {changed} (run `minimopd build-labs`)"
    for i, (box, right) in enumerate(boxes):   # measured while in view (JupyterLab hides cells out of view)
        assert box and box["width"] > 0 and box["height"] > 0, f"{name}: figure {i} did not draw: {box}"
        assert box["x"] + box["width"] <= min(right, VIEWPORT["width"]) + 1, \
            f"{name}: figure {i} ({box['width']:.0f} px) is wider than the notebook (screenshot: {shot})"
    assert "Error displaying widget" not in page.inner_text("body"), f"{name}: a widget failed ({shot})"
