"""Benchmark: push 10,000 tasks with predictions in batches, against creating tasks one request at a time.

Not a test: it starts its own Label Studio server (from the template, in a temporary folder), and reports the
ratio measured in one run. The one-by-one baseline (one import request per task, prediction included) is timed
on a 200-task sample in a second project of the same server and extrapolated linearly to the full count.

    python scripts/bench_push.py                   # 10,000 tasks over X-SDD's real images (paths reused)
    python scripts/bench_push.py --n 2000 --sample 100

Images are X-SDD's, served in place (the document root is the X-SDD folder; nothing is copied); each task gets
its own synthetic image_id, so one image can back several tasks.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from curation.progress import progress
from curation.studio.client import Connection, make_client
from curation.studio.push import push
from curation.studio.server import StudioHome, load_credentials, start_local, stop
from curation.studio.tasks import build_tasks
from schemas.params import load_params
from schemas.params_studio import LabelStudioParams

ROOT = Path(__file__).resolve().parents[1]
XSDD = ROOT.parent / "shared" / "datasets" / "x-sdd" / "X-SDD" / "datas"


def inputs(images: Path, n: int, classes: list[str], seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    files = sorted(p for p in images.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})
    if not files:
        raise SystemExit(f"no images under {images}; pass --images DIR")
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(len(classes)), size=n)
    top = np.sort(probs, axis=1)[:, ::-1]
    manifest = pd.DataFrame(
        {
            "image_id": [f"{i:016x}" for i in range(n)],
            "path": [str(files[i % len(files)]) for i in range(n)],
            "rel_path": [files[i % len(files)].relative_to(images).as_posix() for i in range(n)],
        }
    )
    predictions = pd.DataFrame(
        {
            "image_id": manifest["image_id"],
            "label": [classes[j] for j in probs.argmax(axis=1)],
            "score": top[:, 0],
            "margin": top[:, 0] - top[:, 1],
            "entropy": -(probs * np.log(probs)).sum(axis=1),
            "model_version": "bench-model@0000",
            "caption": "a metal surface",
            "description_ko": "금속 표면",
        }
    )
    return manifest, predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="tasks to push in batches")
    parser.add_argument("--sample", type=int, default=200, help="tasks created one by one for the baseline")
    parser.add_argument("--batch-size", type=int, default=LabelStudioParams().batch_size)
    parser.add_argument("--images", type=Path, default=XSDD)
    args = parser.parse_args()
    console = Console(stderr=True)
    ontology = load_params(ROOT / "params.yaml").ontology
    images = args.images.resolve()
    manifest, predictions = inputs(images, args.n, ontology.class_names)
    # X-SDD's class folders sit directly under images/: serve from its parent so storages are sub-folders
    document_root = images.parent
    specs = build_tasks(manifest, predictions, ontology=ontology, document_root=document_root)

    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        defaults = LabelStudioParams()
        settings = LabelStudioParams(
            project_title="bench batched",
            batch_size=args.batch_size,
            home=Path(tmp) / "home",
            venv=ROOT / defaults.venv,
            template_dir=ROOT / defaults.template_dir,
            document_root=document_root,
        )
        home = StudioHome(settings.home)
        console.print("starting a Label Studio server for the benchmark ...")
        state = start_local(settings, on_status=console.print)
        try:
            creds = load_credentials(home)
            conn = Connection(state.url, creds.token, "local", document_root)
            client = make_client(conn, retries=4, timeout_s=600)

            with progress(f"push {args.n} tasks", console) as bar:
                began = time.perf_counter()
                first = push(
                    client,
                    conn,
                    specs,
                    ontology=ontology,
                    settings=settings,
                    on_start=bar.start,
                    on_progress=bar.advance,
                )
                batched = time.perf_counter() - began
            began = time.perf_counter()
            again = push(client, conn, specs, ontology=ontology, settings=settings)
            repush = time.perf_counter() - began
            if first.report["tasks_created"] != args.n or again.report["tasks_created"] != 0:
                raise SystemExit(f"push was not idempotent: {first.report} / {again.report}")

            sample = specs[: args.sample]
            project = client.projects.create(
                title="bench one by one", label_config=client.projects.get(id=first.project.id).label_config
            )
            with progress(f"one by one: {len(sample)} tasks", console) as bar:
                bar.start(len(sample))
                began = time.perf_counter()
                for spec in sample:
                    request = [{"data": spec.data, "predictions": list(spec.predictions)}]
                    client.projects.import_tasks(id=project.id, request=request, return_task_ids=True)
                    bar.advance(1)
                single = time.perf_counter() - began
        finally:
            stop(home)

    per_task_single = single / len(sample)
    extrapolated = per_task_single * args.n
    table = Table(title=f"push {args.n:,} tasks with predictions (Label Studio {state.version}, SQLite)")
    table.add_column("method")
    table.add_column("tasks", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("tasks/s", justify="right")
    table.add_row(f"push, batches of {args.batch_size}", f"{args.n:,}", f"{batched:.1f}", f"{args.n / batched:.0f}")
    table.add_row("push again (nothing to do)", f"{args.n:,}", f"{repush:.1f}", f"{args.n / repush:.0f}")
    table.add_row("one request per task", f"{len(sample)}", f"{single:.1f}", f"{1 / per_task_single:.0f}")
    table.add_row("one per task, extrapolated", f"{args.n:,}", f"{extrapolated:.0f}", f"{1 / per_task_single:.0f}")
    Console().print(table)
    Console().print(f"batched push is {extrapolated / batched:.1f}x faster than creating tasks one by one")


if __name__ == "__main__":
    main()
