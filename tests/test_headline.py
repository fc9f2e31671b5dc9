"""DVC metrics are each stage's headline (metrics.json), not its full report."""

from __future__ import annotations

from pathlib import Path

import yaml

from curation.headline import HEADLINE, headline

ROOT = Path(__file__).resolve().parent.parent


def test_headline_picks_nested_numbers_and_leaves_out_what_is_absent() -> None:
    report = {
        "n_images": 120,
        "n_annotators": 4,
        "label": {"n_images": 24, "krippendorff_alpha": 0.61, "gwet_ac1": None, "prevalence": {"ok": 0.5}},
        "consensus": {"n_disputed": 2, "n_single": 96},
    }
    assert headline("agreement", report) == {
        "images": 120,
        "annotators": 4,
        "shared_images": 24,
        "krippendorff_alpha": 0.61,
        "disputed": 2,
        "unverified": 96,
    }  # gwet_ac1 (null: not measured) and severity (absent) are left out, never written as 0


def test_every_stage_metric_in_dvc_yaml_is_its_headline_file() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        metrics = [next(iter(m)) if isinstance(m, dict) else m for m in stage.get("metrics", [])]
        assert all(path.endswith("/metrics.json") for path in metrics), (name, metrics)
        if metrics:
            report = "prelabel" if name == "refine" else name
            assert report in HEADLINE and 3 <= len(HEADLINE[report]) <= 8, name
    total = sum(len(v) for v in HEADLINE.values())
    assert total < 80  # `dvc metrics show` stays a table a person can read (was 313 columns)
