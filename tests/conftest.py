"""Shared fixtures: the project's params, and small image folders built per test."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
