"""Benchmark: ingest (with progress bar and outputs) against a bare loop doing SHA-256 + full decode.

Not a test: timings here are noisy, so the script reports throughput ratios measured in one run.

    python scripts/bench_ingest.py                      # 2,000 images: X-SDD (if present) + sample data
    python scripts/bench_ingest.py --images DIR --n 500 # any folder

The corpus is built in a temporary folder (copies of X-SDD's real images, topped up with generated sample
images), so the page cache is warm for every contender: a first untimed pass reads every file.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from rich.console import Console

from curation.discover import discover
from curation.ingest import ingest, write_ingest
from curation.progress import progress
from curation.sample_data import generate_sample
from schemas.params import DEFAULT_EXTENSIONS, IngestParams, load_params

ROOT = Path(__file__).resolve().parents[1]
XSDD = ROOT.parent / "shared" / "datasets" / "x-sdd" / "X-SDD" / "datas"


def build_corpus(target: Path, n: int, images: Path | None) -> list[Path]:
    """Copy up to ``n`` images from ``images`` (or X-SDD) into ``target``, topped up with sample images."""
    source = images if images is not None else XSDD
    files: list[Path] = []
    if source.is_dir():
        rels = discover(source, list(DEFAULT_EXTENSIONS)).candidates[:n]
        for index, rel in enumerate(rels):
            dest = target / "real" / f"{index:05d}{Path(rel).suffix}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / rel, dest)
            files.append(dest)
    missing = n - len(files)
    if missing > 0:
        per_class = -(-missing // 6)
        summary = generate_sample(target / "sample", n_per_class=per_class, seed=1)
        generated = sorted(p for p in summary.images_dir.rglob("*") if p.is_file())
        files += generated
    return files


def bare_loop(files: list[Path]) -> int:
    """The baseline: read, SHA-256 and fully decode each file; nothing else."""
    decoded = 0
    for path in files:
        data = path.read_bytes()
        hashlib.sha256(data).hexdigest()
        try:
            with Image.open(path) as image:
                image.load()
            decoded += 1
        except Exception:  # the baseline skips broken files silently: exactly what ingest must not do
            continue
    return decoded


def run_ingest(raw: Path, out: Path, workers: int, class_names: list[str]) -> dict:
    settings = IngestParams(metadata=None, workers=workers)
    with progress(f"ingest workers={workers}", Console(stderr=True)) as reporter:
        result = ingest(raw, settings, class_names=class_names, on_start=reporter.start, on_progress=reporter.advance)
        write_ingest(result, out)
    return result.report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="number of image files")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median reported)")
    parser.add_argument("--images", type=Path, default=None, help="folder to take images from (default X-SDD)")
    args = parser.parse_args()
    class_names = load_params(ROOT / "params.yaml").ontology.class_names
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        files = build_corpus(raw, args.n, args.images)
        bare_loop(files)  # warm the page cache for everyone

        contenders = {
            "bare loop (sha256 + full decode, 1 process)": lambda: bare_loop(files),
            "ingest, 1 process": lambda: run_ingest(raw, Path(tmp) / "out-1", 1, class_names),
            "ingest, one process per core": lambda: run_ingest(raw, Path(tmp) / "out-0", 0, class_names),
        }
        seconds: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.rounds):  # interleaved rounds: machine noise hits every contender alike
            for name, run in contenders.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
        report = run_ingest(raw, Path(tmp) / "out-check", 0, class_names)
        n = len(files)
        print(
            f"files: {n}, ingested {report['ingested']}, duplicates {report['duplicate_copies']}, "
            f"quarantined {report['quarantined']}; median of {args.rounds} interleaved rounds"
        )
        bare = statistics.median(seconds[next(iter(contenders))])
        for name, times in seconds.items():
            median = statistics.median(times)
            print(f"{name}: {median:.2f} s = {n / median:.0f} files/s; throughput ratio vs bare {bare / median:.2f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
