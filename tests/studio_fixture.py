"""A real Label Studio server for the test session, started from the migrated template (~15 s; building the
template the first time costs 1-2 minutes more), plus helpers that build push inputs.

Import the fixture into a test module with ``from tests.studio_fixture import studio_server  # noqa: F401``
(the fixture's name is ``studio``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from curation.studio.client import Connection, make_client
from curation.studio.server import ServerState, StudioHome, free_port, load_credentials, start_local, stop
from schemas.ontology import Ontology
from schemas.params_studio import LabelStudioParams
from schemas.records import Prediction, columns
from tests.conftest import ROOT, write_image

STUDIO_VENV = ROOT / ".venv-studio"
TEMPLATE_DIR = ROOT / ".cache" / "label-studio-template"


@dataclass
class Studio:
    home: StudioHome
    state: ServerState
    settings: LabelStudioParams
    document_root: Path

    @property
    def token(self) -> str:
        creds = load_credentials(self.home)
        assert creds is not None
        return creds.token

    @property
    def conn(self) -> Connection:
        return Connection(self.state.url, self.token, "local", self.document_root)

    def client(self, retries: int = 2):
        return make_client(self.conn, retries=retries, timeout_s=60)

    def settings_for(self, title: str, **overrides) -> LabelStudioParams:
        return self.settings.model_copy(update={"project_title": title, **overrides})

    def restart(self) -> None:
        stop(self.home)
        self.state = start_local(self.settings)


@pytest.fixture(scope="session", name="studio")
def studio_server(tmp_path_factory) -> Iterator[Studio]:
    if not (STUDIO_VENV / "bin" / "label-studio").exists():
        pytest.skip("run through `make test`, which creates .venv-studio with the Label Studio server")
    root = tmp_path_factory.mktemp("studio")
    document_root = root / "files"
    document_root.mkdir()
    settings = LabelStudioParams(
        home=root / "home",
        template_dir=TEMPLATE_DIR,
        venv=STUDIO_VENV,
        document_root=document_root,
        port=free_port(),  # fixed for the session, so a restart keeps the URL
        batch_size=25,
        retries=1,
    )
    saved = {k: os.environ.pop(k) for k in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY") if k in os.environ}
    home = StudioHome(settings.home)
    try:
        yield Studio(home, start_local(settings), settings, document_root)
    finally:
        stop(home)
        os.environ.update(saved)


def make_inputs(
    folder: Path,
    ontology: Ontology,
    n: int,
    *,
    model_version: str = "clip-test@abc123",
    seed: int = 0,
    image_ids: list[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``n`` small images under ``folder`` and matching manifest (the columns push reads, as ingest writes them)
    and predictions frames (Prediction columns plus ``p_<class>``), with seeded random probabilities."""
    rng = np.random.default_rng(seed)
    classes = ontology.class_names
    manifest_rows, prediction_rows = [], []
    for i in range(n):
        image_id = image_ids[i] if image_ids else f"{seed:04x}{i:012x}"
        path = write_image(folder / f"line {i % 2}" / f"이미지_{i:03d}.png", seed=1000 * seed + i)
        manifest_rows.append(
            {
                "image_id": image_id,
                "path": str(path),
                "rel_path": path.relative_to(folder).as_posix(),
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "width": 64,
                "height": 48,
                "mode": "RGB",
                "format": "PNG",
            }
        )
        probs = rng.dirichlet(np.ones(len(classes)))
        order = np.argsort(probs)[::-1]
        row = {
            "image_id": image_id,
            "label": classes[order[0]],
            "score": float(probs[order[0]]),
            "margin": float(probs[order[0]] - probs[order[1]]),
            "entropy": float(-(probs * np.log(probs)).sum()),
            "top_hard_negative": None,
            "source": "zero_shot",
            "model_name": "tiny-clip",
            "model_version": model_version,
            "caption": f"a metal surface number {i}",
            "caption_score": 0.3,
            "caption_flag": False,
            "description_en": f"A {classes[order[0]]} on a metal surface ({i}).",
            "description_ko": f"금속 표면 {i}",
            **dict.fromkeys(("anomaly_score", "anomaly_defect", "anomaly_reference", "anomaly_map", "regions")),
        }
        row.update({f"p_{c}": float(p) for c, p in zip(classes, probs, strict=True)})
        prediction_rows.append(row)
    predictions = pd.DataFrame(prediction_rows)
    assert set(columns(Prediction)) <= set(predictions.columns)
    return pd.DataFrame(manifest_rows), predictions


def shown_version(version: str) -> str:
    """What Label Studio holds as a zero-shot prediction's ``model_version`` (the rule of push's
    ``prediction_title``, written out here): kind, short model name and the version's SHA-256 tag."""
    model = version.split("@")[0].rsplit("/", 1)[-1]
    return f"zero-shot {model} #{hashlib.sha256(version.encode()).hexdigest()[:8]}"
