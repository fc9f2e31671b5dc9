"""The labeling UI as a reviewer sees it: log in with playwright + Debian's chromium, open a pushed task and check
the screenshot shows the image, the ontology's choices and the model's prediction pre-selected."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from curation.studio.push import build_tasks, push
from curation.studio.server import load_credentials
from tests.chromium import CHROMIUM, FLAGS, MISSING
from tests.studio_fixture import Studio, make_inputs, studio_server  # noqa: F401


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
        "Array.from(document.images).some(i => i.src.includes('/data/local-files/') && i.naturalWidth > 0)",
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
    assert "abc123" in text  # the prediction's model version tab
    assert f"{specs[0].predictions[0]['score'] * 100:.2f}%" in text  # and its score
