"""The sweep report as a user sees it: a real `mlflow server`, the report logged to the sweep's parent run over
HTTP, and headless Chromium opening the run's artifact view. Every figure must load (naturalWidth > 0) inside
MLflow's HTML preview (a sandboxed iframe) and in its Markdown preview, and the screenshots taken here must show
them (pixels, not blank space).

Needs Chromium (Debian: `apt-get install chromium`; .ci/run installs it) and the Python package playwright (the
test extra), which drives that Chromium; `playwright install` is not used (its downloads need the internet).
"""

from __future__ import annotations

import functools
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.sweeps.servers import mlflow_server

from .test_report import make_sweep

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# the network is closed: nothing in the background may try to reach it
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
FIRST_FIGURE = """(() => { const b = document.images[0].getBoundingClientRect();
    return {x: b.x, y: b.y, width: b.width, height: b.height, top: document.scrollingElement.scrollTop,
            href: location.href}; })()"""
GUARD_MS = 600_000  # the failure guard of each wait in the browser: every wait is on a DOM state, not on time

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium; "
                                                ".ci/run installs it); this test opens the report in MLflow's UI"),
]

IMAGES_LOADED = """(n) => {
    const imgs = Array.from(document.images).filter(i => i.src.startsWith(n.prefix));
    return imgs.length === n.count && imgs.every(i => i.complete && i.naturalWidth > 0);
}"""


def _non_blank(png: Path, box: dict | None = None) -> tuple[int, float]:
    """(distinct colours, fraction of pixels that are not near-white) of a screenshot, or of a box of it."""
    from PIL import Image

    img = Image.open(png).convert("RGB")
    if box:
        img = img.crop((int(box["x"]), int(box["y"]), int(box["x"] + box["width"]), int(box["y"] + box["height"])))
    a = np.asarray(img)
    return len(np.unique(a.reshape(-1, 3), axis=0)), float((a.min(axis=2) < 200).mean())


def _assert_figure_drawn(shot: Path, box: dict) -> None:
    """The screenshot shows a drawn figure at box (page coordinates): a figure-sized area with the hundreds of
    colours of anti-aliased lines and text, not a broken-image icon with its alt text, nor blank space."""
    assert box["width"] >= 300 and box["height"] >= 150, box
    from PIL import Image

    width, height = Image.open(shot).size
    inside = box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= width and box["y"] + box["height"] <= height
    assert inside, f"the figure is not inside the screenshot: {box}"
    colours, ink = _non_blank(shot, box)
    assert colours > 200 and ink > 0.01, (shot.name, colours, ink)


def _stable_screenshot(page, shot: Path, show, measure) -> dict:
    """show() brings a figure into view, measure() gives its box in page coordinates; the screenshot counts when
    the box is the same before and after it (else it is taken again), and that box is returned. A re-render of
    MLflow's UI can reload its HTML preview (a new blob: URL, scrolled back to the top) at any moment."""
    for _ in range(10):
        show()
        before = measure()
        page.screenshot(path=str(shot))
        try:
            after = measure()
        except Exception:  # the frame was replaced while the screenshot was taken
            continue
        if after == before:
            return after
    raise AssertionError(f"{shot.name}: the page kept changing under the screenshot")


def _first_figure_in_preview(page, n_figures: int):
    """(show, measure) for the first figure of MLflow's HTML preview: its document scrolls inside the iframe."""
    def frame():
        el = page.wait_for_selector("iframe.mlflow-html-iframe", timeout=GUARD_MS)
        f = el.content_frame()
        f.wait_for_function(IMAGES_LOADED, arg={"prefix": "data:image/png", "count": n_figures}, timeout=GUARD_MS)
        return el, f

    def show():
        frame()[1].evaluate("document.images[0].scrollIntoView({block: 'center'})")

    def measure():
        el, f = frame()
        outer, inner = el.bounding_box(), f.evaluate(FIRST_FIGURE)
        assert inner["top"] > 0, "the preview is not scrolled to the figure"
        assert inner["y"] >= 0 and inner["y"] + inner["height"] <= outer["height"], (
            "the figure is not inside the preview's visible area", inner, outer)
        return {"x": outer["x"] + inner["x"], "y": outer["y"] + inner["y"], "width": inner["width"],
                "height": inner["height"], "href": inner["href"]}

    return show, measure


def test_report_figures_show_in_the_mlflow_artifact_view(tmp_path):
    from playwright.sync_api import sync_playwright

    from analysis.report import build_report
    from sweeps.activations import unit_activations

    with mlflow_server(tmp_path / "server") as url:
        uri, parent, exp = make_sweep(tmp_path, uri=url)
        res = build_report("rep", uri, tmp_path / "out",
                           unit_activations=functools.partial(unit_activations, tracking_uri=uri))
        n_figures = len(re.findall(r"!\[[^\]]*\]\(figures/[^)]+\.png\)", res.markdown.read_text()))
        assert n_figures >= 5
        route = f"{url}/#/experiments/{exp}/runs/{parent}/artifacts/report"
        assert res.where == f"{route}/report.html"  # the address `rims analyze report` prints
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 1000})
            try:
                # report.html: MLflow puts it in a sandboxed iframe loaded from a blob: URL
                page = browser.new_page()
                page.goto(res.where)
                frame = page.wait_for_selector("iframe.mlflow-html-iframe", timeout=GUARD_MS).content_frame()
                frame.wait_for_function(IMAGES_LOADED, arg={"prefix": "data:image/png", "count": n_figures},
                                        timeout=GUARD_MS)
                sizes = frame.evaluate("Array.from(document.images).map(i => [i.naturalWidth, i.naturalHeight])")
                assert len(sizes) == n_figures and all(w > 100 and h > 100 for w, h in sizes), sizes
                shot = tmp_path / "mlflow_report_html.png"
                _assert_figure_drawn(shot, _stable_screenshot(page, shot, *_first_figure_in_preview(page, n_figures)))

                # report.md: MLflow renders Markdown itself and draws only absolute http(s) images
                page = browser.new_page()
                page.goto(f"{route}/report.md")
                page.wait_for_function(IMAGES_LOADED, arg={"prefix": f"{url}/get-artifact", "count": n_figures},
                                       timeout=GUARD_MS)
                figure = page.locator(f"img[src^='{url}/get-artifact']").first
                shot_md = tmp_path / "mlflow_report_md.png"
                _assert_figure_drawn(shot_md, _stable_screenshot(page, shot_md, figure.scroll_into_view_if_needed,
                                                                 figure.bounding_box))
                assert page.get_by_text("](figures/").count() == 0  # no figure left as link text
            finally:
                browser.close()
