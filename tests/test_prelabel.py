"""Prelabel maths and building blocks: prompt ensembles, hard-negative folding, summaries, images, labels, cache."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from curation.prelabel.base import Outcome, ScoreInput, Scores
from curation.prelabel.cache import PrelabelCache
from curation.prelabel.captions import describe, glossary_korean, select_for_captions
from curation.prelabel.errors import ManifestError, ModelUnavailableError
from curation.prelabel.fewshot import FewShotScorer, LabelSet, cap_per_class, fit_predict, power_l2, read_labels
from curation.prelabel.images import ImageRef, InputSpec, clahe, load_rgb, prepare, resize_square
from curation.prelabel.models import resolve_checkpoint, select_runtime
from curation.prelabel.prompts import TextClass, build_text_classes, ensemble, model_version
from curation.prelabel.stage import _run_scorers
from curation.prelabel.zero_shot import fold_hard_negatives, summarise, text_probabilities
from schemas.params_prelabel import ClipParams, DescriptionParams, FewShotParams, PrelabelParams, PreprocessParams


def test_text_classes_expand_every_template_and_phrasing(params):
    settings = ClipParams(templates_en=["{}", "a photo of {}."], prompt_language="en")
    classes = build_text_classes(params.ontology, settings)
    names = [c.name for c in classes]
    assert names == params.ontology.class_names + [h.name for h in params.ontology.hard_negatives]
    scratch = classes[0]
    phrasings = params.ontology.get("scratch").prompts_en
    assert scratch.prompts == tuple(t.format(p) for t in settings.templates_en for p in phrasings)
    shadow = next(c for c in classes if c.name == "shadow")
    assert shadow.maps_to == "ok" and shadow.is_hard_negative and not scratch.is_hard_negative


def test_korean_prompts_only_when_asked(params):
    korean = build_text_classes(params.ontology, ClipParams(prompt_language="ko"))[0]
    both = build_text_classes(params.ontology, ClipParams(prompt_language="both"))[0]
    assert all(any("\uac00" <= ch <= "\ud7a3" for ch in p) for p in korean.prompts)
    assert set(korean.prompts) < set(both.prompts) and len(both.prompts) > len(korean.prompts)


def test_template_without_slot_is_rejected():
    with pytest.raises(ValueError, match="exactly one"):
        ClipParams(templates_en=["a photo of a defect"])


def test_ensemble_matches_hand_computation():
    rng = np.random.default_rng(0)
    classes = [TextClass("a", "a", ("a1", "a2", "a3")), TextClass("b", "b", ("b1",))]
    table = {t: rng.normal(size=4) * (i + 1) for i, t in enumerate(["a1", "a2", "a3", "b1"])}
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return np.stack([table[t] for t in texts])

    result = ensemble(encode, classes)
    assert calls == [["a1", "a2", "a3", "b1"]]  # every prompt encoded once, in one call
    unit = {t: v / np.linalg.norm(v) for t, v in table.items()}
    mean_a = (unit["a1"] + unit["a2"] + unit["a3"]) / 3
    np.testing.assert_allclose(result[0], mean_a / np.linalg.norm(mean_a), rtol=1e-5)
    np.testing.assert_allclose(result[1], unit["b1"], rtol=1e-5)


def test_probabilities_are_the_tempered_softmax():
    image = np.array([[1.0, 0.0]])
    texts = np.array([[1.0, 0.0], [0.0, 1.0], [np.sqrt(0.5), np.sqrt(0.5)]])
    cosines = np.array([1.0, 0.0, np.sqrt(0.5)])
    for scale, temperature in [(100.0, 1.0), (100.0, 4.0), (10.0, 0.5)]:
        logits = cosines * scale / temperature
        expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        got = text_probabilities(image, texts, logit_scale=scale, temperature=temperature)
        np.testing.assert_allclose(got[0], expected, rtol=1e-9)


def test_hard_negatives_fold_into_their_class_and_are_named():
    classes = [
        TextClass("scratch", "scratch", ("s",)),
        TextClass("ok", "ok", ("o",)),
        TextClass("shadow", "ok", ("sh",)),
    ]
    raw = np.array([[0.45, 0.15, 0.40], [0.70, 0.20, 0.10]])
    folded, top = fold_hard_negatives(raw, classes, ["scratch", "ok"])
    np.testing.assert_allclose(folded, [[0.45, 0.55], [0.70, 0.30]])
    assert top == [None, None]  # scratch had the single highest text probability in both rows
    raw2 = np.array([[0.30, 0.20, 0.50]])
    folded2, top2 = fold_hard_negatives(raw2, classes, ["scratch", "ok"])
    np.testing.assert_allclose(folded2, [[0.30, 0.70]])
    assert top2 == ["shadow"]
    summary = summarise(folded, ["scratch", "ok"])
    assert summary.labels == ["ok", "scratch"]  # without folding, row 0 would have gone to scratch


def test_summary_margin_and_entropy():
    probabilities = np.array([[0.5, 0.3, 0.2], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    summary = summarise(probabilities, ["a", "b", "c"])
    assert summary.labels == ["a", "a", "a"]
    np.testing.assert_allclose(summary.margins, [0.2, 1.0, 0.0], atol=1e-12)
    expected = -(0.5 * np.log(0.5) + 0.3 * np.log(0.3) + 0.2 * np.log(0.2))
    np.testing.assert_allclose(summary.entropies, [expected, 0.0, np.log(3)], atol=1e-12)


def test_model_version_changes_with_prompts_temperature_and_preprocessing(params):
    clip = ClipParams()
    classes = build_text_classes(params.ontology, clip)
    base = model_version("m@1", classes, clip, PreprocessParams())
    assert base.startswith("m@1+") and base == model_version("m@1", classes, clip, PreprocessParams())
    edited = [TextClass(c.name, c.maps_to, (*c.prompts, "extra")) if i == 0 else c for i, c in enumerate(classes)]
    variants = {
        model_version("m@1", edited, clip, PreprocessParams()),
        model_version("m@1", classes, ClipParams(calibration_temperature=2.0), PreprocessParams()),
        model_version("m@1", classes, clip, PreprocessParams(clahe=True)),
        model_version("m@2", classes, clip, PreprocessParams()),
    }
    assert base not in variants and len(variants) == 4


def test_letterbox_keeps_the_whole_image_and_center_crop_fills():
    wide = np.full((20, 80, 3), 200, dtype=np.uint8)
    boxed = resize_square(wide, 40, "letterbox", fill=7)
    assert boxed.shape == (40, 40, 3)
    assert (boxed[:12] == 7).all() and (boxed[-12:] == 7).all()  # 10 rows of image in the middle, padding around
    assert (boxed[16:24] == 200).all()
    cropped = resize_square(wide, 40, "center_crop")
    assert cropped.shape == (40, 40, 3) and (cropped == 200).all()


def test_clahe_raises_local_contrast():
    rng = np.random.default_rng(1)
    flat = (120 + rng.integers(0, 8, size=(64, 64, 1))).repeat(3, axis=2).astype(np.uint8)
    equalised = clahe(flat, clip_limit=4.0, tile_grid=4)
    assert equalised.shape == flat.shape and equalised.dtype == np.uint8
    assert equalised.std() > 2 * flat.std()


def test_prepare_normalises_with_the_model_spec():
    rgb = np.full((10, 10, 3), 255, dtype=np.uint8)
    spec = InputSpec(8, (0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    pixels = prepare(rgb, spec, PreprocessParams())
    assert pixels.shape == (3, 8, 8) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels[:, 0, 0], [1.0, 3.0, 1.0], rtol=1e-6)


def _sha(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_exif_orientation_from_the_manifest_is_applied(tmp_path):
    pixels = np.zeros((10, 30, 3), dtype=np.uint8)
    pixels[:, :5] = 255  # bright left edge
    path = tmp_path / "x.png"
    Image.fromarray(pixels).save(path)
    upright = load_rgb(ImageRef(str(path), _sha(path), 6))  # 6: rotate 90 degrees clockwise to view
    assert upright.shape == (30, 10, 3)
    assert (upright[:5] == 255).all() and (upright[5:] == 0).all()  # the left edge is now the top edge
    assert load_rgb(ImageRef(str(path), _sha(path), 1)).shape == (10, 30, 3)


def test_missing_or_changed_image_is_named(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(path)
    with pytest.raises(ManifestError, match=r"gone\.png \(manifest row 3\).*re-run ingest"):
        load_rgb(ImageRef(str(tmp_path / "gone.png"), "0" * 64, 1, row=3))
    with pytest.raises(ManifestError, match="changed since ingest"):
        load_rgb(ImageRef(str(path), "0" * 64, 1))


def test_missing_model_fails_fast_with_the_fix(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelUnavailableError) as info:
        resolve_checkpoint("openai/clip-vit-base-patch32", None, section="clip", allow_download=True)
    message = str(info.value)
    assert "'openai/clip-vit-base-patch32'" in message and "prelabel.clip.model" in message
    assert "hf download openai/clip-vit-base-patch32" in message and "models--openai--clip-vit-base-patch32" in message
    assert "HF_HUB_OFFLINE" in message
    with pytest.raises(ModelUnavailableError, match="looks like a path"):
        resolve_checkpoint("./no/such/folder", None, section="captions", allow_download=False)


def test_runtime_selection_on_this_machine():
    import torch

    auto = select_runtime("auto")
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert (auto.device, auto.dtype) == ("cpu", "float32")
        with pytest.raises(ModelUnavailableError, match="no CUDA device"):
            select_runtime("cuda")
    assert select_runtime("cpu").dtype == "float32"


def test_glossary_replaces_whole_words_longest_first():
    glossary = {"scratch": "스크래치", "metal": "금속", "surface": "표면", "close up": "근접 촬영", "up": "위"}
    text = "a close up of a Scratch on the metal surface, scratched"
    assert glossary_korean(text, glossary) == "a 근접 촬영 of a 스크래치 on the 금속 표면, scratched"


def test_descriptions_combine_class_confidence_and_caption(params):
    settings = DescriptionParams()
    en, ko = describe("crack", 0.734, "a crack in a steel plate", params.ontology, settings)
    assert en == "Crack, confidence 73%. Caption: a crack in a steel plate"
    assert ko == "균열 (신뢰도 73%). 캡션: a 균열 in a 강철 판"
    en, ko = describe("ok", 0.5, None, params.ontology, settings)
    assert "Caption: none" in en and ko.startswith("양품") and "캡션: 없음" in ko


def test_description_template_with_unknown_placeholder_is_rejected():
    with pytest.raises(ValueError, match="placeholders"):
        DescriptionParams(template_ko="{label_kr} {confidence:.0%}")


def test_caption_policy_selection():
    scores = np.array([0.9, 0.3, 0.5])
    assert select_for_captions("low_confidence", scores, 0.5).tolist() == [False, True, False]
    assert select_for_captions("all", scores, 0.5).all()
    assert not select_for_captions("none", scores, 0.5).any()


@pytest.mark.parametrize("normalize", ["power_l2", "l2", "standard"])
def test_few_shot_is_out_of_fold_for_labelled_images(normalize):
    rng = np.random.default_rng(0)
    centres = {"scratch": np.array([5.0, 0, 0]), "dent": np.array([0, 5.0, 0]), "ok": np.array([0, 0, 5.0])}
    ids, rows, labels = [], [], {}
    for name, centre in centres.items():
        for i in range(8):
            image_id = f"{name}{i}"
            ids.append(image_id)
            rows.append(centre + rng.normal(scale=0.5, size=3))
            if i < 6:
                labels[image_id] = name
    embeddings = np.stack(rows)
    classes = ["scratch", "dent", "crack", "ok"]
    settings = FewShotParams(cv_folds=3, normalize=normalize)
    result = fit_predict(embeddings, ids, labels, classes, ["scratch", "dent", "ok"], settings)
    assert result.cv_accuracy == 1.0 and result.n_labels == 18
    assert result.per_class == {"scratch": 6, "dent": 6, "crack": 0, "ok": 6}
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0)
    assert (result.probabilities[:, classes.index("crack")] == 0).all()
    predicted = [classes[i] for i in result.probabilities.argmax(axis=1)]
    assert predicted == [image_id.rstrip("0123456789") for image_id in ids]
    assert result.labelled.sum() == 18 and not result.labelled[ids.index("ok7")]


def test_power_l2_gives_unit_rows_that_keep_signs_and_ignore_scale():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 16)) * rng.uniform(0.1, 50, size=(6, 1))
    x[5] = 0.0
    out = power_l2(x)
    np.testing.assert_allclose(np.linalg.norm(out[:5], axis=1), 1.0)
    assert (out[5] == 0).all() and np.isfinite(out).all()
    assert (np.sign(out) == np.sign(x)).all()
    np.testing.assert_allclose(power_l2(7.0 * x), out)
    np.testing.assert_allclose(power_l2(np.array([[4.0, -9.0, 0.0]])), [[2 / 13**0.5, -3 / 13**0.5, 0.0]])


def test_cap_per_class_is_seeded_and_bounded():
    labels = {f"i{n}": ("a" if n % 3 else "b") for n in range(30)}
    capped = cap_per_class(labels, 4, seed=1)
    assert sorted(capped.values()) == ["a"] * 4 + ["b"] * 4
    assert capped == cap_per_class(labels, 4, seed=1) and set(capped) <= set(labels)
    assert cap_per_class(labels, None, seed=1) == labels


def test_labels_resolve_by_path_and_drop_what_cannot_be_used(tmp_path):
    manifest = pd.DataFrame(
        {"image_id": ["id1", "id2", "id3"], "all_paths": [["a/1.png", "copy/1.png"], ["a/2.png"], ["b/3.png"]]}
    )
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "file,label\ncopy/1.png,scratch\na/2.png,dent\na/2.png,crack\nzz.png,ok\nb/3.png,\n",
        encoding="utf-8",
    )
    found = read_labels(csv, manifest, ["scratch", "dent", "crack", "ok"])
    assert found.labels == {"id1": "scratch"}
    assert found.dropped == {"conflicting_labels": 1, "no_label": 1, "not_in_manifest": 1}
    csv.write_text(csv.read_text(encoding="utf-8") + "b/3.png,rust\nb/3.png,rust\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"2 label\(s\) of classes not in the ontology: 'rust' \(2\)"):
        read_labels(csv, manifest, ["scratch", "dent", "crack", "ok"])
    consensus = tmp_path / "consensus.parquet"
    pd.DataFrame({"image_id": ["id2", "id3"], "label": ["ok", None]}).to_parquet(consensus)
    assert read_labels(consensus, manifest, ["ok"]).labels == {"id2": "ok"}
    # the agreement stage's consensus: a nullable text column whose undecided images hold pd.NA
    pd.DataFrame({"image_id": ["id2", "id3"], "label": pd.array(["ok", None], dtype="string")}).to_parquet(consensus)
    assert read_labels(consensus, manifest, ["ok"]).dropped == {"no_label": 1}
    (tmp_path / "bad.csv").write_text("file,klass\n1,2\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="no 'label' column"):
        read_labels(tmp_path / "bad.csv", manifest, ["ok"])


def test_cache_round_trip_and_namespaces(tmp_path):
    with PrelabelCache(tmp_path / "c") as cache:
        cache.put_embeddings("ns1", [("h1", np.arange(3, dtype=np.float32)), ("h2", np.ones(3))])
        cache.put_captions("cap", [("h1", "a dent")])
        cache.put_texts("t", [("a scratch", np.array([0.5, 0.5]))])
        cache.put_scalar("t", "logit_scale", 100.0)
    with PrelabelCache(tmp_path / "c") as cache:
        found = cache.get_embeddings("ns1", ["h1", "h2", "h3", "h1"])
        assert sorted(found) == ["h1", "h2"] and found["h1"].tolist() == [0.0, 1.0, 2.0]
        assert cache.get_embeddings("ns2", ["h1"]) == {}
        assert cache.get_captions("cap", ["h1", "h2"]) == {"h1": "a dent"}
        assert cache.get_texts("t", ["a scratch"])["a scratch"].tolist() == [0.5, 0.5]
        assert cache.get_scalar("t", "logit_scale") == 100.0 and cache.get_scalar("t", "other") is None


def test_metrics_json_is_plain(tmp_path):
    # the report must survive json round trips unchanged (DVC reads it)
    from curation.prelabel.stage import confidence_histogram

    histogram = confidence_histogram(np.array([0.05, 0.51, 0.52, 1.0]), 10)
    assert histogram["images"].sum() == 4 and histogram["images"].iloc[5] == 2 and histogram["images"].iloc[9] == 1
    assert json.loads(histogram.to_json())


class _FixedScorer:
    """A scorer that gives the same scores to every image (a stand-in for a new pre-labeler such as anomaly
    scoring) and records the previous scores it was shown."""

    name = "fixed"

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen: list[object] = []

    def score(self, batch: ScoreInput) -> Outcome:
        self.seen.append(batch.previous)
        probabilities = np.tile([0.75, 0.25, 0.0], (self.n, 1))
        return Outcome("done", ("fixed note",), Scores("zero_shot", probabilities, "fixed-v1", [None] * self.n))


def _separable(n_per_class: int = 4) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """Embeddings of two well-separated classes (a near +x, b near -x) and their labels."""
    rng = np.random.default_rng(0)
    centres = np.repeat([[4.0, 0.0, 0.0], [-4.0, 0.0, 0.0]], n_per_class, axis=0)
    embeddings = (centres + rng.normal(scale=0.1, size=centres.shape)).astype(np.float32)
    ids = [f"img{k}" for k in range(len(embeddings))]
    return embeddings, ids, {i: ("a" if k < n_per_class else "b") for k, i in enumerate(ids)}


def test_scorers_run_in_turn_and_a_scorer_without_scores_keeps_the_previous_ones():
    embeddings, ids, _ = _separable()
    fixed, notes = _FixedScorer(len(ids)), []
    few = FewShotScorer(None, PrelabelParams())  # no labels: reports why, gives no scores
    scores, reports = _run_scorers([fixed, few], embeddings, ids, ["a", "b", "c"], "enc@1", notes)
    assert fixed.seen == [None]
    assert scores is not None and scores.model_version == "fixed-v1" and scores.source == "zero_shot"
    assert reports == {"fixed": "done", "few_shot": {"status": "no_labels", "labels_source": None}}
    assert notes == ["fixed note", "few-shot skipped: no usable human labels (no consensus or prior labels file found)"]


def test_few_shot_scorer_replaces_only_when_it_can_predict_every_class():
    embeddings, ids, labels = _separable()
    settings = PrelabelParams(fewshot=FewShotParams(min_per_class=2, cv_folds=2))
    few = FewShotScorer(LabelSet(labels, "truth"), settings)

    notes: list[str] = []
    scores, reports = _run_scorers([few], embeddings, ids, ["a", "b"], "enc@1", notes)
    assert reports["few_shot"]["status"] == "used" and reports["few_shot"]["cv_accuracy"] == 1.0
    assert scores is not None and scores.source == "few_shot" and scores.model_version.startswith("enc@1+fewshot-")
    assert [["a", "b"][i] for i in scores.probabilities.argmax(axis=1)] == [labels[i] for i in ids]

    notes = []  # class c has no labels: few-shot could never predict it, so the previous scores stay
    scores, reports = _run_scorers([_FixedScorer(len(ids)), few], embeddings, ids, ["a", "b", "c"], "enc@1", notes)
    assert reports["few_shot"]["status"] == "reported_only"
    assert scores is not None and scores.model_version == "fixed-v1"
    assert any("c (0)" in note for note in notes)
