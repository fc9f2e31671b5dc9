"""Benchmark: the agreement stage against the krippendorff package alone, on the same annotations.

Not a test: timings are noisy, so the script reports ratios measured in one run (rounds interleaved, medians).

    python scripts/bench_agreement.py                    # 100,000 images x 3 annotators, 1,000 bootstrap resamples
    python scripts/bench_agreement.py --images 10000 --rounds 1

Contenders, each on the same simulated annotations (ontology classes with `ok` dominating, 15% noise,
severity on defects):

- baseline: ``krippendorff.alpha`` once, nominal, on the 3 x N reliability matrix (the data already in memory);
- metrics: our agreement metrics on the class and severity (no bootstrap, no consensus);
- stage: the whole core ``agreement()`` with the params defaults (every metric for class and severity,
  1,000-resample bootstrap intervals, majority consensus, disputes, per-annotator views);
- stage + outputs: the stage plus ``write_agreement`` (parquet, CSVs, PNG plots and report.html).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from curation.agreement import metrics as M
from curation.agreement.stage import agreement, write_agreement
from schemas.params import load_params
from schemas.params_agreement import AgreementParams

ROOT = Path(__file__).resolve().parents[1]


def simulate(n_images: int, n_annotators: int, classes: list[str], severities: list[str], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    q = len(classes)
    prevalence = np.full(q, 0.3 / (q - 1))
    prevalence[classes.index("ok")] = 0.7
    truth = rng.choice(q, n_images, p=prevalence)
    labels = np.repeat(truth, n_annotators)
    noisy = rng.random(labels.size) < 0.15
    labels[noisy] = rng.integers(0, q, noisy.sum())
    names = np.asarray(classes, dtype=object)[labels]
    severity = np.asarray(severities, dtype=object)[rng.integers(0, len(severities), labels.size)]
    severity[names == "ok"] = None
    return pd.DataFrame(
        {
            "image_id": np.repeat([f"img{i:07d}" for i in range(n_images)], n_annotators),
            "annotator": np.tile([f"annotator{k}@example.com" for k in range(n_annotators)], n_images),
            "label": names,
            "severity": severity,
            "lead_time": rng.gamma(2.0, 6.0, labels.size),
        }
    )


def time_it(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--annotators", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    args = parser.parse_args()

    ontology = load_params(args.params).ontology
    classes, severities = ontology.class_names, ontology.severity_names
    frame = simulate(args.images, args.annotators, classes, severities, seed=0)
    settings = AgreementParams()
    codes, _, _ = M.ratings_matrix(frame, "label", classes)
    reliability = codes.T.astype(np.float64)  # what the krippendorff package takes: raters x units, NaN missing
    reliability[reliability == M.MISSING] = np.nan
    print(
        f"data: {args.images:,} images x {args.annotators} annotators = {len(frame):,} annotations; "
        f"{len(classes)} classes; bootstrap {settings.bootstrap} resamples"
    )

    import krippendorff

    def baseline() -> None:
        krippendorff.alpha(
            reliability_data=reliability, value_domain=np.arange(len(classes)), level_of_measurement="nominal"
        )

    def metrics_only() -> None:
        agreement(frame, classes=classes, severities=severities, settings=settings.model_copy(update={"bootstrap": 0}))

    def stage() -> None:
        agreement(frame, classes=classes, severities=severities, settings=settings)

    with tempfile.TemporaryDirectory() as tmp:

        def stage_and_outputs() -> None:
            result = agreement(frame, classes=classes, severities=severities, settings=settings)
            write_agreement(result, Path(tmp) / "out")

        contenders = {
            "krippendorff.alpha alone": baseline,
            "our metrics (no bootstrap)": metrics_only,
            "agreement() stage core": stage,
            "stage + outputs and report": stage_and_outputs,
        }
        times: dict[str, list[float]] = {name: [] for name in contenders}
        stage()  # warm-up: imports (statsmodels, sklearn, matplotlib) are not what is measured
        for _ in range(args.rounds):
            for name, fn in contenders.items():
                times[name].append(time_it(fn))

    base = statistics.median(times["krippendorff.alpha alone"])
    print(f"{'contender':32} {'median s':>9} {'x krippendorff':>15}   (rounds: {args.rounds})")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:32} {median:9.3f} {median / base:15.1f}")


if __name__ == "__main__":
    main()
