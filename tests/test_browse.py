"""FiftyOne browser: fields, counts and saved views match the pipeline outputs; similarity, search, mistakenness.

One mongod per test session in a temp folder (started and stopped by PID), one dataset built through the CLI from
sample images + ingest + synthetic stage outputs written here. The App test launches `curation browse` and takes a
screenshot with headless chromium: its images are saturated magenta, a colour the App's own UI does not use, so
magenta pixels in the screenshot can only come from rendered sample thumbnails (not a blank or error page).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from curation.browse import database
from curation.browse.build import build_dataset
from curation.browse.cli import database_command, fiftyone_command, search_command
from curation.browse.errors import BrowseInputError
from curation.browse.inputs import BrowseInputs, check_inputs, read_inputs
from curation.io import pid_alive
from schemas.params import Params
from schemas.params_browse import BrowseParams
from tests.chromium import CHROMIUM, FLAGS, HEADLESS, MISSING
from tests.conftest import ROOT, BrowseDb

SEED = 7
SPLITS = ("train", "val", "test")
ANNOTATORS = ("ann1@example.com", "ann2@example.com", "ann3@example.com")


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("fiftyone")(fiftyone_command)
    app.command("search")(search_command)
    app.command("fiftyone-db")(database_command)
    return app


@dataclass(frozen=True)
class Pipeline:
    root: Path
    inputs: dict[str, Path]
    frames: dict[str, pd.DataFrame]
    classes: list[str]
    clip: Path
    summary: dict
    out_dir: Path


def _stage_frames(manifest: pd.DataFrame, classes: list[str], clip: Path) -> dict[str, pd.DataFrame]:
    """Synthetic outputs of prelabel, pull, agreement, split and augment for the manifest's images (seeded)."""
    rng = np.random.default_rng(SEED)
    ids = manifest["image_id"].tolist()
    n = len(ids)
    probabilities = rng.dirichlet(np.full(len(classes), 0.4), size=n)
    probabilities[: n // 3] = rng.dirichlet(np.full(len(classes), 5.0), size=n // 3)  # some low-confidence ones
    confident = slice(n // 3, n // 3 + 3)  # confident pre-labels the consensus contradicts: likely label errors
    probabilities[confident] = 0.01
    probabilities[confident, 0] = 1 - 0.01 * (len(classes) - 1)
    top = probabilities.argmax(axis=1)
    sorted_p = np.sort(probabilities, axis=1)
    predictions = pd.DataFrame(
        {
            "image_id": ids,
            "label": [classes[i] for i in top],
            "score": probabilities.max(axis=1),
            "margin": sorted_p[:, -1] - sorted_p[:, -2],
            "entropy": -(probabilities * np.log(probabilities)).sum(axis=1),
            "top_hard_negative": None,
            "source": "zero_shot",
            "model_name": str(clip),
            "model_version": "tiny-clip@test",
            "caption": [f"a photo of {classes[i]} number {k}" for k, i in enumerate(top)],
            "caption_score": rng.uniform(0.1, 0.4, n),
            "caption_flag": rng.uniform(size=n) < 0.2,
            "description_en": [f"{classes[i]} on a metal part" for i in top],
            "description_ko": [f"금속 부품의 결함 {k}" for k in range(n)],
        }
    )
    for index, name in enumerate(classes):
        predictions[f"p_{name}"] = probabilities[:, index]
    embeddings = rng.normal(size=(n, 16)).astype(np.float32)  # the tiny CLIP's projection size
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    rows = []
    for image_id in ids:
        for annotator in ANNOTATORS[: int(rng.integers(1, 4))]:
            box = None
            if rng.uniform() < 0.3:
                box = json.dumps([{"x": 10, "y": 20, "w": 30, "h": 40, "label": classes[0]}])
            rows.append({"image_id": image_id, "annotator": annotator, "label": str(rng.choice(classes)), "boxes": box})
    annotations = pd.DataFrame(rows)
    agreement = rng.choice([1.0, 2 / 3, 0.5, 1 / 3], size=n)
    single = np.arange(n) >= n - 3  # one reviewer: agreement not measured (null), never in the low-agreement view
    agreement[single] = np.nan
    consensus_labels = [classes[t] if rng.uniform() < 0.6 else str(rng.choice(classes)) for t in top]
    consensus_labels[confident] = [classes[1]] * 3
    consensus_labels[0] = None  # an unresolved tie: no ground truth
    consensus = pd.DataFrame(
        {
            "image_id": ids,
            "label": consensus_labels,
            "severity": None,
            "agreement": agreement,
            "n_annotators": np.where(single, 1, 2),
            "method": np.where(single, "single", "majority"),
            "disputed": agreement < 0.6,
        }
    )
    split_of_group = {g: SPLITS[i % 3] for i, g in enumerate(sorted(set(manifest["dup_group"])))}
    splits = pd.DataFrame({"image_id": ids, "split": manifest["dup_group"].map(split_of_group)})
    leak = manifest.index[manifest["dup_group_size"] > 1]
    if len(leak):  # one near-duplicate put in another split than its group: a leak the view must show
        splits.loc[leak[0], "split"] = "test" if splits.loc[leak[0], "split"] != "test" else "train"
    augmented = pd.DataFrame(
        {
            "image_id": [f"aug-{k:04d}" for k in range(4)],
            "source_image_id": ids[1:3] * 2,
            "path": manifest["path"].iloc[[1, 2, 1, 2]].tolist(),
            "transform": ["hflip", "hflip", "rotate", "rotate"],
        }
    )
    return {
        "manifest": manifest,
        "predictions": predictions,
        "embeddings": pd.DataFrame({"image_id": ids, "embedding": list(embeddings)}),
        "annotations": annotations,
        "consensus": consensus,
        "splits": splits,
        "augmented": augmented,
    }


@pytest.fixture(scope="session")
def pipeline(browse_db: BrowseDb, params: Params) -> Pipeline:
    from curation.ingest import ingest
    from curation.sample_data import generate_sample
    from tests.tiny_models import build_clip

    root = browse_db.root
    sample = generate_sample(root / "sample", n_per_class=3, seed=SEED, size=64)
    settings = params.ingest.model_copy(update={"metadata": sample.metadata_csv, "workers": 1})
    manifest = ingest(sample.images_dir, settings, class_names=params.ontology.class_names).manifest
    clip = build_clip(root / "clip")
    classes = params.ontology.class_names
    frames = _stage_frames(manifest, classes, clip)
    inputs = {}
    for name, frame in frames.items():
        inputs[name] = root / "in" / f"{name}.parquet"
        inputs[name].parent.mkdir(exist_ok=True)
        frame.to_parquet(inputs[name], index=False)
    out_dir = root / "out"
    args = ["fiftyone", str(out_dir), "--version", "t1", "--params", str(root / "params.yaml")]
    for name, path in inputs.items():
        args += [f"--{name}", str(path)]
    cwd = Path.cwd()
    os.chdir(root)  # the CLI's db_dir (.fiftyone) is relative to the project folder: here, the fixture's mongod
    try:
        result = CliRunner().invoke(_cli(), args)
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    summary = json.loads((out_dir / "fiftyone.json").read_text(encoding="utf-8"))
    return Pipeline(root, inputs, frames, classes, clip, summary, out_dir)


@pytest.fixture(scope="session")
def dataset(pipeline: Pipeline):
    import fiftyone as fo

    return fo.load_dataset(pipeline.summary["dataset"])


def _by_image(dataset) -> dict[str, object]:
    return {s["image_id"]: s for s in dataset.match({"is_augmented": False})}


def test_database_start_status_stop_by_pid(tmp_path: Path) -> None:
    root = tmp_path / ".fiftyone"
    assert database.status(root) is None
    first = database.start(root)
    try:
        assert database.status(root) == first
        assert database.start(root) == first  # already running: reused, not a second server
        assert first.uri == f"mongodb://127.0.0.1:{first.port}"
    finally:
        assert database.stop(root) is True
    assert not pid_alive(first.pid)
    assert database.status(root) is None
    assert database.stop(root) is False


def test_database_command_reports_status(browse_db: BrowseDb, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(browse_db.root)
    result = CliRunner().invoke(_cli(), ["fiftyone-db", "status", "--params", str(browse_db.root / "params.yaml")])
    assert result.exit_code == 0, result.output
    assert f"pid {browse_db.db.pid}" in result.output


def test_samples_carry_every_stage_output(pipeline: Pipeline, dataset) -> None:
    frames = pipeline.frames
    manifest = frames["manifest"]
    assert pipeline.summary["n_images"] == len(manifest)
    assert pipeline.summary["n_augmented"] == len(frames["augmented"])
    assert len(dataset) == len(manifest) + len(frames["augmented"])
    samples = _by_image(dataset)
    assert set(samples) == set(manifest["image_id"])
    logit_classes = dataset.info["logit_classes"]
    assert logit_classes == pipeline.classes
    predictions = frames["predictions"].set_index("image_id")
    consensus = frames["consensus"].set_index("image_id")
    splits = frames["splits"].set_index("image_id")["split"]
    embeddings = frames["embeddings"].set_index("image_id")["embedding"]
    annotations = frames["annotations"]
    for row in manifest.itertuples(index=False):
        sample = samples[row.image_id]
        assert Path(sample.filepath) == Path(row.path)
        assert (sample.metadata.width, sample.metadata.height) == (row.width, row.height)
        assert sample["dup_group"] == row.dup_group
        assert sample["meta_camera"] == (None if pd.isna(row.meta_camera) else row.meta_camera)
        prediction = predictions.loc[row.image_id]
        assert sample["prelabel"].label == prediction["label"]
        assert sample["prelabel"].confidence == pytest.approx(prediction["score"])
        logits = np.asarray(sample["prelabel"].logits)
        softmax = np.exp(logits) / np.exp(logits).sum()
        assert softmax == pytest.approx([prediction[f"p_{c}"] for c in logit_classes], abs=1e-9)
        assert sample["description_ko"] == prediction["description_ko"]
        assert sample["caption"] == prediction["caption"]
        truth = consensus.loc[row.image_id]
        if pd.isna(truth["label"]):
            assert sample["ground_truth"] is None
        else:
            assert sample["ground_truth"].label == truth["label"]
        if pd.isna(truth["agreement"]):  # one reviewer: not measured, stored as null (not 1.0)
            assert sample["agreement"] is None and sample["consensus_method"] == "single"
        else:
            assert sample["agreement"] == pytest.approx(truth["agreement"])
        assert sample["disputed"] == bool(truth["disputed"])
        assert sample["split"] in sample.tags and sample["split"] == splits.loc[row.image_id]
        assert np.asarray(sample["embedding"]) == pytest.approx(np.asarray(embeddings.loc[row.image_id]))
        mine = annotations[annotations["image_id"] == row.image_id]
        got = sorted((c["annotator"], c.label) for c in sample["annotations"].classifications)
        assert got == sorted(zip(mine["annotator"], mine["label"], strict=True))
        n_boxes = int(mine["boxes"].notna().sum())
        assert len(sample["annotation_boxes"].detections if sample["annotation_boxes"] else []) == n_boxes


def test_augmented_variants_point_at_their_source(pipeline: Pipeline, dataset) -> None:
    augmented = pipeline.frames["augmented"]
    consensus = pipeline.frames["consensus"].set_index("image_id")["label"]
    variants = dataset.load_saved_view("augmented")
    assert sorted(variants.values("image_id")) == sorted(augmented["image_id"])
    for sample in variants:
        assert "augmented" in sample.tags and sample["is_augmented"]
        assert sample["ground_truth"].label == consensus.loc[sample["source_image_id"]]
        assert sample["augmentation"].transform in {"hflip", "rotate"}  # the record's columns, in one document
    schema = dataset.get_field_schema()
    assert not [name for name in schema if name.startswith("aug_")]
    originals = dataset.load_saved_view("originals")
    assert len(originals) == len(pipeline.frames["manifest"]) and set(originals.values("is_augmented")) == {False}
    assert set(originals.values("augmentation")) == {None}  # one empty field on originals, not one per column
    sources = _by_image(dataset)
    counts = augmented["source_image_id"].value_counts()
    for image_id, sample in sources.items():
        assert sample["n_augmented"] == counts.get(image_id, 0)


def _expected_mistakenness(predictions: pd.DataFrame, consensus: pd.DataFrame, classes: list[str]) -> pd.Series:
    """fiftyone-brain's classification mistakenness from its documented formula, on the pandas frames."""
    joined = predictions.merge(consensus, on="image_id", suffixes=("", "_gt")).dropna(subset=["label_gt"])
    p = joined[[f"p_{c}" for c in classes]].to_numpy()
    certainty = np.exp((p * np.log(p)).sum(axis=1))
    sign = np.where(joined["label"] == joined["label_gt"], -1.0, 1.0)
    return pd.Series((sign * certainty + 1) / 2, index=joined["image_id"])


def test_sidebar_lists_review_fields_first(dataset) -> None:
    groups = dataset.app_config.sidebar_groups
    first = groups[0]
    assert first.name == "review" and first.expanded
    schema = dataset.get_field_schema()
    assert first.paths[:4] == ["ground_truth", "prelabel", "agreement", "disputed"]  # this data has no regions
    assert {"annotations", "split", "description_ko"} <= set(first.paths) and set(first.paths) <= set(schema)
    rest = [p for g in groups[1:] for p in g.paths]
    assert not set(first.paths) & set(rest)  # each field once
    assert groups[-1].name == "augmentation" and not groups[-1].expanded
    assert "augmentation" in groups[-1].paths


def test_saved_views_match_the_pipeline_outputs(pipeline: Pipeline, dataset) -> None:
    frames = pipeline.frames
    consensus, predictions, manifest = frames["consensus"], frames["predictions"], frames["manifest"]
    settings = BrowseParams()
    splits = frames["splits"].set_index("image_id")["split"]
    groups = manifest.assign(split=manifest["image_id"].map(splits)).groupby("dup_group")["split"].nunique()
    leaking = manifest["dup_group"].map(groups) > 1
    mistakenness = _expected_mistakenness(predictions, consensus, pipeline.classes)
    expected = {
        "disputes": int(consensus["disputed"].sum()),
        "low-agreement": int((consensus["agreement"] < settings.low_agreement).sum()),
        "low-confidence-prelabels": int((predictions["score"] < settings.low_confidence).sum()),
        "likely-label-errors": int((mistakenness > settings.mistakenness_threshold).sum()),
        "near-duplicates": int((manifest["dup_group_size"] > 1).sum()),
        "cross-split-duplicates": int(leaking.sum()),
        "augmented": len(frames["augmented"]),
        **{f"split-{s}": int((splits == s).sum()) for s in SPLITS},
        "originals": len(manifest),
    }
    assert expected["cross-split-duplicates"] > 0 and expected["likely-label-errors"] > 0  # the data exercises them
    assert pipeline.summary["views"] == expected
    assert sorted(dataset.list_saved_views()) == sorted(expected)
    for name, count in expected.items():
        assert len(dataset.load_saved_view(name)) == count, name
    disputes = dataset.load_saved_view("disputes").values("image_id")
    assert set(disputes) == set(consensus.loc[consensus["disputed"], "image_id"])
    errors = dataset.load_saved_view("likely-label-errors").values("mistakenness")
    assert errors == sorted(errors, reverse=True)
    assert dataset.list_saved_views()[0] == "originals"  # first in the App's menu
    for name in expected:
        assert len(dataset.get_saved_view_info(name)["description"]) > 20, name
    assert "disputed" in dataset.get_saved_view_info("disputes")["description"]
    views_csv = pd.read_csv(pipeline.out_dir / "views.csv")
    assert dict(zip(views_csv["view"], views_csv["samples"], strict=True)) == expected


def test_mistakenness_equals_fiftyone_brain(pipeline: Pipeline, dataset) -> None:
    import fiftyone.brain as fob

    expected = _expected_mistakenness(pipeline.frames["predictions"], pipeline.frames["consensus"], pipeline.classes)
    ours = dict(zip(*dataset.exists("mistakenness").values(["image_id", "mistakenness"]), strict=True))
    assert set(ours) == set(expected.index)
    assert [ours[i] for i in expected.index] == pytest.approx(expected.to_numpy())
    both = dataset.exists("prelabel").exists("ground_truth").match({"is_augmented": False})
    clone = both.clone()
    try:
        fob.compute_mistakenness(clone, "prelabel", label_field="ground_truth", use_logits=True, progress=False)
        brain = dict(zip(*clone.values(["image_id", "mistakenness"]), strict=True))
    finally:
        clone.delete()
    assert [brain[i] for i in expected.index] == pytest.approx([ours[i] for i in expected.index])


def test_evaluation_of_prelabels_against_consensus(pipeline: Pipeline, dataset) -> None:
    joined = pipeline.frames["predictions"].merge(pipeline.frames["consensus"], on="image_id", suffixes=("", "_gt"))
    joined = joined.dropna(subset=["label_gt"])
    accuracy = float((joined["label"] == joined["label_gt"]).mean())
    evaluation = pipeline.summary["evaluation"]
    assert evaluation["n"] == len(joined)
    assert evaluation["accuracy"] == pytest.approx(accuracy)
    assert "eval_prelabel" in dataset.list_evaluations()
    assert dataset.load_evaluation_results("eval_prelabel").confusion_matrix().sum() == len(joined)
    confusion = pd.read_csv(pipeline.out_dir / "confusion.csv")
    assert len(confusion) == len(joined)
    headline = json.loads((pipeline.out_dir / "metrics.json").read_text(encoding="utf-8"))  # the DVC metrics
    assert headline == {
        "images": pipeline.summary["n_samples"],
        "accuracy": evaluation["accuracy"],
        "macro_f1": evaluation["fscore"],
    }
    assert float((confusion["actual"] == confusion["predicted"]).mean()) == pytest.approx(accuracy)


def test_similarity_index_returns_the_image_itself_first(dataset) -> None:
    with_embedding = dataset.exists("embedding")
    assert "img_sim" in dataset.list_brain_runs()
    for sample in with_embedding.take(5, seed=SEED):
        nearest = dataset.sort_by_similarity(sample["embedding"], k=3, brain_key="img_sim", dist_field="d")
        assert nearest.first().id == sample.id
        assert nearest.first()["d"] == pytest.approx(0.0, abs=1e-5)
    uniqueness = with_embedding.values("uniqueness")
    assert min(uniqueness) >= 0 and max(uniqueness) == pytest.approx(1.0)


def _text_vector(clip: Path, text: str) -> np.ndarray:
    import torch
    from transformers import AutoTokenizer, CLIPModel

    tokenizer = AutoTokenizer.from_pretrained(clip)
    model = CLIPModel.from_pretrained(clip).eval()
    with torch.no_grad():
        features = model.get_text_features(**tokenizer([text], return_tensors="pt"))
    features = features if isinstance(features, torch.Tensor) else features.pooler_output
    vector = features[0].numpy()
    return vector / np.linalg.norm(vector)


def test_text_search_ranks_by_cosine_similarity(pipeline: Pipeline, dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    query = "rust along the edge"
    embeddings = np.stack(pipeline.frames["embeddings"]["embedding"].to_list())
    cosine = embeddings @ _text_vector(pipeline.clip, query)
    order = np.argsort(-cosine)[:4]
    expected_ids = pipeline.frames["embeddings"]["image_id"].iloc[order].tolist()

    monkeypatch.chdir(pipeline.root)
    result = CliRunner().invoke(
        _cli(), ["search", query, "--k", "4", "--version", "t1", "--params", str(pipeline.root / "params.yaml")]
    )
    assert result.exit_code == 0, result.output
    found = dataset.load_saved_view("text-search")
    assert found.values("image_id") == expected_ids
    assert [1 - d for d in found.values("text_distance")] == pytest.approx(cosine[order], abs=1e-4)
    # the App's text search path: the index's own model embeds the prompt (local zoo entry, no download)
    via_index = dataset.sort_by_similarity(query, k=4, brain_key="img_sim")
    assert via_index.values("image_id") == expected_ids
    assert pipeline.summary["text_model"] == str(pipeline.clip.resolve())


def test_only_a_manifest_gives_a_dataset_with_duplicate_views(browse_db: BrowseDb, pipeline: Pipeline) -> None:
    import fiftyone as fo

    manifest = pipeline.frames["manifest"]
    summary = build_dataset(
        BrowseInputs(manifest=manifest),
        name="defect-curation-manifest-only",
        version="manifest-only",
        class_names=pipeline.classes,
        settings=BrowseParams(db_dir=browse_db.root / ".fiftyone"),
        base_dir=browse_db.root,
    )
    try:
        assert summary.n_samples == len(manifest)
        assert summary.inputs_skipped == [
            "predictions",
            "embeddings",
            "annotations",
            "consensus",
            "splits",
            "augmented",
        ]
        assert summary.views == {
            "originals": len(manifest),
            "near-duplicates": int((manifest["dup_group_size"] > 1).sum()),
        }
        assert summary.brain_runs == [] and summary.evaluation == {}
        schema = fo.load_dataset("defect-curation-manifest-only").get_field_schema()
        assert "prelabel" not in schema and "ground_truth" not in schema
    finally:
        fo.delete_dataset("defect-curation-manifest-only")


def test_bad_inputs_are_errors_naming_file_and_row(tmp_path: Path, pipeline: Pipeline) -> None:
    with pytest.raises(BrowseInputError, match="manifest not found"):
        read_inputs({"manifest": tmp_path / "nope.parquet"})
    notes: list[str] = []
    inputs = read_inputs(
        {"manifest": pipeline.inputs["manifest"], "consensus": tmp_path / "c.parquet"}, on_skip=notes.append
    )
    assert inputs.consensus is None and f"consensus: {tmp_path / 'c.parquet'} not found, skipped" in notes
    manifest = pipeline.frames["manifest"]
    consensus = pipeline.frames["consensus"]
    with pytest.raises(BrowseInputError, match=r"c\.parquet: missing column\(s\) \['disputed'\]"):
        check_inputs(
            BrowseInputs(manifest, consensus=consensus.drop(columns="disputed"), sources={"consensus": "c.parquet"})
        )
    repeated = pd.concat([consensus, consensus.iloc[[3]]], ignore_index=True)
    with pytest.raises(BrowseInputError, match=rf"{consensus['image_id'].iloc[3]}.*row {len(consensus)}"):
        check_inputs(BrowseInputs(manifest, consensus=repeated))
    embeddings = pipeline.frames["embeddings"].copy()
    embeddings.at[2, "embedding"] = np.zeros(5, dtype=np.float32)
    with pytest.raises(BrowseInputError, match=r"row 2 .* length 5, others have 16"):
        check_inputs(BrowseInputs(manifest, embeddings=embeddings))


def test_fiftyone_command_reports_a_missing_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "missing.parquet"
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    args = ["fiftyone", str(tmp_path / "out"), "--manifest", str(missing), "--params", str(tmp_path / "params.yaml")]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 1
    assert "manifest not found" in result.output and str(missing) in result.output.replace("\n", "")
    assert not (tmp_path / ".fiftyone").exists()  # failed before starting a database


# ---- the App: `curation browse` + headless chromium ----

MAGENTA = (255, 0, 255)
LAUNCH = (
    "import typer; from curation.browse.cli import browse_command, database_command; app = typer.Typer(); "
    "app.command('browse')(browse_command); app.command('db')(database_command); app()"
)


@pytest.fixture
def app_dataset(browse_db: BrowseDb, params) -> Iterator[str]:
    import fiftyone as fo

    rng = np.random.default_rng(3)
    rows = []
    for k in range(12):
        pixels = np.empty((96, 128, 3), dtype=np.uint8)
        pixels[:] = MAGENTA
        pixels[rng.integers(0, 96, 40), rng.integers(0, 128, 40)] = 0  # distinct files, still magenta overall
        path = browse_db.root / "app-images" / f"img_{k:02d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(path)
        rows.append({"image_id": f"{k:016x}", "path": str(path), "width": 128, "height": 96, "format": "PNG"})
    name = "defect-curation-apptest"
    build_dataset(
        BrowseInputs(manifest=pd.DataFrame(rows)),
        name=name,
        version="apptest",
        class_names=params.ontology.class_names,
        settings=BrowseParams(),
        base_dir=browse_db.root,
    )
    yield name
    fo.delete_dataset(name)


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _stop(pid: int, timeout: float = 60.0) -> None:
    """SIGTERM the process (it closes the App server and returns), then SIGKILL whatever of its tree remains."""
    children = _descendants(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for target in [pid, *children]:
        while pid_alive(target) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(target):
            os.kill(target, signal.SIGKILL)


@contextlib.contextmanager
def running_app(browse_db: BrowseDb, version: str, log: Path) -> Iterator[tuple[str, int]]:
    """``curation browse --version VERSION`` in a subprocess (output in ``log``): ``(url, port)`` once it serves."""
    port = database.free_port()
    env = {**os.environ, "FIFTYONE_DO_NOT_TRACK": "true", "PYTHONWARNINGS": "ignore"}
    args = ["browse", "--version", version, "--port", str(port), "--params", str(browse_db.root / "params.yaml")]
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, *args], cwd=browse_db.root, stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        yield _wait_for_app(process, log, port), port
    finally:
        _stop(process.pid)
        process.wait(timeout=10)


@pytest.fixture
def app_url(browse_db: BrowseDb, app_dataset: str, tmp_path: Path) -> Iterator[str]:
    with running_app(browse_db, "apptest", tmp_path / "browse.log") as (url, _):
        yield url
    # the App launched on the fixture's mongod, so browse left it running
    assert database.status(browse_db.root / ".fiftyone") == browse_db.db


def _wait_for_app(process: subprocess.Popen, log: Path, port: int, timeout: float = 180.0) -> str:
    deadline = time.monotonic() + timeout
    prefix = f"http://127.0.0.1:{port}/"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"curation browse exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        url = next((w for w in log.read_text().split() if w.startswith(prefix)), None)
        if url:
            try:
                urllib.request.urlopen(prefix + "fiftyone", timeout=5).read()
                return url
            except OSError:
                pass
        time.sleep(0.5)
    pytest.fail(f"the App did not come up on port {port} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.mark.skipif(CHROMIUM is None, reason=MISSING)
def test_app_grid_shows_the_samples(app_url: str, app_dataset: str, tmp_path: Path) -> None:
    assert app_url.endswith(f"/datasets/{app_dataset}?view=originals")  # opens on the originals
    shot = tmp_path / "app.png"
    command = [
        CHROMIUM,
        HEADLESS,
        *FLAGS,
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1280,900",
        "--virtual-time-budget=40000",  # the saved view loads after the dataset
        f"--screenshot={shot}",
        app_url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    if os.environ.get("BROWSE_SCREENSHOT"):  # keep it to look at
        shutil.copy(shot, os.environ["BROWSE_SCREENSHOT"])
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    magenta = (np.abs(pixels - np.array(MAGENTA)).sum(axis=2) < 60).mean()
    # 12 thumbnails fill a good part of a 1280x900 grid; a blank or error page has none
    assert magenta > 0.10, f"only {magenta:.1%} of the screenshot shows sample thumbnails"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # a rendered UI, not a flat page


def test_augment_stage_output_is_read_with_paths_beside_it(tmp_path: Path) -> None:
    manifest = pd.DataFrame({"image_id": ["a"], "path": [str(tmp_path / "a.png")]})
    manifest.to_parquet(tmp_path / "manifest.parquet")
    augment_dir = tmp_path / "augment"
    augment_dir.mkdir()
    # the augment stage's shape: each variant's file relative to its own folder, no `path` column
    pd.DataFrame({"image_id": ["a_a0"], "source_image_id": ["a"], "file": ["images/a_a0.png"]}).to_parquet(
        augment_dir / "augmented.parquet"
    )
    inputs = read_inputs(
        {"manifest": tmp_path / "manifest.parquet", "augmented": augment_dir / "augmented.parquet"}, on_skip=None
    )
    assert inputs.augmented["path"].tolist() == [str(augment_dir / "images" / "a_a0.png")]


def test_uniqueness_is_skipped_with_a_reason_above_the_cap() -> None:
    from curation.browse.brain import uniqueness_skipped

    settings = BrowseParams(uniqueness_max_images=1000)
    assert uniqueness_skipped(1000, settings) is None
    assert "browse.uniqueness_max_images" in uniqueness_skipped(1001, settings)
    assert uniqueness_skipped(10**6, BrowseParams(uniqueness=False)) is None


def test_regions_with_shapes_show_as_filled_polygons(browse_db: BrowseDb, tmp_path: Path, params: Params) -> None:
    """A real magnetic-tile mask, as split and augment carry it, becomes closed filled polylines in the App."""
    import cv2
    import fiftyone as fo
    from pycocotools import mask as coco_mask

    from curation.shapes import mask_to_polygons

    stem = Path(os.environ.get("MAGNETIC_TILE_DIR", "/work/shared/datasets/magnetic-tile")) / "MT_Crack/Imgs"
    stem = stem / "exp1_num_265613"
    if not stem.with_suffix(".png").is_file():
        pytest.skip(f"magnetic-tile dataset not found at {stem.parent}")
    mask = (np.asarray(Image.open(stem.with_suffix(".png"))) > 127).astype(np.uint8)
    height, width = mask.shape
    count, parts = cv2.connectedComponents(mask, connectivity=8)
    regions = []
    for k in range(1, count):
        part = (parts == k).astype(np.uint8)
        ys, xs = np.nonzero(part)
        regions.append(
            {
                "x": float(xs.min()),
                "y": float(ys.min()),
                "w": float(xs.max() + 1 - xs.min()),
                "h": float(ys.max() + 1 - ys.min()),
                "label": "crack",
                "segmentation": mask_to_polygons(part),
                "area": float(part.sum()),
            }
        )
    boxes = json.dumps(regions, sort_keys=True)
    path = str(stem.with_suffix(".jpg"))
    manifest = pd.DataFrame([{"image_id": "tile", "path": path, "width": width, "height": height, "dup_group": "tile"}])
    splits = pd.DataFrame([{"image_id": "tile", "split": "train", "label": "crack", "boxes": boxes}])
    annotations = pd.DataFrame([{"image_id": "tile", "annotator": ANNOTATORS[0], "label": "crack", "boxes": boxes}])
    augmented = pd.DataFrame(
        [
            {
                "image_id": "tile_a0",
                "source_image_id": "tile",
                "path": path,
                "width": width,
                "height": height,
                "boxes": boxes,
            }
        ]
    )
    name = "defect-curation-shapes"
    build_dataset(
        BrowseInputs(manifest=manifest, annotations=annotations, splits=splits, augmented=augmented),
        name=name,
        version="shapes",
        class_names=params.ontology.class_names,
        settings=BrowseParams(db_dir=browse_db.root / ".fiftyone", uniqueness=False),
        base_dir=tmp_path,
    )
    try:
        dataset = fo.load_dataset(name)
        schema = dataset.get_field_schema()
        for field in ("ground_truth_polygons", "annotation_polygons"):
            assert schema[field].document_type is fo.Polylines
        for sample in dataset:
            fields = ["ground_truth_polygons"] + ([] if sample["is_augmented"] else ["annotation_polygons"])
            for field in fields:
                polylines = sample[field].polylines
                assert len(polylines) == count - 1
                drawn = np.zeros_like(mask)
                for polyline in polylines:
                    assert polyline.closed and polyline.filled and polyline.label == "crack"
                    pixels = [[v for x, y in shape for v in (x * width, y * height)] for shape in polyline.points]
                    drawn |= coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(pixels, height, width)))
                assert np.array_equal(drawn, mask)  # relative points scale back to the mask's outline
            assert len(sample["ground_truth_boxes"].detections) == count - 1
    finally:
        fo.delete_dataset(name)
