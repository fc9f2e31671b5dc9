"""Benchmark: peak memory of ingest, prelabel bookkeeping, split and export as the record count grows.

Not a test: it writes ~N tiny files per size to a temporary folder and runs each stage on them.

    python scripts/bench_memory.py                         # N = 10,000 and 100,000; all four stages
    python scripts/bench_memory.py --sizes 2000 --stages ingest split
    python scripts/bench_memory.py --workdir /tmp/bm --keep  # reuse (or keep) the generated inputs

The stages run as a pipeline on synthetic data, each in a fresh subprocess:

- **ingest** (core ``ingest`` + ``write_ingest``, as ``curation ingest`` calls them) of N distinct 32x32 greyscale
  noise PNGs (a counter seeds the pixels; every 50th file is a byte copy of the one before, every 1,000th is
  truncated) spread over folders of 1,000, with a metadata CSV (file, line, camera);
- **prelabel** (``curation.prelabel.stage.prelabel`` + ``write_prelabel``) of ingest's manifest with a random
  tiny CLIP (tests/tiny_models.py: 2 layers, 32 wide, 32 px input), no captions, on the CPU: the bookkeeping around
  the model (hash checks, cache, frames, Parquet) at full scale with next to no model;
- **split** (``curation split``'s command function) of the manifest with synthetic consensus labels for 90% of
  the images, grouped by ``dup_group`` and ``meta_line``;
- **export** (``curation export``'s command function, ``--link symlink``) of the splits, with the predictions.

Each subprocess reports its own peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``; ingest's decoding workers are
reported apart) and the stage's wall time. A baseline subprocess per stage imports the same modules and exits: the
*growth* column is peak minus that baseline, the memory attributable to the records. Outputs go to
``build/bench/memory.json`` (with a SHA-256 of every output file, to check that a change keeps them byte-identical)
and ``build/bench/memory.png`` (peak MB against N per stage).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "prelabel", "split", "export")
FOLDER_SIZE = 1000
CLASSES_LABELLED = 0.9
CLIP_BATCH = 1024  # the tiny model's forward costs next to nothing per image; fewer calls keep 100k affordable

# What each stage's subprocess imports before it starts the clock (the baseline imports exactly these).
IMPORTS = {
    "ingest": ["pandas", "pyarrow.parquet", "curation.ingest", "schemas.params"],
    "prelabel": [
        "pandas",
        "pyarrow.parquet",
        "torch",
        "transformers",
        "curation.prelabel.stage",
        "curation.prelabel.models",
        "schemas.params",
    ],
    "split": ["pandas", "pyarrow.parquet", "curation.split_cli", "curation.split", "schemas.params"],
    "export": [
        "pandas",
        "pyarrow.parquet",
        "pycocotools.coco",
        "curation.export_cli",
        "curation.export",
        "schemas.params",
    ],
}


# ---------------------------------------------------------------------------------------------- inputs (parent)


def make_images(raw: Path, n: int) -> None:
    """``n`` distinct 32x32 noise PNGs under ``raw``, with a few byte copies and truncated files."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    previous: Path | None = None
    for i in range(n):
        path = raw / f"d{i // FOLDER_SIZE:03d}" / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if i % 50 == 49 and previous is not None:
            shutil.copyfile(previous, path)
        else:
            Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), mode="L").save(path, compress_level=1)
            if i % 1000 == 999:
                path.write_bytes(path.read_bytes()[:60])
        previous = path


def make_metadata(path: Path, n: int) -> None:
    lines = ["file,line,camera"]
    lines += [f"d{i // FOLDER_SIZE:03d}/{i:06d}.png,line-{i % 4}-{i // 50},cam-{i % 3}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def prepare_inputs(work: Path, sizes: list[int]) -> None:
    """Images for the largest size once; smaller sizes get hardlinks of its first files (no extra disk)."""
    largest = max(sizes)
    full = work / f"raw-{largest}"
    if not (full / ".done").exists():
        start = time.perf_counter()
        make_images(full, largest)
        (full / ".done").touch()
        print(f"generated {largest:,} images in {time.perf_counter() - start:.0f} s", flush=True)
    for n in sizes:
        raw = work / f"raw-{n}"
        if n != largest and not (raw / ".done").exists():
            for i in range(n):
                rel = Path(f"d{i // FOLDER_SIZE:03d}") / f"{i:06d}.png"
                (raw / rel.parent).mkdir(parents=True, exist_ok=True)
                os.link(full / rel, raw / rel)
            (raw / ".done").touch()
        if not (work / f"metadata-{n}.csv").exists():
            make_metadata(work / f"metadata-{n}.csv", n)
    (work / "raw-models").mkdir(exist_ok=True)
    clip = work / "raw-models" / "clip"
    if not (clip / "config.json").exists():
        sys.path.insert(0, str(ROOT))
        from tests.tiny_models import build_clip

        build_clip(clip)


def bench_params(work: Path) -> Path:
    """params.yaml of the project with the bench's settings (a copy: the project file is never touched)."""
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["ingest"].update(metadata=None, labels=None, workers=0)
    raw["split"].update(group_by=["dup_group", "meta_line"], unlabeled="split")
    raw["export"].update(link="symlink", include_augmented=False, include_unlabeled=False)
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def write_consensus(manifest_path: Path, out: Path, classes: list[str]) -> None:
    """Consensus labels for 90% of the manifest's images (seeded by image id, so any N agrees with any other)."""
    import pandas as pd

    ids = pd.read_parquet(manifest_path, columns=["image_id"])["image_id"]
    draw = ids.map(lambda i: int(i[:8], 16))
    keep = (draw % 1000) < CLASSES_LABELLED * 1000
    frame = pd.DataFrame(
        {
            "image_id": ids[keep].to_numpy(),
            "label": [classes[d % len(classes)] for d in draw[keep]],
            "severity": "minor",
            "disputed": (draw[keep] % 17 == 0).to_numpy(),
        }
    )
    frame.to_parquet(out, index=False)


# ---------------------------------------------------------------------------------------------- stages (child)


def child(stage: str, n: int, work: Path, baseline: bool) -> dict[str, Any]:
    import importlib

    for module in IMPORTS[stage]:
        importlib.import_module(module)
    start = time.perf_counter()
    if not baseline:
        RUNNERS[stage](n, work)
    wall = time.perf_counter() - start
    return {
        "peak_mb": peak_rss_mb(),
        "workers_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "wall_s": wall,
    }


def peak_rss_mb() -> float:
    """This process's peak RSS. /proc's VmHWM, not getrusage: ru_maxrss survives exec, so a subprocess would
    report its parent's peak when that is larger; VmHWM belongs to the address space exec creates."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def run_ingest(n: int, work: Path) -> None:
    from curation.ingest import ingest, write_ingest
    from schemas.params import load_params

    params = load_params(work / "params.yaml")
    settings = params.ingest.model_copy(update={"metadata": work / f"metadata-{n}.csv", "metadata_key": "file"})
    result = ingest(work / f"raw-{n}", settings, class_names=params.ontology.class_names)
    write_ingest(result, work / f"out-{n}" / "ingest")


def run_prelabel(n: int, work: Path) -> None:
    import pandas as pd

    from curation.prelabel.stage import prelabel, write_prelabel
    from schemas.params import load_params

    params = load_params(work / "params.yaml")
    settings = params.prelabel.model_copy(
        update={
            "clip": params.prelabel.clip.model_copy(
                update={"model": str(work / "raw-models" / "clip"), "batch_size": CLIP_BATCH}
            ),
            "captions": params.prelabel.captions.model_copy(update={"policy": "none"}),
            "device": "cpu",
            "allow_download": False,
        }
    )
    out = work / f"out-{n}"
    cache = work / f"cache-{n}"
    shutil.rmtree(cache, ignore_errors=True)  # every run computes every embedding: the same work before and after
    manifest = pd.read_parquet(out / "ingest" / "manifest.parquet")
    result = prelabel(manifest, settings, params.ontology, cache_dir=cache)
    write_prelabel(result, out / "prelabel")


def run_split(n: int, work: Path) -> None:
    from curation.split_cli import split_command

    out = work / f"out-{n}"
    split_command(
        out / "ingest" / "manifest.parquet",
        out / "split",
        consensus=out / "consensus.parquet",
        prior_labels=out / "ingest" / "prior_labels.parquet",
        previous=None,
        no_previous=True,
        params_path=work / "params.yaml",
    )


def run_export(n: int, work: Path) -> None:
    from curation.export_cli import export_command

    out = work / f"out-{n}"
    export_command(
        out / "split" / "splits.parquet",
        out / "ingest" / "manifest.parquet",
        out / "export",
        augment_dir=out / "no-augment",
        predictions=out / "prelabel" / "predictions.parquet",
        link="symlink",
        params_path=work / "params.yaml",
    )


RUNNERS = {"ingest": run_ingest, "prelabel": run_prelabel, "split": run_split, "export": run_export}


# ---------------------------------------------------------------------------------------------- driver (parent)


def spawn(stage: str, n: int, work: Path, baseline: bool) -> dict[str, Any]:
    report = work / "child.json"
    report.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--child", stage, "--n", str(n), "--workdir", str(work)]
    if baseline:
        command.append("--baseline")
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(
            f"{stage} n={n} failed (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    result = json.loads(report.read_text())
    result["process_s"] = elapsed
    return result


def output_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (symlinks: their target), keyed by relative path."""
    hashes = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            hashes[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            hashes[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def summarise_hashes(hashes: dict[str, str]) -> dict[str, Any]:
    """Per-file digests for the small outputs; one digest over the (many) image entries under data/."""
    data = {k: v for k, v in hashes.items() if "/data/" in f"/{k}"}
    files = {k: v for k, v in hashes.items() if k not in data}
    combined = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return {"files": files, "data_entries": len(data), "data_sha256": combined}


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for stage in STAGES:
        rows = sorted((r for r in results if r["stage"] == stage), key=lambda r: r["n"])
        if not rows:
            continue
        ns = [r["n"] for r in rows]
        left.plot(ns, [r["peak_mb"] for r in rows], marker="o", label=stage)
        right.plot(ns, [r["growth_mb"] for r in rows], marker="o", label=stage)
    for axis, title in ((left, "peak RSS (MB)"), (right, "growth over import baseline (MB)")):
        axis.set_xlabel("records (N)")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def table(results: list[dict[str, Any]]) -> str:
    head = (
        f"{'stage':<9}{'N':>9}{'baseline MB':>13}{'peak MB':>10}{'growth MB':>11}{'MB/10k':>8}"
        f"{'workers MB':>12}{'wall s':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r['stage']:<9}{r['n']:>9,}{r['baseline_mb']:>13.0f}{r['peak_mb']:>10.0f}{r['growth_mb']:>11.0f}"
            f"{r['growth_mb'] / (r['n'] / 10_000):>8.1f}{r['workers_peak_mb']:>12.0f}{r['wall_s']:>9.1f}"
        )
    by_stage: dict[str, dict[int, float]] = {}
    for r in results:
        by_stage.setdefault(r["stage"], {})[r["n"]] = r["growth_mb"]
    for stage, growth in by_stage.items():
        if len(growth) >= 2:
            small, large = min(growth), max(growth)
            lines.append(
                f"{stage}: growth {growth[small]:.0f} MB at {small:,} -> {growth[large]:.0f} MB at {large:,} "
                f"(x{growth[large] / max(growth[small], 1):.1f} for x{large / small:.0f} records)"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the generated inputs (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder afterwards")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench", help="folder for memory.json/.png")
    parser.add_argument("--tag", default="memory", help="file name stem of the JSON and PNG")
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child(args.child, args.n, args.workdir, args.baseline)
        (args.workdir / "child.json").write_text(json.dumps(result))
        return

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_memory_", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = sorted(args.sizes)
    results: list[dict[str, Any]] = []
    try:
        prepare_inputs(work, sizes)
        params = bench_params(work)
        for n in sizes:
            for stage in STAGES:
                if stage not in args.stages:
                    continue
                if stage == "split" and not (work / f"out-{n}" / "consensus.parquet").exists():
                    from schemas.params import load_params

                    classes = load_params(params).ontology.class_names
                    write_consensus(
                        work / f"out-{n}" / "ingest" / "manifest.parquet",
                        work / f"out-{n}" / "consensus.parquet",
                        classes,
                    )
                base = spawn(stage, n, work, baseline=True)
                measured = spawn(stage, n, work, baseline=False)
                row = {
                    "stage": stage,
                    "n": n,
                    "baseline_mb": round(base["peak_mb"], 1),
                    "peak_mb": round(measured["peak_mb"], 1),
                    "growth_mb": round(measured["peak_mb"] - base["peak_mb"], 1),
                    "workers_peak_mb": round(measured["workers_peak_mb"], 1),
                    "wall_s": round(measured["wall_s"], 2),
                    "outputs": summarise_hashes(output_hashes(work / f"out-{n}" / stage)),
                }
                results.append(row)
                print(
                    f"{stage:<9} N={n:>7,}: peak {row['peak_mb']:.0f} MB (baseline {row['baseline_mb']:.0f}), "
                    f"{row['wall_s']:.1f} s",
                    flush=True,
                )
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(table(results))
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "sizes": sizes}
    (args.out / f"{args.tag}.json").write_text(json.dumps({"machine": meta, "results": results}, indent=2) + "\n")
    plot(results, args.out / f"{args.tag}.png")
    print(f"wrote {args.out / (args.tag + '.json')} and {args.out / (args.tag + '.png')}")


if __name__ == "__main__":
    main()
