"""Benchmark: split + export at scale, and augmentation against a bare albumentations loop.

Not a test: timings here are noisy, so the script reports ratios measured in one run (median of interleaved rounds).

    python scripts/bench_dataset.py                              # 100,000 records; 300 images x 2 variants
    python scripts/bench_dataset.py --records 20000 --images 100 # smaller

1. split + export of N synthetic manifest records (7 classes, 5% in near-duplicate pairs, 4 production lines,
   grouped by line and dup group), each record pointing at one of a pool of real X-SDD files (symlinked into the
   export: N byte copies would need gigabytes of disk): wall time and peak RSS of this process.
2. augmentation (the stage: seeding per variant, box bookkeeping, applied-parameter records, SHA-256, parquet
   frame) against a bare loop doing the same decode + albumentations ``Compose`` + PNG encode + write, 1 process.
3. the speed-up of 2 worker processes over 1 for the same augmentation.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from augment.recipe import build_pipeline
from curation.augment_stage import augment
from curation.discover import discover
from curation.export import export
from curation.sample_data import generate_sample
from curation.split import image_labels, split
from schemas.params_dataset import AugmentParams, ExportParams, SplitParams

ROOT = Path(__file__).resolve().parents[1]
XSDD = ROOT.parent / "shared" / "datasets" / "x-sdd" / "X-SDD" / "datas"
CLASSES = ["scratch", "contamination", "dent", "crack", "discoloration", "ok"]


def image_pool(n: int, scratch: Path) -> list[Path]:
    """Up to ``n`` real images from X-SDD (read in place), topped up with generated sample images."""
    files: list[Path] = []
    if XSDD.is_dir():
        files = [XSDD / rel for rel in discover(XSDD, [".jpg", ".png"]).candidates[:n]]
    if len(files) < n:
        summary = generate_sample(scratch / "sample", n_per_class=-(-(n - len(files)) // 6), seed=1, size=128)
        files += sorted(p for p in summary.images_dir.rglob("*.png"))[: n - len(files)]
    return files


def synthetic_manifest(n: int, pool: list[Path]) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    shas = [hashlib.sha256(p.read_bytes()).hexdigest() for p in pool]
    sizes = [Image.open(p).size for p in pool]
    pick = rng.integers(0, len(pool), n)
    ids = [hashlib.sha256(f"record-{i}".encode()).hexdigest()[:16] for i in range(n)]
    groups = list(ids)
    for i in range(0, int(n * 0.05), 2):  # 5% of records in near-duplicate pairs
        groups[i + 1] = groups[i]
    return pd.DataFrame(
        {
            "image_id": ids,
            "sha256": [shas[k] for k in pick],
            "path": [str(pool[k]) for k in pick],
            "rel_path": [pool[k].name for k in pick],
            "width": [sizes[k][0] for k in pick],
            "height": [sizes[k][1] for k in pick],
            "dup_group": groups,
            "meta_line": [f"line-{i % 4}-{i // 50}" for i in range(n)],  # a line run of 50 parts
            "truth": [CLASSES[k] for k in rng.integers(0, len(CLASSES), n)],
        }
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def bench_split_export(n: int, pool: list[Path], tmp: Path) -> None:
    manifest = synthetic_manifest(n, pool)
    consensus = pd.DataFrame({"image_id": manifest["image_id"], "label": manifest["truth"]})
    before = peak_rss_mb()
    start = time.perf_counter()
    labels = image_labels(manifest, consensus=consensus, class_names=CLASSES)
    result = split(manifest, labels, SplitParams(group_by=["meta_line"]))
    split_s = time.perf_counter() - start
    after_split = peak_rss_mb()
    start = time.perf_counter()
    exported = export(result.splits, manifest, tmp / "export", ExportParams(link="symlink"), class_names=CLASSES)
    export_s = time.perf_counter() - start
    print(f"split + export of {n:,} records (pool of {len(pool)} real files, export.link=symlink):")
    print(f"  split  {split_s:6.2f} s  ({n / split_s:,.0f} records/s); peak RSS {after_split:,.0f} MB")
    print(
        f"  export {export_s:6.2f} s  ({n / export_s:,.0f} records/s, pycocotools validation included); "
        f"peak RSS {peak_rss_mb():,.0f} MB (process before split: {before:,.0f} MB)"
    )
    print(
        f"  splits {result.report['splits']}, max class deviation "
        f"{max(c['max_deviation_images'] for c in result.report['classes'].values())} images, "
        f"version {exported.version}"
    )


def bare_loop(files: list[Path], variants: int, out: Path, recipe) -> None:
    """The baseline: decode, one Compose per variant, PNG encode, write. No seeds, records or hashes."""
    import albumentations as A

    pipeline = A.Compose([t for t in build_pipeline(recipe).transforms], seed=0)
    out.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(files):
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB") if image.mode not in ("RGB", "L") else image)
        for variant in range(variants):
            result = pipeline(image=pixels)["image"]
            buffer = io.BytesIO()
            Image.fromarray(result).save(buffer, format="PNG", compress_level=3)
            (out / f"{index}_{variant}.png").write_bytes(buffer.getvalue())


def bench_augment(files: list[Path], variants: int, rounds: int, tmp: Path) -> None:
    ids = [hashlib.sha256(str(p).encode()).hexdigest()[:16] for p in files]
    manifest = pd.DataFrame({"image_id": ids, "path": [str(p) for p in files]})
    splits = pd.DataFrame({"image_id": ids, "split": "train", "label": "scratch", "severity": None, "boxes": None})
    settings = AugmentParams(variants=variants, preview_images=0)
    for path in files:  # warm the page cache for everyone
        path.read_bytes()
    contenders = {
        "bare albumentations loop, 1 process": lambda k: bare_loop(files, variants, tmp / f"bare{k}", settings.recipe),
        "augment stage, 1 process": lambda k: augment(
            splits, manifest, settings.model_copy(update={"workers": 1}), tmp / f"one{k}"
        ),
        "augment stage, 2 processes": lambda k: augment(
            splits, manifest, settings.model_copy(update={"workers": 2}), tmp / f"two{k}"
        ),
    }
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for k in range(rounds):  # interleaved rounds: machine noise hits every contender alike
        for name, run in contenders.items():
            start = time.perf_counter()
            run(k)
            seconds[name].append(time.perf_counter() - start)
    median = {name: statistics.median(times) for name, times in seconds.items()}
    n = len(files) * variants
    size = Image.open(files[0]).size
    print(
        f"augmentation: {len(files)} images ({size[0]}x{size[1]}) x {variants} variants = {n} outputs, "
        f"default recipe; median of {rounds} interleaved rounds"
    )
    for name, value in median.items():
        print(f"  {name}: {value:.2f} s = {n / value:.0f} outputs/s")
    bare, one, two = median.values()
    print(f"  overhead of the stage vs bare loop: {one / bare:.3f}x (target <= 1.15x)")
    print(f"  speed-up from 2 processes: {one / two:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000, help="synthetic manifest records for split + export")
    parser.add_argument("--pool", type=int, default=500, help="distinct real files the records point at")
    parser.add_argument("--images", type=int, default=300, help="images to augment")
    parser.add_argument("--variants", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pool = image_pool(max(args.pool, args.images), Path(tmp))
        bench_split_export(args.records, pool[: args.pool], Path(tmp))
        bench_augment(pool[: args.images], args.variants, args.rounds, Path(tmp))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
