"""`dvc plots show` renders every plot of dvc.yaml without a network (Debian chromium, every request blocked).

The project's ``.dvc/config`` points ``plots.html_template`` at ``vendor/vega/dvc_plots.html``, which carries
Vega, Vega-Lite and Vega-Embed inline. The control case renders the same plots with DVC's own page (libraries
from a CDN) and must show none, so the check can tell the two apart.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.chromium import CHROMIUM, FLAGS, MISSING

ROOT = Path(__file__).resolve().parent.parent
OFFLINE = ["--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]
CLASSES = ["scratch", "dent", "ok"]


def _plot_data(name: str, props: dict) -> pd.DataFrame:
    """Rows with the fields each plot definition names (and the split / annotator columns its template uses)."""
    x, y = props["x"], props["y"]
    if props.get("template") == "confusion":
        pairs = [(a, b) for a in CLASSES for b in CLASSES]
        return pd.DataFrame({x: [a for a, _ in pairs], y: [b for _, b in pairs], "annotator": "alice"})
    if name.endswith("class_counts.csv"):
        rows = [(c, s, n) for n, (c, s) in enumerate((c, s) for c in CLASSES for s in ("train", "val", "test"))]
        return pd.DataFrame(rows, columns=[y, "split", x])
    return pd.DataFrame({x: [0.1, 0.5, 0.9], y: [3, 5, 2]})


def _project(tmp_path: Path) -> tuple[Path, int]:
    """A DVC project with this repo's dvc.yaml, params.yaml, .dvc/config, templates and vendored page, and data."""
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=project, check=True)
    shutil.copy(ROOT / "dvc.yaml", project / "dvc.yaml")
    shutil.copy(ROOT / "params.yaml", project / "params.yaml")
    shutil.copy(ROOT / ".dvc" / "config", project / ".dvc" / "config")
    shutil.copytree(ROOT / ".dvc" / "plots", project / ".dvc" / "plots")
    shutil.copytree(ROOT / "vendor", project / "vendor")
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    for entry in plots:
        ((name, props),) = entry.items()
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        _plot_data(name, props).to_csv(path, index=False)
    return project, len(plots)


def _show(project: Path, name: str, *extra: str) -> Path:
    out = project / name
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "show", "-o", str(out), *extra],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return out / "index.html"


def _rendered(page_file: Path) -> tuple[int, int, list[str], list[str]]:
    """(plot divs, those holding a drawn canvas or svg, network requests attempted, "no data" notes shown) with the
    network blocked."""
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    ids = re.findall(r'<div id = "([^"]+)">', page_file.read_text(encoding="utf-8"))  # dvc-render's plot divs
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*FLAGS, *OFFLINE])
        page = browser.new_page()
        page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
        page.route("http*://**/*", lambda route: route.abort())
        page.goto(page_file.as_uri())
        page.wait_for_timeout(3000)  # vega draws asynchronously; a CDN page never will
        drawn = page.evaluate(
            """(ids) => ids.filter(id => [...document.getElementById(id).querySelectorAll('canvas, svg')]
                .some(e => e.getBoundingClientRect().width > 50 && e.getBoundingClientRect().height > 50)).length""",
            ids,
        )
        notes = page.eval_on_selector_all(".dvc-no-data", "nodes => nodes.map(n => n.textContent)")
        browser.close()
    return len(ids), drawn, requests, notes


@pytest.mark.skipif(CHROMIUM is None, reason=MISSING)
def test_every_dvc_plot_renders_offline(tmp_path: Path) -> None:
    pytest.importorskip("playwright.sync_api", reason="playwright missing: pip install -e '.[dev]'")
    project, n_plots = _project(tmp_path)
    divs, drawn, requests, notes = _rendered(_show(project, "all"))
    assert divs == n_plots and drawn == n_plots, (divs, drawn, n_plots)
    assert requests == [] and notes == []

    # a stage that had nothing to draw wrote no file: the page says so in place of an empty chart
    (project / "data" / "agreement" / "calibration.csv").unlink()
    divs, drawn, requests, notes = _rendered(_show(project, "one_missing"))
    assert divs == n_plots and drawn == n_plots - 1 and requests == []
    assert notes == [
        "data_agreement_calibration_csv: no data. The stage wrote no rows for this plot; its notes and report say why."
    ]

    # control: DVC's own page (libraries from the CDN) draws nothing here, and tried the network
    from dvc_render.html import PAGE_HTML

    (project / "cdn.html").write_text(PAGE_HTML)
    divs, drawn, requests, _ = _rendered(_show(project, "cdn", "--html-template", str(project / "cdn.html")))
    assert divs == n_plots and drawn == 0
    assert any("vega" in url for url in requests)


def test_class_balance_colours_by_split() -> None:
    template = (ROOT / ".dvc" / "plots" / "class_balance.json").read_text()
    spec = yaml.safe_load(template)
    assert spec["encoding"]["color"]["field"] == "split" and spec["encoding"]["yOffset"]["field"] == "split"
    plots = {next(iter(e)): next(iter(e.values())) for e in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]}
    assert plots["data/split/class_counts.csv"]["template"] == "class_balance"
    assert "data/refine/confidence_histogram.csv" in plots
