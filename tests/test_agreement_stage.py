"""Consensus, Dawid-Skene, tie policy, adjudication, quality views, bad input, outputs and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from curation.agreement.cli import agreement_command
from curation.agreement.stage import AnnotationsError, agreement, write_agreement
from schemas.params import Params
from schemas.params_agreement import AgreementParams
from schemas.records import Consensus, columns

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["scratch", "contamination", "dent", "crack", "discoloration", "ok"]
SEVERITIES = ["minor", "major", "critical"]


def settings(**update: object) -> AgreementParams:
    return AgreementParams(bootstrap=0).model_copy(update=update)


def frame(*rows: tuple) -> pd.DataFrame:
    """Rows of (image_id, annotator, label[, severity])."""
    names = ["image_id", "annotator", "label", "severity"]
    return pd.DataFrame([dict(zip(names, row, strict=False)) for row in rows])


def run(annotations: pd.DataFrame, **update: object):
    predictions = update.pop("predictions", None)
    return agreement(
        annotations, classes=CLASSES, severities=SEVERITIES, settings=settings(**update), predictions=predictions
    )


def simulated(seed: int, n: int = 300) -> tuple[pd.DataFrame, np.ndarray]:
    """3 careful annotators on half the images, 1 on the rest; `ok` dominates like real defect data."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(len(CLASSES), n, p=[0.06] * 5 + [0.7])
    rows = []
    for i in range(n):
        for who in rng.choice(["a", "b", "c", "d"], 3 if i < n // 2 else 1, replace=False):
            label = truth[i] if rng.random() > 0.15 else rng.integers(len(CLASSES))
            severity = None if label == 5 else SEVERITIES[rng.integers(3)]
            rows.append((f"img{i:04d}", who, CLASSES[label], severity, float(rng.gamma(2, 5)), i))
    out = pd.DataFrame(rows, columns=["image_id", "annotator", "label", "severity", "lead_time", "task_id"])
    return out, truth


# ---------------------------------------------------------------- consensus and tie policy


def test_majority_consensus_invariants() -> None:
    annotations, _ = simulated(0)
    result = run(annotations)
    consensus = result.consensus
    assert list(consensus.columns) == columns(Consensus)
    assert consensus["image_id"].is_unique and len(consensus) == annotations["image_id"].nunique()
    for row in consensus.to_dict("records"):
        Consensus.model_validate(row)
    given = annotations.groupby("image_id")["label"].agg(set)
    decided = consensus.dropna(subset=["label"])
    assert all(label in given[i] for i, label in zip(decided["image_id"], decided["label"], strict=True))
    single = consensus["n_annotators"] == 1
    assert single.any() and (~single).any()
    # one reviewer is not a measurement: method single, agreement null (never 1.0)
    assert (consensus.loc[single, "method"] == "single").all() and consensus.loc[single, "agreement"].isna().all()
    assert consensus.loc[~single, "agreement"].between(0, 1).all()
    assert (consensus.loc[~single, "method"] == "majority").all()
    # agreement is the share of annotators giving the consensus label
    votes = annotations.merge(decided[["image_id", "label"]], on="image_id", suffixes=("", "_c"))
    share = (votes["label"] == votes["label_c"]).groupby(votes["image_id"]).mean()
    shared = decided[decided["n_annotators"] >= 2]
    np.testing.assert_allclose(shared.set_index("image_id")["agreement"], share.reindex(shared["image_id"]))


@pytest.mark.parametrize(
    ("policy", "prelabel", "expected"),
    [
        ("dispute", None, None),
        ("ontology_order", None, "scratch"),  # scratch is listed before dent
        ("prediction", "dent", "dent"),
        ("prediction", "ok", None),  # pre-label not among the tied classes
    ],
)
def test_tie_policy(policy: str, prelabel: str | None, expected: str | None) -> None:
    annotations = frame(("t", "a", "dent"), ("t", "b", "scratch"), ("u", "a", "ok"), ("u", "b", "ok"))
    predictions = None
    if prelabel:
        predictions = pd.DataFrame({"image_id": ["t"], "label": [prelabel], "source": ["zero_shot"]})
        for c in CLASSES:
            predictions[f"p_{c}"] = 1.0 if c == prelabel else 0.0
    result = run(annotations, tie_policy=policy, predictions=predictions)
    row = result.consensus.set_index("image_id").loc["t"]
    assert row["label"] == expected and row["disputed"]  # a tie is a dispute whatever the policy
    disputes = result.disputes.set_index("image_id")
    assert list(disputes.index) == ["t"] and disputes.loc["t", "reason"] == "tie"
    assert disputes.loc["t", "votes"] == "dent=1; scratch=1" or disputes.loc["t", "votes"] == "scratch=1; dent=1"
    assert disputes.loc["t", "ratings"] == "a=dent; b=scratch"
    assert not result.consensus.set_index("image_id").loc["u", "disputed"]


def test_low_agreement_is_a_dispute_and_severity_is_the_upper_median() -> None:
    annotations = frame(
        ("v", "a", "dent", "minor"),
        ("v", "b", "dent", "critical"),
        ("v", "c", "scratch", "major"),
        ("v", "d", "crack", "major"),
        ("v", "e", "ok"),
        ("w", "a", "dent", "minor"),
        ("w", "b", "dent", "major"),
        ("w", "c", "dent", "major"),
    )
    result = run(annotations, min_agreement=0.5)
    consensus = result.consensus.set_index("image_id")
    assert consensus.loc["v", "label"] == "dent" and consensus.loc["v", "agreement"] == pytest.approx(0.4)
    assert (
        consensus.loc["v", "disputed"] and result.disputes.set_index("image_id").loc["v", "reason"] == "low_agreement"
    )
    assert consensus.loc["v", "severity"] == "critical"  # dent voters said minor, critical: the more severe middle
    assert consensus.loc["w", "severity"] == "major" and not consensus.loc["w", "disputed"]


def test_dawid_skene_recovers_truth_with_noisy_annotators() -> None:
    """Two careful annotators and three who guess most of the time: majority vote fails, Dawid-Skene does not."""
    rng = np.random.default_rng(3)
    n = 400
    truth = rng.integers(0, 5, n)
    accuracy = {"good1": 0.95, "good2": 0.95, "noisy1": 0.25, "noisy2": 0.25, "noisy3": 0.25}
    rows = []
    for i in range(n):
        for who, acc in accuracy.items():
            label = truth[i] if rng.random() < acc else rng.integers(0, 5)
            rows.append((f"i{i}", who, CLASSES[label]))
    annotations = frame(*rows)
    expected = pd.Series([CLASSES[t] for t in truth], index=[f"i{i}" for i in range(n)])

    def accuracy_of(result) -> float:
        labels = result.consensus.set_index("image_id")["label"]
        return float((labels.reindex(expected.index) == expected).mean())

    ds = run(annotations, consensus="dawid_skene")
    majority = run(annotations, consensus="majority", tie_policy="dispute")
    assert (ds.consensus["method"] == "dawid_skene").all()
    assert accuracy_of(ds) > 0.95
    assert accuracy_of(ds) > accuracy_of(majority) + 0.1
    assert ds.disputes["posterior"].between(0, 1).all()
    # the per-annotator view finds the noisy annotators too
    loo = ds.per_annotator.set_index("annotator")["loo_agreement"]
    assert loo[["good1", "good2"]].min() > loo[["noisy1", "noisy2", "noisy3"]].max()


def test_adjudication_overrides_consensus() -> None:
    annotations = frame(
        ("t", "a", "dent"),
        ("t", "b", "scratch"),
        ("t", "boss", "crack", "major"),
        ("u", "a", "ok"),
        ("u", "b", "dent"),
        ("u", "c", "dent"),
    )
    annotations["adjudicated"] = [False, False, False, False, False, False]
    extra = pd.DataFrame(
        [
            {"image_id": "u", "annotator": "lead", "label": "ok", "adjudicated": True, "updated_at": "2026-01-02"},
            {
                "image_id": "u",
                "annotator": "lead2",
                "label": "scratch",
                "adjudicated": True,
                "updated_at": "2026-01-01",
            },
        ]
    )
    result = run(pd.concat([annotations, extra], ignore_index=True), adjudicators=["boss"])
    consensus = result.consensus.set_index("image_id")
    assert consensus.loc["t", ["label", "severity", "method"]].tolist() == ["crack", "major", "adjudicated"]
    assert consensus.loc["t", "agreement"] == 0.0 and consensus.loc["t", "n_annotators"] == 2
    assert consensus.loc["u", "label"] == "ok"  # the latest adjudication wins
    assert consensus.loc["u", "agreement"] == pytest.approx(1 / 3)
    assert not consensus["disputed"].any() and result.disputes.empty
    assert result.metrics["n_adjudications"] == 3 and result.metrics["n_annotators"] == 3
    assert result.metrics["consensus"]["n_adjudicated"] == 2
    # adjudicators are left out of agreement: a, b, c only
    assert set(result.per_annotator["annotator"]) == {"a", "b", "c"}


def test_description_is_the_latest_text_of_an_agreeing_reviewer_or_the_adjudicators() -> None:
    rows = [
        # image v: b and c agree on dent; c wrote last; a dissents with a newer text that must not win
        ("v", "a", "ok", "clean", "2026-03-09"),
        ("v", "b", "dent", "dent, left", "2026-03-01"),
        ("v", "c", "dent", "dent, upper left", "2026-03-02"),
        # image w: only blank texts -> none
        ("w", "a", "crack", "  ", "2026-03-01"),
        ("w", "b", "crack", None, "2026-03-02"),
        # image x: the adjudicator decides, and their text (even none) is the final word
        ("x", "a", "dent", "dent?", "2026-03-01"),
        ("x", "b", "scratch", "scratch", "2026-03-01"),
        ("x", "boss", "scratch", "long scratch", "2026-03-03"),
    ]
    rows = pd.DataFrame(rows, columns=["image_id", "annotator", "label", "description", "updated_at"])
    consensus = run(rows, adjudicators=["boss"]).consensus.set_index("image_id")
    assert consensus.loc["v", ["label", "description"]].tolist() == ["dent", "dent, upper left"]
    assert consensus.loc["w", "description"] is None
    assert consensus.loc["x", ["label", "method", "description"]].tolist() == ["scratch", "adjudicated", "long scratch"]
    without = run(rows.drop(columns="description"), adjudicators=["boss"]).consensus
    assert without["description"].isna().all()
    assert list(without.columns) == [consensus.index.name, *consensus.columns]


# ---------------------------------------------------------------- per-annotator and pre-label quality


def test_per_annotator_leave_one_out_matches_a_loop() -> None:
    annotations, _ = simulated(1)
    result = run(annotations)
    table = result.per_annotator.set_index("annotator")
    by_image = annotations.groupby("image_id")
    for who in ["a", "b", "c", "d"]:
        agree = compared = ties = 0
        for _, group in by_image:
            if who not in set(group["annotator"]) or len(group) < 2:
                continue
            own = group.loc[group["annotator"] == who, "label"].item()
            others = group.loc[group["annotator"] != who, "label"].value_counts()
            if (others == others.max()).sum() > 1:
                ties += 1
                continue
            compared += 1
            agree += others.idxmax() == own
        assert table.loc[who, "loo_n_images"] == compared and table.loc[who, "loo_n_ties"] == ties
        assert abs(table.loc[who, "loo_agreement"] - agree / compared) < 1e-12
        median = annotations.loc[annotations["annotator"] == who, "lead_time"].median()
        assert table.loc[who, "median_lead_time_s"] == pytest.approx(median)
    assert len(result.confusion_annotators) == table["loo_n_images"].sum()


def test_prelabel_quality_matches_hand_computation() -> None:
    annotations, truth = simulated(2, n=200)
    rng = np.random.default_rng(9)
    probs = rng.dirichlet(np.ones(len(CLASSES)), len(truth))
    probs[np.arange(len(truth)), truth] += 1.5
    probs /= probs.sum(axis=1, keepdims=True)
    predictions = pd.DataFrame({"image_id": [f"img{i:04d}" for i in range(len(truth))], "source": "zero_shot"}).assign(
        label=[CLASSES[k] for k in probs.argmax(axis=1)]
    )
    for k, c in enumerate(CLASSES):
        predictions[f"p_{c}"] = probs[:, k]
    result = run(annotations, predictions=predictions, calibration_bins=10)
    got = result.metrics["prelabel"]["zero_shot"]

    consensus = result.consensus.dropna(subset=["label"]).set_index("image_id")["label"]
    pred = predictions.set_index("image_id").loc[consensus.index]
    correct = (pred["label"] == consensus).to_numpy()
    assert got["n_images"] == len(consensus)
    assert abs(got["accuracy"] - correct.mean()) < 1e-12
    f1s = []
    for c in sorted(set(consensus) | set(pred["label"])):
        tp = ((pred["label"] == c) & (consensus == c)).sum()
        fp = ((pred["label"] == c) & (consensus != c)).sum()
        fn = ((pred["label"] != c) & (consensus == c)).sum()
        f1s.append(2 * tp / (2 * tp + fp + fn))
    assert abs(got["macro_f1"] - np.mean(f1s)) < 1e-12
    confidence = probs.max(axis=1)[[int(i[3:]) for i in consensus.index]]
    ece = 0.0
    for b in range(10):
        inside = (confidence > b / 10) & (confidence <= (b + 1) / 10)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    assert abs(got["ece"] - ece) < 1e-12
    joined = annotations.merge(predictions[["image_id", "label"]], on="image_id", suffixes=("", "_pre"))
    assert abs(got["accepted_unchanged"] - (joined["label"] == joined["label_pre"]).mean()) < 1e-12
    assert len(result.confusion_prelabel) == len(consensus)
    assert result.calibration["count"].sum() == len(consensus)


# ---------------------------------------------------------------- bad input and degenerate data


def test_unknown_labels_name_rows_and_values() -> None:
    annotations = frame(("a", "x", "ok"), ("a", "y", "Scratch"), ("b", "x", "rust"), ("b", "y", "rust"))
    with pytest.raises(AnnotationsError) as err:
        run(annotations)
    message = str(err.value)
    assert "'Scratch' in row 2" in message and "'rust' in rows 3, 4" in message and "ontology.classes" in message


def test_unknown_severity_missing_columns_empty_fields_duplicates() -> None:
    with pytest.raises(AnnotationsError, match=r"unknown severity value\(s\): 'huge' in row 1"):
        run(frame(("a", "x", "dent", "huge")))
    with pytest.raises(AnnotationsError, match=r"missing column\(s\) \['annotator'\]"):
        run(pd.DataFrame({"image_id": ["a"], "label": ["ok"]}))
    with pytest.raises(AnnotationsError, match="empty annotator in row 2"):
        run(frame(("a", "x", "ok"), ("a", None, "ok")))
    with pytest.raises(AnnotationsError, match=r"same image more than once in rows 1, 2 \(x on a\)"):
        run(frame(("a", "x", "ok"), ("a", "x", "dent"), ("a", "y", "ok")))


def test_single_annotator_reports_undefined_metrics() -> None:
    result = run(frame(("a", "solo", "ok"), ("b", "solo", "dent", "minor")))
    label = result.metrics["label"]
    assert label["n_images"] == 0
    for key in ("percent_agreement", "fleiss_kappa", "krippendorff_alpha", "gwet_ac1", "cohen_kappa_mean"):
        assert label[key] is None and label[f"{key}_note"], key
        assert f"label.{key}" in result.metrics["undefined"]
    assert any("only one annotator (solo)" in m for m in result.messages)
    assert (result.consensus["method"] == "single").all() and result.consensus["label"].tolist() == ["ok", "dent"]


def test_no_overlap_names_the_annotators(tmp_path: Path) -> None:
    result = run(frame(("a", "x", "ok"), ("b", "y", "dent")))
    assert any("x, y never labelled the same image" in m for m in result.messages)
    assert result.metrics["label"]["krippendorff_alpha"] is None
    write_agreement(result, tmp_path)
    saved = json.loads((tmp_path / "agreement.json").read_text())
    assert saved["label"]["krippendorff_alpha"] is None and saved["label"]["krippendorff_alpha_note"]
    assert "NaN" not in (tmp_path / "agreement.json").read_text()


def test_empty_input_writes_empty_outputs(tmp_path: Path) -> None:
    empty = pd.DataFrame(columns=["image_id", "annotator", "label", "severity"])
    result = run(empty)
    assert any("no annotations yet" in m for m in result.messages)
    write_agreement(result, tmp_path)
    consensus = pd.read_parquet(tmp_path / "consensus.parquet")
    assert list(consensus.columns) == columns(Consensus) and consensus.empty
    assert pd.read_csv(tmp_path / "disputes.csv").empty
    metrics = json.loads((tmp_path / "agreement.json").read_text())
    assert metrics["n_annotations"] == 0 and metrics["label"]["gwet_ac1"] is None
    assert (tmp_path / "report.html").exists()


# ---------------------------------------------------------------- outputs and CLI


def test_outputs_are_complete_and_report_is_self_contained(tmp_path: Path) -> None:
    annotations, _ = simulated(4)
    result = agreement(
        annotations, classes=CLASSES, severities=SEVERITIES, settings=AgreementParams(bootstrap=200, seed=1)
    )
    write_agreement(result, tmp_path)
    metrics = json.loads((tmp_path / "agreement.json").read_text())
    for key in ("percent_agreement", "fleiss_kappa", "krippendorff_alpha", "gwet_ac1"):
        value, low, high = (metrics["label"][k] for k in (key, f"{key}_ci_low", f"{key}_ci_high"))
        assert -1 <= low <= value <= high <= 1, key
    assert metrics["severity"]["krippendorff_alpha_ordinal_ci_low"] is not None
    per_class = pd.read_csv(tmp_path / "per_class.csv")
    assert per_class["class"].tolist() == CLASSES and per_class["prevalence"].sum() == pytest.approx(1)
    confusion = pd.read_csv(tmp_path / "confusion_annotators.csv")
    assert list(confusion.columns[:2]) == ["actual", "predicted"] and set(confusion["actual"]) <= set(CLASSES)
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 5 and "http://" not in page and "https://" not in page
    assert (tmp_path / "plots" / "per_class.png").stat().st_size > 1000


def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command("agreement")(agreement_command)
    app.command("noop")(lambda: None)  # two commands, so typer keeps the subcommand name
    return app


def test_cli_writes_outputs_and_reports_bad_labels(tmp_path: Path, params: Params) -> None:
    annotations, _ = simulated(5, n=120)
    pull = tmp_path / "pull"
    pull.mkdir()
    annotations.to_parquet(pull / "annotations.parquet")
    out = tmp_path / "out"
    args = ["agreement", str(pull), str(out), "--params", str(ROOT / "params.yaml")]
    result = CliRunner().invoke(cli_app(), args)
    assert result.exit_code == 0, result.output
    assert "Gwet's AC1" in result.output
    flat = " ".join(result.output.split())
    assert "no DVC plot data for confusion_prelabel.csv, calibration.csv" in flat  # no --predictions: said once
    assert not (out / "calibration.csv").exists() and (out / "confusion_annotators.csv").exists()
    assert {"agreement.json", "consensus.parquet", "disputes.csv", "per_class.csv", "per_annotator.csv"} <= {
        p.name for p in out.iterdir()
    }
    # the DVC metrics: a few headline numbers from agreement.json, not all of them
    headline = json.loads((out / "metrics.json").read_text())
    full = json.loads((out / "agreement.json").read_text())
    assert headline["gwet_ac1"] == full["label"]["gwet_ac1"] and headline["images"] == full["n_images"]
    assert headline["unverified"] == full["consensus"]["n_single"] > 0 and len(headline) <= 10

    bad = tmp_path / "bad.csv"
    annotations.assign(label=annotations["label"].replace({"dent": "Dent"})).to_csv(bad, index=False)
    result = CliRunner().invoke(
        cli_app(), ["agreement", str(bad), str(tmp_path / "o2"), "--params", str(ROOT / "params.yaml")]
    )
    assert result.exit_code == 1 and "unknown label value(s): 'Dent'" in result.output
    assert not (tmp_path / "o2").exists()

    result = CliRunner().invoke(cli_app(), ["agreement", str(tmp_path / "nope.csv"), str(out)])
    assert result.exit_code == 1 and "file not found" in result.output


def test_cli_empty_file_writes_empty_outputs(tmp_path: Path) -> None:
    empty = tmp_path / "annotations.csv"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli_app(), ["agreement", str(empty), str(out), "--params", str(ROOT / "params.yaml")])
    assert result.exit_code == 0, result.output
    assert "no annotations yet" in result.output
    assert pd.read_parquet(out / "consensus.parquet").empty
    assert json.loads((out / "agreement.json").read_text())["n_annotations"] == 0


# ---------------------------------------------------------------- small samples, degenerate intervals, ids, CSV


def test_one_shared_image_is_insufficient_not_a_coefficient(tmp_path: Path) -> None:
    """One image rated by two annotators used to give Fleiss -1.0, alpha 0.0, AC1 -0.111 with [x, x] intervals."""
    rows = [("shared", "a", "dent", "minor"), ("shared", "b", "scratch", "major")]
    rows += [(f"solo{i}", "ab"[i % 2], "ok") for i in range(30)]
    result = agreement(frame(*rows), classes=CLASSES, severities=SEVERITIES, settings=AgreementParams(bootstrap=200))
    for variable in ("label", "severity"):
        block = result.metrics[variable]
        keys = ["percent_agreement", "fleiss_kappa", "krippendorff_alpha", "gwet_ac1", "cohen_kappa_mean"]
        for key in keys + (["krippendorff_alpha_ordinal"] if variable == "severity" else []):
            assert block[key] is None, (variable, key)
            assert block[f"{key}_note"].startswith("insufficient: 1 shared image, fewer than"), (variable, key)
            assert f"{variable}.{key}" in result.metrics["undefined"]
        assert not any(key.endswith(("_ci_low", "_ci_high")) for key in block)
        assert block["status"] == "insufficient" and block["n_images"] == 1 and block["min_shared_images"] == 20
    assert any("label: only 1 image(s) rated by two or more" in m for m in result.messages)
    assert result.cohen_kappa["kappa"].isna().all() and result.cohen_kappa["note"].str.contains("insufficient").all()
    assert result.per_class["specific_agreement"].isna().all() and result.per_class["kappa_one_vs_rest"].isna().all()
    assert result.per_class["note"].str.startswith("insufficient").all()

    write_agreement(result, tmp_path)
    text = (tmp_path / "agreement.json").read_text()
    assert "NaN" not in text and json.loads(text)["label"]["status"] == "insufficient"
    # nothing to draw: no plot data file, and agreement.json says why
    assert not (tmp_path / "per_class.csv").exists() and not (tmp_path / "calibration.csv").exists()
    why = json.loads(text)["plots_not_written"]
    assert why["per_class.csv"].startswith("no agreement per class: insufficient: 1 shared image")
    assert "no pre-labels" in why["confusion_prelabel.csv"]
    page = (tmp_path / "report.html").read_text()
    assert "insufficient (1 shared &lt; 20)" in page


@pytest.mark.parametrize(("n_shared", "status"), [(19, "insufficient"), (20, "ok")])
def test_min_shared_images_threshold(n_shared: int, status: str) -> None:
    rng = np.random.default_rng(0)
    rows = [
        (f"i{i}", who, CLASSES[int(rng.integers(len(CLASSES)))]) for i in range(n_shared) for who in ("a", "b", "c")
    ]
    label = run(frame(*rows)).metrics["label"]
    assert label["status"] == status and label["n_images"] == n_shared
    assert (label["gwet_ac1"] is None) == (status == "insufficient")
    assert (label["cohen_kappa_mean"] is None) == (status == "insufficient")  # each pair shares n_shared images


def test_zero_width_bootstrap_intervals_are_omitted_with_a_reason(tmp_path: Path) -> None:
    """Every annotator agrees on every image: each resample gives 1.0, and [1.0, 1.0] is no interval."""
    rows = [(f"i{i}", who, CLASSES[i % 3]) for i in range(30) for who in ("a", "b")]
    result = agreement(frame(*rows), classes=CLASSES, severities=SEVERITIES, settings=AgreementParams(bootstrap=100))
    label = result.metrics["label"]
    assert label["gwet_ac1"] == 1.0 and label["krippendorff_alpha"] == 1.0
    for key in ("percent_agreement", "fleiss_kappa", "krippendorff_alpha", "gwet_ac1"):
        assert label[f"{key}_ci_low"] is None and label[f"{key}_ci_high"] is None, key
        assert "zero-width interval" in label[f"{key}_ci_low_note"], key
        assert f"label.{key}_ci_low" in result.metrics["undefined"]
    assert label["status"] == "ok"
    table = result.per_class.set_index("class")
    assert table.loc["scratch", ["specific_agreement_ci_low", "specific_agreement_ci_high"]].isna().all()
    assert "zero width" in table.loc["scratch", "note"]
    write_agreement(result, tmp_path)
    assert "NaN" not in (tmp_path / "agreement.json").read_text()


def test_annotator_ids_are_trimmed_and_compared_case_insensitively() -> None:
    annotations = frame(
        ("i1", "alice", "dent"),
        ("i1", "bob", "dent"),
        ("i2", "alice ", "ok"),
        ("i2", "Bob", "ok"),
        ("i3", " ALICE", "crack"),
        ("i3", "boss", "scratch"),
    )
    result = run(annotations, adjudicators=[" Boss "])
    assert result.metrics["n_annotators"] == 2
    assert sorted(result.per_annotator["annotator"]) == ["alice", "bob"]
    assert result.consensus.set_index("image_id").loc["i3", "method"] == "adjudicated"
    merged = [m for m in result.messages if "are one annotator" in m]
    assert merged == [
        "annotator ids ' ALICE', 'alice', 'alice ' are one annotator 'alice' (ids are compared trimmed and "
        "case-insensitively)",
        "annotator ids 'Bob', 'bob' are one annotator 'bob' (ids are compared trimmed and case-insensitively)",
    ]
    with pytest.raises(AnnotationsError, match=r"same image more than once in rows 1, 2 \(alice on i1\)"):
        run(frame(("i1", "alice", "dent"), ("i1", "Alice ", "ok")))
    with pytest.raises(AnnotationsError, match="empty annotator in row 2"):
        run(frame(("i1", "alice", "dent"), ("i1", "   ", "ok")))


@pytest.mark.parametrize("long_line", [2, 4])
def test_csv_row_with_too_many_fields_is_named(tmp_path: Path, long_line: int) -> None:
    """An unquoted comma adds a field; on the first record pandas used to shift every column ('empty annotator')."""
    lines = ["image_id,annotator,label,severity", "a,x,ok,", "b,y,dent,minor", '"c, left",z,ok,']
    lines[long_line - 1] = "d,x,dent,minor,left side"
    path = tmp_path / "annotations.csv"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli_app(), ["agreement", str(path), str(out), "--params", str(ROOT / "params.yaml")])
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert f"{path}: line {long_line} (record {long_line - 1} after the header) has 5 fields, the header has 4" in (
        message
    )
    assert "must be quoted" in message and not out.exists()


def test_csv_with_quoted_commas_and_line_breaks_reads(tmp_path: Path) -> None:
    path = tmp_path / "annotations.csv"
    path.write_text('image_id,annotator,label,description\na,x,dent,"left, near\nthe edge"\na,y,dent,\n')
    from curation.agreement.stage import read_input
    from schemas.records import Annotation

    table = read_input(path, Annotation, "annotations.parquet")
    assert table["description"].tolist()[0] == "left, near\nthe edge" and len(table) == 2


def test_progress_total_counts_the_extra_ac1_pass() -> None:
    """Half the images are rated once, so AC1's bootstrap (every rated image) is a second pass per variable."""
    annotations, _ = simulated(6)
    started: list[int] = []
    done: list[int] = []
    result = agreement(
        annotations,
        classes=CLASSES,
        severities=SEVERITIES,
        settings=AgreementParams(bootstrap=100),
        on_start=started.append,
        on_progress=done.append,
    )
    assert result.metrics["label"]["status"] == result.metrics["severity"]["status"] == "ok"
    assert started == [sum(done)] == [100 * 2 * 2]


# ---------------------------------------------------------------- the report a person reads


def test_report_says_what_to_do_next_with_readable_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    truth = rng.choice(CLASSES, 40)
    rows = []
    for i, label in enumerate(truth):  # 30 shared images; "sloppy" is wrong on every third of them
        for who in ("ann", "bob", "sloppy"):
            given = CLASSES[(CLASSES.index(label) + 1) % len(CLASSES)] if who == "sloppy" and i % 3 == 0 else label
            rows.append((f"img{i:02d}", who, given))
    rows = [r for r in rows if int(r[0][3:]) < 30 or r[1] == "ann"]  # the last 10 images: one reviewer
    rows += [("tie", "ann", "dent"), ("tie", "bob", "scratch")]
    result = agreement(frame(*rows), classes=CLASSES, severities=SEVERITIES, settings=AgreementParams(bootstrap=50))
    result.metrics["provenance"] = {
        "annotations": "pull/annotations.parquet",
        "annotations_sha256": "ab12",
        "params_sha256": "cd34",
    }
    write_agreement(result, tmp_path)
    page = (tmp_path / "report.html").read_text()
    actions = page[page.index("What to do next") : page.index("</ol>")]
    assert "Adjudicate 1 disputed image(s)" in actions and "tie" in actions
    assert "Retrain sloppy" in actions and "Retrain ann" not in actions and "Retrain bob" not in actions
    assert "10 of 41 images (24%) were labelled by one reviewer" in actions
    assert "dataset version (annotations SHA-256) <code>ab12</code>" in page and "<code>cd34</code>" in page
    assert "Krippendorff (2004)" in page and "Landis &amp; Koch (1977)" in page
    for raw in ("loo_agreement", "kappa_one_vs_rest_ci_low", "n_shared_images"):
        assert f"<th>{raw}</th>" not in page
    assert "<th>agrees with the others&#x27; majority</th>" in page
    assert "No pre-labels given (--predictions)." in page


@pytest.mark.parametrize(
    ("key", "value", "reading"),
    [
        ("krippendorff_alpha", 0.81, "reliable"),
        ("krippendorff_alpha", 0.70, "tentative conclusions only"),
        ("krippendorff_alpha", 0.60, "unreliable: do not use"),
        ("fleiss_kappa", 0.65, "substantial"),
        ("gwet_ac1", 0.45, "moderate"),
        ("gwet_ac1", 0.10, "slight"),
        ("fleiss_kappa", -0.2, "poor"),
        ("gwet_ac1", None, "not measured"),
    ],
)
def test_readings_follow_the_published_bands(key: str, value: float | None, reading: str) -> None:
    from curation.agreement.report import band

    assert band(key, value)[0] == reading
