"""`make plots` (plots/show.sh) writes a page that draws its chart in headless Chromium with no network."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")  # Debian's package: `apt-get install chromium`, no browser download
CHROMIUM_FLAGS = [  # with --headless, which Playwright adds, and a fresh --user-data-dir (its first argument)
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture
def project(tmp_path) -> Path:
    """A throwaway git + DVC repository whose dvc.yaml declares one loss curve."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
    }
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True, env=env)
    curve = [{"step": step, "loss": 1 + 3 * math.exp(-step / 40)} for step in range(0, 300, 10)]
    (tmp_path / "loss.json").write_text(json.dumps({"loss": curve}))
    (tmp_path / "dvc.yaml").write_text("plots:\n  - loss.json:\n      x: step\n      y: loss\n")
    subprocess.run([REPO / "plots" / "show.sh"], cwd=tmp_path, check=True, env=env, capture_output=True)
    return tmp_path


def test_page_names_no_remote_script(project):
    page = (project / "dvc_plots" / "index.html").read_text()
    assert "cdn." not in page and '<script src="http' not in page
    vendor = project / "dvc_plots" / "vendor"
    assert (vendor / "vega.min.js").is_file() and (vendor / "LICENSE.vega").is_file()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")
def test_page_draws_the_curve_offline(project, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    remote_requests, errors = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 900, "height": 600},
        )
        page = browser.new_page()
        # No network: any request that is not a local file fails, and is recorded.
        page.route(
            "**/*",
            lambda route: (
                route.continue_()
                if route.request.url.startswith("file://")
                else (remote_requests.append(route.request.url), route.abort())
            ),
        )
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((project / "dvc_plots" / "index.html").as_uri())
        page.wait_for_selector("canvas.marks", timeout=15_000)  # vega-embed draws on a canvas by default
        page.wait_for_function("() => document.querySelector('canvas.marks').clientHeight > 100")
        if os.environ.get("PLOTS_SCREENSHOT"):  # to look at the page: PLOTS_SCREENSHOT=/tmp/plots.png
            page.screenshot(path=os.environ["PLOTS_SCREENSHOT"])
        # Axes, grid and text are grey or black; the curve (and its legend symbol) is the only colour.
        coloured_pixels = page.evaluate(
            """() => {
                const canvas = document.querySelector('canvas.marks');
                const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
                let n = 0;
                for (let i = 0; i < data.length; i += 4) {
                    const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
                    if (Math.max(r, g, b) - Math.min(r, g, b) > 60) n++;
                }
                return n;
            }"""
        )
        browser.close()
    assert errors == []
    assert remote_requests == []
    assert coloured_pixels > 500  # the curve itself: a blank chart has none, the legend symbol alone ~100
