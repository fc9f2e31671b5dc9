"""Benchmark: build the FiftyOne dataset from synthetic stage outputs for N images (default 100,000).

Reports the whole build (samples in batches, similarity index, uniqueness, evaluation, mistakenness, saved views)
and two ratios measured in this run on the same records: batched ``add_samples`` vs one ``add_sample`` call per
image, and our vectorised mistakenness vs ``fiftyone.brain.compute_mistakenness`` (per-sample saves).
Uses its own mongod in a temp folder, removed at the end. Image files need not exist: metadata comes from the
manifest.

    python scripts/bench_browse.py --n 100000 --dim 512
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from curation.browse import database
from curation.browse.brain import add_mistakenness
from curation.browse.build import build_dataset
from curation.browse.inputs import BrowseInputs
from schemas.params import load_params
from schemas.params_browse import BrowseParams


def synthetic(n: int, dim: int, classes: list[str], seed: int = 0) -> BrowseInputs:
    rng = np.random.default_rng(seed)
    ids = [f"{i:016x}" for i in range(n)]
    groups = [ids[i - i % 3] if i % 50 < 3 else ids[i] for i in range(n)]  # some near-duplicate triples
    manifest = pd.DataFrame(
        {
            "image_id": ids,
            "path": [f"/nonexistent/bench/{i}.png" for i in ids],
            "width": 256,
            "height": 256,
            "size_bytes": 20_000,
            "format": "PNG",
            "dup_group": groups,
            "meta_line": rng.choice(["line-1", "line-2"], n),
        }
    )
    manifest["dup_group_size"] = manifest.groupby("dup_group")["image_id"].transform("size")
    p = rng.dirichlet(np.full(len(classes), 0.5), size=n)
    predictions = pd.DataFrame(
        {"image_id": ids, "label": [classes[i] for i in p.argmax(1)], "score": p.max(1), "caption": "a caption"}
    )
    for k, name in enumerate(classes):
        predictions[f"p_{name}"] = p[:, k]
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    embeddings = pd.DataFrame({"image_id": ids, "embedding": list(vectors)})
    annotations = pd.DataFrame(
        {
            "image_id": np.repeat(ids, 2),
            "annotator": ["a@x", "b@x"] * n,
            "label": [classes[i] for i in rng.integers(0, len(classes), 2 * n)],
        }
    )
    agreement = rng.choice([1.0, 0.5], n)
    consensus = pd.DataFrame(
        {
            "image_id": ids,
            "label": [classes[i] for i in rng.integers(0, len(classes), n)],
            "agreement": agreement,
            "disputed": agreement < 1,
        }
    )
    splits = pd.DataFrame({"image_id": ids, "split": rng.choice(["train", "val", "test"], n, p=[0.7, 0.2, 0.1])})
    return BrowseInputs(manifest, predictions, embeddings, annotations, consensus, splits)


def _tick(added: dict, start: float, k: int) -> None:
    added["t"] = time.perf_counter() - start
    added["n"] = added.get("n", 0) + k
    print(f"  {added['n']:,} samples added after {added['t']:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512, help="embedding size (CLIP ViT-B/32: 512)")
    parser.add_argument("--baseline-n", type=int, default=2_000, help="images for the two baseline comparisons")
    args = parser.parse_args()
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    classes = load_params("params.yaml").ontology.class_names
    root = Path(tempfile.mkdtemp(prefix="bench-browse-"))
    try:
        database.use(database.start(root / ".fiftyone"))
        import fiftyone as fo
        import fiftyone.brain as fob

        t0 = time.perf_counter()
        inputs = synthetic(args.n, args.dim, classes)
        print(f"synthetic records: {time.perf_counter() - t0:.1f} s", flush=True)
        settings = BrowseParams(db_dir=root / ".fiftyone")
        added = {"t": 0.0}
        start = time.perf_counter()
        summary = build_dataset(
            inputs,
            name="bench-full",
            version="bench",
            class_names=classes,
            settings=settings,
            base_dir=root,
            on_progress=lambda k: _tick(added, start, k),
        )
        total = time.perf_counter() - start
        print(
            f"full build, {args.n:,} images, {args.dim}-d embeddings: {total:.1f} s "
            f"(samples added after {added['t']:.1f} s; brain runs, evaluation, views {total - added['t']:.1f} s)"
        )
        print(f"  {args.n / total:,.0f} images/s overall; views: {summary.views}")

        # baseline 1: one add_sample call per image vs our batched add_samples, same sample objects
        from curation.browse.build import BuildSummary
        from curation.browse.samples import batches, image_sample, image_table

        small = synthetic(args.baseline_n, args.dim, classes, seed=1)
        rows = next(batches(image_table(small, BuildSummary("x", "x")), args.baseline_n))
        timings = {}
        for mode in ("batched", "one_by_one"):
            dataset = fo.Dataset(f"bench-{mode}")
            samples = [image_sample(r, root, classes) for r in rows]
            t0 = time.perf_counter()
            if mode == "batched":
                for k in range(0, len(samples), settings.batch_size):
                    dataset.add_samples(samples[k : k + settings.batch_size], progress=False)
            else:
                for sample in samples:
                    dataset.add_sample(sample)
            timings[mode] = time.perf_counter() - t0
        print(
            f"add {args.baseline_n:,} samples: batched {timings['batched']:.1f} s, one by one "
            f"{timings['one_by_one']:.1f} s -> {timings['one_by_one'] / timings['batched']:.1f}x faster"
        )

        # baseline 2: vectorised mistakenness vs fiftyone-brain's per-sample loop, same samples
        dataset = fo.load_dataset("bench-batched")
        dataset.set_values("ground_truth", [fo.Classification(label=c) for c in small.consensus["label"]])
        t0 = time.perf_counter()
        add_mistakenness(dataset)
        ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        fob.compute_mistakenness(
            dataset,
            "prelabel",
            label_field="ground_truth",
            mistakenness_field="m_brain",
            use_logits=True,
            progress=False,
        )
        brain = time.perf_counter() - t0
        same = np.allclose(dataset.values("mistakenness"), dataset.values("m_brain"))
        print(
            f"mistakenness of {args.baseline_n:,}: ours {ours:.2f} s, fiftyone-brain {brain:.1f} s -> "
            f"{brain / ours:.0f}x faster (same values: {same})"
        )
    finally:
        database.stop(root / ".fiftyone")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
