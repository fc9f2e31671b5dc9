"""Shared fixtures: the project's params, small image folders built per test, the FiftyOne tests' mongod."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image

from curation.browse import database
from curation.io import pid_alive
from schemas.params import Params, load_params

ROOT = Path(__file__).resolve().parents[1]
XSDD = Path(os.environ.get("XSDD_DIR", ROOT.parent / "shared" / "datasets" / "x-sdd" / "X-SDD" / "datas"))

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def params() -> Params:
    return load_params(ROOT / "params.yaml")


def ingested_sample(root: Path, params: Params, *, n_per_class: int, seed: int, size: int):
    """Generated sample images under ``root/sample``, ingested in one process: ``(sample, manifest)``."""
    from curation.ingest import ingest
    from curation.sample_data import generate_sample
    from schemas.params import IngestParams

    sample = generate_sample(root / "sample", n_per_class=n_per_class, seed=seed, size=size)
    result = ingest(sample.images_dir, IngestParams(metadata=None, workers=1), class_names=params.ontology.class_names)
    return sample, result.manifest


def write_image(path: Path, seed: int, size: tuple[int, int] = (64, 48), **save_args) -> Path:
    """Write a distinct random-block image (distinct seeds give far-apart perceptual hashes)."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, size=(size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    pixels = np.kron(cells, np.ones((8, 8, 1), dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **save_args)
    return path


def command_app(name: str, command: Callable[..., None]) -> typer.Typer:
    """A typer app with ``command`` as sub-command ``name``, to invoke as ``curation NAME ...`` would be.

    A second, no-op command keeps typer from folding the only command into the app (it would drop the name).
    """
    app = typer.Typer()
    app.command(name)(command)
    app.command("noop")(lambda: None)
    return app


# ---- FiftyOne (tests/test_browse*.py): one mongod for the whole session ----

_ENV_KEYS = ("FIFTYONE_DATABASE_URI", "FIFTYONE_DATABASE_VALIDATION", "FIFTYONE_MODEL_ZOO_MANIFEST_PATHS")


@dataclass(frozen=True)
class BrowseDb:
    root: Path  # a temp project folder: the browser's db_dir is root/.fiftyone
    db: database.Database


@pytest.fixture(scope="session")
def browse_db() -> Iterator[BrowseDb]:
    """A mongod of our own in a temp folder; FiftyOne points at it for the session, then everything is undone."""
    root = Path(tempfile.mkdtemp(prefix="browse-test-"))
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")  # so the params' db_dir (.fiftyone) is under root
    saved_env = {key: os.environ.get(key) for key in _ENV_KEYS}
    db = database.start(root / ".fiftyone")
    database.use(db)
    import fiftyone as fo

    saved_config = (fo.config.database_uri, fo.config.database_validation, fo.config.model_zoo_manifest_paths)
    try:
        yield BrowseDb(root=root, db=db)
    finally:
        from fiftyone.core.odm import database as odm

        odm._disconnect()
        database.stop(root / ".fiftyone")
        assert not pid_alive(db.pid)
        fo.config.database_uri, fo.config.database_validation, fo.config.model_zoo_manifest_paths = saved_config
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(root, ignore_errors=True)
