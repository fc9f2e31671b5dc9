"""The prelabel stage end to end with tiny random CLIP/BLIP checkpoints (no download) and the offline backbone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
import yaml
from tiny_models import build_blip, build_clip
from typer.testing import CliRunner

from curation.prelabel import cli as prelabel_cli
from curation.prelabel.errors import ModelUnavailableError
from curation.prelabel.fewshot import LabelSet
from curation.prelabel.stage import prelabel, write_prelabel
from schemas.params_anomaly import AnomalyParams
from schemas.params_prelabel import CaptionParams, ClipParams, FewShotParams, PrelabelParams, PreprocessParams
from schemas.records import Embedding, Prediction, columns
from tests.conftest import ingested_sample


@pytest.fixture(scope="module")
def world(tmp_path_factory, params):
    root = tmp_path_factory.mktemp("prelabel")
    sample, manifest = ingested_sample(root, params, n_per_class=3, seed=0, size=96)
    truth = pd.read_csv(sample.truth_csv)
    return {
        "root": root,
        "manifest": manifest,
        "truth": truth,
        "clip": build_clip(root / "clip"),
        "blip": build_blip(root / "blip"),
    }


def _settings(world, **changes) -> PrelabelParams:
    base = {
        "clip": ClipParams(model=str(world["clip"])),
        "captions": CaptionParams(model=str(world["blip"]), policy="all", max_new_tokens=3, num_beams=1),
        "device": "cpu",
    }
    return PrelabelParams(**{**base, **changes})


def _truth_labels(world) -> dict[str, str]:
    manifest, truth = world["manifest"], world["truth"]
    by_file = dict(zip(truth["file"], truth["label"], strict=True))
    return {
        image_id: by_file[paths[0]]
        for image_id, paths in zip(manifest["image_id"], manifest["all_paths"], strict=True)
        if paths[0] in by_file
    }


def test_zero_shot_outputs_follow_the_contract(world, params, tmp_path):
    settings = _settings(world)
    result = prelabel(world["manifest"], settings, params.ontology, cache_dir=tmp_path / "cache")
    predictions = result.predictions
    class_columns = [f"p_{c}" for c in params.ontology.class_names]
    assert list(predictions.columns) == [*columns(Prediction), *class_columns]
    assert predictions["image_id"].tolist() == world["manifest"]["image_id"].tolist()
    probabilities = predictions[class_columns].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    np.testing.assert_allclose(predictions["score"], probabilities.max(axis=1))
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    np.testing.assert_allclose(predictions["margin"], top_two[:, 1] - top_two[:, 0])
    assert (predictions["label"] == [params.ontology.class_names[i] for i in probabilities.argmax(axis=1)]).all()
    assert set(predictions["source"]) == {"zero_shot"}
    assert predictions["model_version"].str.startswith(f"{world['clip']}@local-").all()
    assert predictions["caption"].notna().all() and predictions["caption_score"].between(-1, 1).all()
    assert (predictions["caption_flag"] == (predictions["caption_score"] < settings.captions.check_threshold)).all()
    name_ko = {c.name: c.name_ko for c in params.ontology.classes}
    assert all(
        d.startswith(name_ko[label])
        for d, label in zip(predictions["description_ko"], predictions["label"], strict=True)
    )
    # the anomaly pre-labeler ran too: its columns are filled and its region description follows the class's
    assert predictions["anomaly_score"].notna().all() and set(predictions["anomaly_reference"]) == {"none"}
    for text, label in zip(predictions["description_en"], predictions["label"], strict=True):
        region = text.find("No anomaly found") if "No anomaly found" in text else text.find("suspect region")
        assert text.startswith(params.ontology.get(label).label_en) and region > 0, text
    for _, row in predictions.iterrows():  # every row validates as the shared record
        Prediction.model_validate({k: (None if pd.isna(v) else v) for k, v in row[columns(Prediction)].items()})

    out = tmp_path / "out"
    write_prelabel(result, out)
    assert pd.read_parquet(out / "predictions.parquet").equals(predictions)
    table = pq.read_table(out / "embeddings.parquet")
    assert table.column_names == columns(Embedding) == ["image_id", "model_key", "embedding"]
    embedding_type = table.schema.field("embedding").type
    assert pa.types.is_list(embedding_type) and embedding_type.value_type == pa.float32()
    vectors = np.stack(table.column("embedding").to_pylist())
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)  # CLIP embeddings are unit vectors
    report = json.loads((out / "prelabel.json").read_text(encoding="utf-8"))
    assert report["predicted"] == report["images"] == len(world["manifest"])
    assert sum(report["class_distribution"].values()) == len(predictions)
    assert report["mean_confidence"] == pytest.approx(predictions["score"].mean(), abs=1e-4)
    assert report["low_confidence_share"] == pytest.approx((predictions["score"] < 0.5).mean(), abs=1e-4)
    assert report["zero_shot"] == "done" and report["captioned"] == len(predictions)
    histogram = pd.read_csv(out / "confidence_histogram.csv")
    assert histogram["images"].sum() == len(predictions) and len(histogram) == settings.histogram_bins
    assert (out / "confidence_histogram.png").read_bytes()[:4] == b"\x89PNG"


def test_cache_hits_misses_and_force(world, params, tmp_path):
    # anomaly off: its no-label scores depend on the batch (each image is compared with the others), so a run on
    # fewer images differs by design; its own cache is tested in tests/test_prelabel_anomaly.py
    settings = _settings(world, captions=CaptionParams(policy="none"), anomaly=AnomalyParams(enabled=False))
    manifest = world["manifest"]
    cache = tmp_path / "cache"
    first = prelabel(manifest.iloc[:-1], settings, params.ontology, cache_dir=cache)
    assert first.cache_stats["embeddings_computed"] == len(manifest) - 1
    again = prelabel(manifest, settings, params.ontology, cache_dir=cache)
    assert again.cache_stats["embeddings_computed"] == 1  # only the new image
    assert again.cache_stats["embeddings_cached"] == len(manifest) - 1 and again.cache_stats["texts_computed"] == 0
    pd.testing.assert_frame_equal(again.predictions.iloc[:-1], first.predictions, check_exact=False, atol=1e-6)
    forced = prelabel(manifest, settings, params.ontology, cache_dir=cache, force=True)
    assert forced.cache_stats["embeddings_computed"] == len(manifest) and forced.cache_stats["texts_computed"] > 0
    clahe = settings.model_copy(update={"preprocess": PreprocessParams(clahe=True)})
    changed = prelabel(manifest, clahe, params.ontology, cache_dir=cache)
    assert changed.cache_stats["embeddings_computed"] == len(manifest)  # preprocessing is part of the key
    assert changed.predictions["model_version"].iloc[0] != again.predictions["model_version"].iloc[0]
    prompts = settings.model_copy(update={"clip": ClipParams(model=str(world["clip"]), templates_en=["{}"])})
    reprompted = prelabel(manifest, prompts, params.ontology, cache_dir=cache)
    assert reprompted.cache_stats["embeddings_computed"] == 0  # prompts change scores, not image embeddings
    assert reprompted.predictions["model_version"].iloc[0] != again.predictions["model_version"].iloc[0]


def test_captions_follow_the_policy_and_are_cached(world, params, tmp_path):
    manifest = world["manifest"].iloc[:4]
    never = _settings(
        world, low_confidence_below=0.0, captions=CaptionParams(model="/no/such/blip", policy="low_confidence")
    )
    result = prelabel(manifest, never, params.ontology, cache_dir=tmp_path / "c")
    assert result.predictions["caption"].isna().all()
    assert not any("captions skipped" in n for n in result.notes)  # BLIP was never needed, so never loaded
    always = _settings(world, low_confidence_below=1.0)
    always = always.model_copy(update={"captions": always.captions.model_copy(update={"policy": "low_confidence"})})
    first = prelabel(manifest, always, params.ontology, cache_dir=tmp_path / "c")
    second = prelabel(manifest, always, params.ontology, cache_dir=tmp_path / "c")
    assert first.cache_stats["captions_computed"] == 4 and second.cache_stats.get("captions_computed") == 0
    assert second.predictions["caption"].tolist() == first.predictions["caption"].tolist()


def test_missing_clip_with_error_policy_raises(world, params, tmp_path):
    settings = _settings(world, clip=ClipParams(model="openai/clip-vit-base-patch32"), on_missing_model="error")
    with pytest.raises(ModelUnavailableError, match="openai/clip-vit-base-patch32"):
        prelabel(world["manifest"], settings, params.ontology, cache_dir=tmp_path / "c")


def test_without_clip_the_offline_backbone_embeds_and_few_shot_predicts(world, params, tmp_path):
    settings = _settings(
        world,
        clip=ClipParams(model="openai/clip-vit-base-patch32"),
        captions=CaptionParams(policy="none"),
        fewshot=FewShotParams(min_per_class=2, cv_folds=2),
        anomaly=AnomalyParams(enabled=False),  # without it and without CLIP or labels: no predictions
    )
    manifest = world["manifest"]
    bare = prelabel(manifest, settings, params.ontology, cache_dir=tmp_path / "c")
    assert len(bare.predictions) == 0 and list(bare.predictions.columns)[: len(columns(Prediction))] == columns(
        Prediction
    )
    assert bare.report["zero_shot"] == "skipped" and bare.report["embedding_model"].startswith("efficientnet-lite0@")
    assert any("zero-shot skipped" in n and "hf download" in n for n in bare.notes)
    assert any("no predictions written" in n for n in bare.notes)
    assert np.stack(bare.embeddings["embedding"]).shape == (len(manifest), 1280)

    labels = _truth_labels(world)
    few = prelabel(manifest, settings, params.ontology, cache_dir=tmp_path / "c", labels=LabelSet(labels, "truth"))
    assert few.cache_stats["embeddings_computed"] == 0  # backbone embeddings came from the cache
    assert len(few.predictions) == len(manifest) and set(few.predictions["source"]) == {"few_shot"}
    assert few.report["few_shot"]["status"] == "used" and 0 <= few.report["few_shot"]["cv_accuracy"] <= 1
    assert few.predictions["model_version"].str.contains("+fewshot-", regex=False).all()

    scarce = {k: v for k, v in labels.items() if v in ("scratch", "ok")}
    scarce = dict(list(scarce.items())[:3])
    none = prelabel(manifest, settings, params.ontology, cache_dir=tmp_path / "c", labels=LabelSet(scarce, "few"))
    assert len(none.predictions) == 0 and none.report["few_shot"]["status"] == "too_few_labels"
    assert any("too few labels per class" in n for n in none.notes)


def test_few_shot_keeps_zero_shot_while_a_class_is_unlabelled(world, params, tmp_path):
    settings = _settings(
        world, captions=CaptionParams(policy="none"), fewshot=FewShotParams(min_per_class=2, cv_folds=2)
    )
    labels = {k: v for k, v in _truth_labels(world).items() if v != "crack"}
    result = prelabel(
        world["manifest"], settings, params.ontology, cache_dir=tmp_path / "c", labels=LabelSet(labels, "t")
    )
    assert set(result.predictions["source"]) == {"zero_shot"}
    assert result.report["few_shot"]["status"] == "reported_only" and "cv_accuracy" in result.report["few_shot"]
    assert any("crack (0)" in n for n in result.notes)


def test_manifest_problems_are_named(world, params, tmp_path):
    from curation.prelabel.errors import ManifestError

    with pytest.raises(ManifestError, match=r"lacks columns \['sha256'\]"):
        prelabel(world["manifest"].drop(columns="sha256"), _settings(world), params.ontology, cache_dir=tmp_path)
    moved = world["manifest"].iloc[:2].copy()
    moved.loc[moved.index[1], "path"] = str(tmp_path / "moved.png")
    with pytest.raises(ManifestError, match=r"moved\.png \(manifest row 1\)"):
        prelabel(moved, _settings(world), params.ontology, cache_dir=tmp_path / "c")


def test_cli_writes_outputs_and_reports_errors(world, tmp_path, monkeypatch):
    app = typer.Typer()
    app.command("prelabel")(prelabel_cli.prelabel_command)
    app.command("other")(lambda: None)  # two commands, so typer keeps the sub-command name
    manifest = tmp_path / "manifest.parquet"
    world["manifest"].iloc[:5].to_parquet(manifest)
    settings = _settings(world, captions=CaptionParams(policy="none"), cache_dir=tmp_path / "cache")
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text(encoding="utf-8"))
    raw["prelabel"] = settings.model_dump(mode="json")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    runner = CliRunner()
    out = tmp_path / "out"
    args = ["prelabel", str(manifest), str(out), "--params", str(tmp_path / "params.yaml")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(out / "predictions.parquet")) == 5 and (tmp_path / "cache" / "cache.sqlite").is_file()
    again = runner.invoke(app, [*args, "--force"])
    assert again.exit_code == 0 and "embeddings_computed: 5" in again.output
    missing = runner.invoke(app, ["prelabel", str(tmp_path / "nope.parquet"), str(out), "--params", args[-1]])
    assert missing.exit_code == 1 and "run ingest first" in missing.output


def test_progress_total_counts_scoring_and_plot_data_only_with_predictions(world, params, tmp_path):
    """Refine reuses cached embeddings: the bar's total is then the images scored (was 0/0 while predicting)."""
    settings = _settings(
        world,
        clip=ClipParams(model="openai/clip-vit-base-patch32"),
        captions=CaptionParams(policy="none"),
        fewshot=FewShotParams(min_per_class=2, cv_folds=2),
        anomaly=AnomalyParams(enabled=False),  # without it and without CLIP or labels: no predictions
    )
    manifest = world["manifest"]
    bare = prelabel(manifest, settings, params.ontology, cache_dir=tmp_path / "c")
    write_prelabel(bare, tmp_path / "bare")
    assert len(bare.predictions) == 0 and not (tmp_path / "bare" / "confidence_histogram.csv").exists()
    assert (tmp_path / "bare" / "confidence_histogram.png").is_file()  # the picture says why it is empty

    totals, done = [], []
    labels = LabelSet(_truth_labels(world), "truth")
    few = prelabel(
        manifest,
        settings,
        params.ontology,
        cache_dir=tmp_path / "c",
        labels=labels,
        on_start=totals.append,
        on_progress=done.append,
    )
    assert few.cache_stats["embeddings_computed"] == 0
    assert totals[-1] == len(manifest) == sum(done)
    write_prelabel(few, tmp_path / "few")
    histogram = pd.read_csv(tmp_path / "few" / "confidence_histogram.csv")
    assert histogram["images"].sum() == len(manifest)
    headline = json.loads((tmp_path / "few" / "metrics.json").read_text(encoding="utf-8"))
    assert (
        headline["predicted"] == len(manifest)
        and headline["few_shot_cv_accuracy"] == few.report["few_shot"]["cv_accuracy"]
    )


def test_long_missing_model_note_is_printed_in_full_once(world, tmp_path):
    app = typer.Typer()
    app.command("prelabel")(prelabel_cli.prelabel_command)
    app.command("other")(lambda: None)
    manifest = tmp_path / "manifest.parquet"
    world["manifest"].iloc[:3].to_parquet(manifest)
    settings = _settings(
        world,
        clip=ClipParams(model="openai/clip-vit-base-patch32"),
        captions=CaptionParams(policy="none"),
        cache_dir=tmp_path / "cache",
    )
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text(encoding="utf-8"))
    raw["prelabel"] = settings.model_dump(mode="json")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    args = ["prelabel", str(manifest), str(tmp_path / "out"), "--params", str(tmp_path / "params.yaml")]
    runner = CliRunner()
    first, second = runner.invoke(app, args), runner.invoke(app, args)
    assert first.exit_code == second.exit_code == 0, first.output
    flat = [" ".join(r.output.split()) for r in (first, second)]
    assert "hf download openai/clip-vit-base-patch32" in flat[0]
    assert "hf download" not in flat[1]
    assert "zero-shot skipped, embeddings from the offline backbone" in flat[1] and "shown in full before" in flat[1]
    notes = json.loads((tmp_path / "out" / "prelabel.json").read_text(encoding="utf-8"))["notes"]
    assert any("hf download openai/clip-vit-base-patch32" in n for n in notes)  # the full text stays on file


def test_refine_command_is_prelabel_with_labels(world, tmp_path):
    """`curation refine` (the DVC stage's name) writes the same bytes as `curation prelabel --labels`."""
    app = typer.Typer()
    app.command("prelabel")(prelabel_cli.prelabel_command)
    app.command("refine")(prelabel_cli.refine_command)
    manifest = tmp_path / "manifest.parquet"
    world["manifest"].to_parquet(manifest)
    settings = _settings(world, captions=CaptionParams(policy="none"), cache_dir=tmp_path / "cache")
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text(encoding="utf-8"))
    raw["prelabel"] = settings.model_dump(mode="json")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    labels = tmp_path / "labels.csv"
    pd.DataFrame(list(_truth_labels(world).items()), columns=["image_id", "label"]).to_csv(labels, index=False)
    runner = CliRunner()
    outputs = {}
    for command in ("prelabel", "refine"):
        out = tmp_path / command
        args = [command, str(manifest), str(out), "--labels", str(labels), "--params", str(tmp_path / "params.yaml")]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        outputs[command] = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}
    assert "predictions.parquet" in outputs["refine"]
    assert outputs["refine"] == outputs["prelabel"]
