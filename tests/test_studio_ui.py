"""The labeling UI as a reviewer sees it: log in with playwright + Debian's chromium, open a pushed task and check
the screenshot shows the image, the ontology's choices and the model's prediction pre-selected."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from curation.studio.config import VIEW_ADJUDICATE, VIEW_UNCERTAIN, ensure_project, wanted_views
from curation.studio.previews import make_previews
from curation.studio.push import push
from curation.studio.server import load_credentials
from curation.studio.tasks import build_tasks
from tests.chromium import CHROMIUM, FLAGS, MISSING
from tests.conftest import write_image
from tests.studio_fixture import Studio, make_inputs, shown_version, studio_server  # noqa: F401

# the editor loads the task image from /data/local-files/ and may show it through a blob: URL of the bytes it fetched
TASK_IMAGE_JS = "i.src.includes('/data/local-files/') || i.src.startsWith('blob:')"


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download)")
    if CHROMIUM is None:
        pytest.skip(MISSING)
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


def test_task_page_shows_image_choices_and_prediction(studio: Studio, params, browser, tmp_path) -> None:
    manifest, predictions = make_inputs(studio.document_root / "ui", params.ontology, 3, seed=7)
    specs = build_tasks(manifest, predictions, ontology=params.ontology, document_root=studio.document_root)
    result = push(
        studio.client(), studio.conn, specs, ontology=params.ontology, settings=studio.settings_for("ui-test")
    )
    task = min(studio.client().tasks.list(project=result.project.id, fields="task_only"), key=lambda t: t.id)
    predicted = specs[0].data["predicted"]
    assert task.data["image_id"] == specs[0].image_id  # the most uncertain image is the first task

    creds = load_credentials(studio.home)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{studio.state.url}/user/login/")
    page.fill("input[name=email]", creds.email)
    page.fill("input[name=password]", creds.password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/user/login" not in url, timeout=30_000)
    page.goto(f"{studio.state.url}/projects/{result.project.id}/data?task={task.id}")
    page.wait_for_selector("input[type=radio]:checked >> nth=1", timeout=60_000)  # view switch + predicted class
    page.wait_for_function(
        f"Array.from(document.images).some(i => ({TASK_IMAGE_JS}) && i.naturalWidth > 0)",
        timeout=60_000,
    )
    shot = tmp_path / "task.png"
    page.screenshot(path=str(shot))
    checked = page.evaluate(
        "Array.from(document.querySelectorAll('input[type=radio]:checked')).map(e => e.closest('label')?.innerText)"
    )
    text = page.inner_text("body")
    page.close()

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 20, "the screenshot is blank or flat"
    assert len(np.unique(pixels)) > 50
    for name in [*params.ontology.class_names, *params.ontology.severity_names]:
        assert name in text, name
    assert any(label and label.startswith(predicted) for label in checked), (predicted, checked)
    title = shown_version("clip-test@abc123")
    assert f"{title[:8]}...{title[-6:]}" in text  # the prediction's tab, as Label Studio abbreviates a long title
    assert f"{specs[0].predictions[0]['score'] * 100:.2f}%" in text  # and its score


SCREENS = Path("/tmp/screens")


def _login(browser, studio: Studio, viewport: dict):
    creds = load_credentials(studio.home)
    page = browser.new_page(viewport=viewport)
    page.goto(f"{studio.state.url}/user/login/")
    page.fill("input[name=email]", creds.email)
    page.fill("input[name=password]", creds.password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/user/login" not in url, timeout=30_000)
    return page


def _tiff_inputs(studio: Studio, params, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``n`` TIFF images (which Chromium cannot draw) with a manifest as ingest writes it."""
    manifest, predictions = make_inputs(studio.document_root / "tiff", params.ontology, n, seed=11)
    rows = []
    for row in manifest.to_dict("records"):
        path = Path(row["path"]).with_suffix(".tif")
        write_image(path, seed=int(row["image_id"], 16) % 10_000, size=(640, 480), compression="tiff_lzw")
        Path(row["path"]).unlink()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        rel_path = str(Path(row["rel_path"]).with_suffix(".tif"))
        size = {"width": 640, "height": 480, "mode": "RGB"}
        rows.append({**row, "path": str(path), "rel_path": rel_path, "sha256": digest, **size})
    frame = pd.DataFrame(rows).assign(format="TIFF")
    return frame, predictions


def test_tiff_task_is_drawn_beside_the_controls_and_tabs_work(studio: Studio, params, browser) -> None:
    manifest, predictions = _tiff_inputs(studio, params, 6)
    previews = make_previews(manifest, studio.document_root / "previews", max_side=512)
    assert len(previews) == 6  # every TIFF gets a preview
    specs = build_tasks(
        manifest, predictions, ontology=params.ontology, document_root=studio.document_root, previews=previews
    )
    client = studio.client()
    result = push(client, studio.conn, specs, ontology=params.ontology, settings=studio.settings_for("ui-tiff"))
    project_id = result.project.id
    tasks = {t.data["image_id"]: t for t in client.tasks.list(project=project_id, fields="task_only")}
    first = tasks[specs[0].image_id]
    views = {(v.data or {}).get("title"): v for v in client.views.list(project=project_id)}
    tab = views[VIEW_UNCERTAIN]
    SCREENS.mkdir(exist_ok=True)

    page = _login(browser, studio, {"width": 1400, "height": 1100})
    # the Data Manager on first open: the native Prediction score column is computed for the managed tab
    with page.expect_response(lambda r: "/api/tasks" in r.url and f"view={tab.id}" in r.url) as listing:
        page.goto(f"{studio.state.url}/projects/{project_id}/data?tab={tab.id}")
    shown = listing.value.json()["tasks"]
    page.wait_for_selector("text=Prediction score", timeout=60_000)
    page.wait_for_timeout(1_000)
    page.screenshot(path=str(SCREENS / "data-manager-first-open.png"))
    scores = {t["data"]["image_id"]: t.get("predictions_score") for t in shown}
    expected = {s.image_id: s.predictions[0]["score"] for s in specs}
    assert scores.keys() == expected.keys()
    assert all(scores[k] == pytest.approx(v) for k, v in expected.items()), scores
    table_text = page.inner_text("body")
    assert f"{specs[0].predictions[0]['score']:.2f}"[:3] in table_text

    # the annotator's view of a TIFF task: the preview is drawn, the controls sit beside it, all above the fold
    page.goto(f"{studio.state.url}/projects/{project_id}/data?tab={tab.id}&task={first.id}")
    page.wait_for_selector("input[type=radio]:checked >> nth=1", timeout=60_000)
    page.wait_for_function(
        f"Array.from(document.images).some(i => ({TASK_IMAGE_JS}) && i.naturalWidth > 0)",
        timeout=60_000,
    )
    page.wait_for_timeout(1_000)
    page.screenshot(path=str(SCREENS / "annotator-tiff-1400x1100.png"))
    image = page.locator("img[src*='/data/local-files/'], img[src^='blob:']").first
    assert image.evaluate("i => i.naturalWidth") == 512  # the preview (640 px capped at 512), not the TIFF
    image_box = image.bounding_box()
    area = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=image_box))).convert("L"), dtype=float)
    assert area.std() > 20 and len(np.unique(area)) > 20, "the image area is blank"
    (described,) = [r for r in specs[0].predictions[0]["result"] if r["from_name"] == "description"]
    english = described["value"]["text"][0].splitlines()[0]
    description = page.get_by_text(english).first.bounding_box()  # the pre-filled text, shown as an editable item
    assert description["x"] >= image_box["x"] + image_box["width"]  # beside the image, not below it
    assert description["y"] + description["height"] <= 1100  # above the fold
    confidence = page.locator("input[type=number]").first.input_value()
    assert confidence == str(round(100 * specs[0].predictions[0]["score"]))

    # a numeric filter on margin, as the UI saves it, keeps the tasks below the threshold
    margins = sorted(s.data["margin"] for s in specs)
    threshold = round((margins[2] + margins[3]) / 2, 6)
    below = {s.image_id for s in specs if s.data["margin"] < threshold}
    item = {"filter": "filter:tasks:data.margin", "operator": "less", "type": "Number", "value": threshold}
    data = {**tab.data, "filters": {"conjunction": "and", "items": [item]}}
    client.views.update(id=tab.id, project=project_id, data=data)
    with page.expect_response(lambda r: "/api/tasks" in r.url and f"view={tab.id}" in r.url) as filtered:
        page.goto(f"{studio.state.url}/projects/{project_id}/data?tab={tab.id}")
    page.wait_for_selector("text=Prediction score", timeout=60_000)
    page.wait_for_timeout(1_000)
    page.screenshot(path=str(SCREENS / "data-manager-margin-filter.png"))
    answer = filtered.value.json()
    page.close()
    kept = [t["data"]["image_id"] for t in answer["tasks"]]
    assert set(kept) == below and len(below) == 3
    kept_margins = [t["data"]["margin"] for t in answer["tasks"]]
    assert kept_margins == sorted(kept_margins)  # ordered by margin as numbers


def test_tabs_of_an_older_push_get_column_settings_and_saved_tabs_are_kept(studio: Studio, params) -> None:
    client = studio.client()
    settings = studio.settings_for("ui-old-tabs")
    project = ensure_project(client, studio.conn, params.ontology, settings)
    views = {(v.data or {}).get("title"): v for v in client.views.list(project=project.id)}
    assert views.keys() == wanted_views().keys()
    old = views[VIEW_UNCERTAIN]
    client.views.update(
        id=old.id, project=project.id, data={"title": VIEW_UNCERTAIN, "ordering": ["tasks:data.margin"]}
    )  # what push wrote before tabs carried column settings
    people = views[VIEW_ADJUDICATE]
    customised = {**people.data, "hiddenColumns": {"explore": ["tasks:annotators"], "labeling": []}}
    client.views.update(id=people.id, project=project.id, data=customised)  # re-saved in the UI

    ensure_project(client, studio.conn, params.ontology, settings)
    after = {(v.data or {}).get("title"): v.data for v in client.views.list(project=project.id)}
    assert after[VIEW_UNCERTAIN]["columnsDisplayType"] == wanted_views()[VIEW_UNCERTAIN]["columnsDisplayType"]
    assert after[VIEW_UNCERTAIN]["hiddenColumns"] == wanted_views()[VIEW_UNCERTAIN]["hiddenColumns"]
    assert after[VIEW_ADJUDICATE]["hiddenColumns"] == {"explore": ["tasks:annotators"], "labeling": []}


def test_prior_polygon_lands_on_the_same_spot_of_a_smaller_preview(studio: Studio, params, browser) -> None:
    """A grey 16-bit TIFF (previewed at half size) with a prior polygon: the outline Label Studio draws over the
    preview sits where the polygon is in the original (pre-annotations are in percent of the image)."""
    folder = studio.document_root / "polygon"
    folder.mkdir()
    path = folder / "grey.tif"
    texture = np.random.default_rng(0).integers(29_000, 31_000, size=(400, 600)).astype(np.uint16)
    Image.fromarray(texture).save(path)  # grey with some texture once stretched to 8 bits
    image_id = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    manifest = pd.DataFrame(
        [
            {
                "image_id": image_id,
                "path": str(path),
                "rel_path": "grey.tif",
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "width": 600,
                "height": 400,
                "mode": "I;16",
                "format": "TIFF",
            }
        ]
    )
    _, predictions = make_inputs(studio.document_root / "polygon-unused", params.ontology, 1, image_ids=[image_id])
    square = [300.0, 100.0, 450.0, 100.0, 450.0, 300.0, 300.0, 300.0]  # x 50-75 %, y 25-75 % of the original
    prior = pd.DataFrame({"image_id": [image_id], "label": ["dent"], "polygons": [json.dumps([square])]})
    previews = make_previews(manifest, studio.document_root / "previews", max_side=300)
    specs = build_tasks(
        manifest,
        predictions,
        ontology=params.ontology,
        document_root=studio.document_root,
        prior=prior,
        previews=previews,
    )
    settings = studio.settings_for("ui-polygon", boxes=True)
    client = studio.client()
    result = push(client, studio.conn, specs, ontology=params.ontology, settings=settings)
    (task,) = client.tasks.list(project=result.project.id, fields="task_only")

    page = _login(browser, studio, {"width": 1400, "height": 1100})
    page.goto(f"{studio.state.url}/projects/{result.project.id}/data?task={task.id}")
    page.wait_for_function(
        f"Array.from(document.images).some(i => ({TASK_IMAGE_JS}) && i.naturalWidth === 300)", timeout=60_000
    )
    page.wait_for_timeout(1_500)
    page.screenshot(path=str(SCREENS / "annotator-polygon-on-preview.png"))
    box = page.locator("img[src*='/data/local-files/'], img[src^='blob:']").first.bounding_box()
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=box))).convert("RGB"), dtype=int)
    page.close()
    coloured = (shot.max(axis=2) - shot.min(axis=2)) > 60  # the outline and fill; the image itself is grey
    rows, cols = np.nonzero(coloured)
    assert len(rows) > 100, "no polygon drawn over the image"
    height, width = coloured.shape
    assert cols.min() / width == pytest.approx(0.50, abs=0.02) and cols.max() / width == pytest.approx(0.75, abs=0.02)
    assert rows.min() / height == pytest.approx(0.25, abs=0.02) and rows.max() / height == pytest.approx(0.75, abs=0.02)
