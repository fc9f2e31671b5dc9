"""Benchmark: /score under load, with request batching against one request at a time.

Not a test. Builds a random CLIP with the real ViT-B/32 architecture (``tests/tiny_models.build_clip(size="base")``:
real compute cost, meaningless scores), serves it on loopback twice - batched (``serve.max_batch``) and with
``max_batch=1`` (one request at a time through the model) - and drives each with 1, 4 and 16 closed-loop clients
for ``--seconds`` each. Every request is a real X-SDD image (base64) and three prompts. Prints requests/s and p95
latency per level, the batched/one-at-a-time ratios, and saves a PNG figure.

    python scripts/bench_serve.py                      # 20 s per level, figure in build/bench/bench_serve.png
    python scripts/bench_serve.py --seconds 10 --clients 1 4 16
"""

from __future__ import annotations

import argparse
import base64
import secrets
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
XSDD = ROOT.parent / "shared" / "datasets" / "x-sdd" / "X-SDD" / "datas"
PROMPTS = ["a scratch on a steel surface", "an oil stain on metal", "a clean steel surface"]

from curation.io import atomic_path  # noqa: E402
from curation.serve.app import create_app  # noqa: E402
from curation.serve.auth import BackendSecret  # noqa: E402
from curation.serve.cli import running  # noqa: E402
from schemas.params import load_params  # noqa: E402
from schemas.params_prelabel import CaptionParams, ClipParams, PrelabelParams  # noqa: E402
from schemas.params_serve import ServeParams  # noqa: E402
from tests.tiny_models import build_clip  # noqa: E402

SECRET = BackendSecret(user="label-studio", password=secrets.token_hex(20))  # this run's services only


def no_studio() -> tuple[str, str]:
    raise SystemExit("the benchmark sends inline images only; no Label Studio is involved")


def images(limit: int = 64) -> list[str]:
    files = sorted(p for p in XSDD.glob("*/*") if p.suffix.lower() in (".jpg", ".png", ".bmp"))[:limit]
    if not files:
        raise SystemExit(f"no X-SDD images under {XSDD}")
    return [base64.b64encode(p.read_bytes()).decode() for p in files]


def load(url: str, clients: int, seconds: float, payloads: list[str]) -> tuple[float, list[float]]:
    """``clients`` threads each send a request as soon as the previous answer came; returns (wall s, latencies)."""
    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(index: int) -> None:
        with httpx.Client(base_url=url, timeout=120, trust_env=False, headers=SECRET.header()) as http:
            i = index
            while time.perf_counter() < stop_at:
                body = {"image": payloads[i % len(payloads)], "prompts": PROMPTS}
                start = time.perf_counter()
                answer = http.post("/score", json=body)
                elapsed = time.perf_counter() - start
                with lock:
                    (latencies if answer.status_code == 200 else failures).append(elapsed)
                i += clients

    began = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    if failures:
        raise SystemExit(f"{len(failures)} requests failed at {clients} clients")
    return wall, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="Load duration per level and mode.")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=2, help="Alternating rounds per level (seconds split).")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "bench_serve.png")
    args = parser.parse_args()

    import torch

    params = load_params(ROOT / "params.yaml")
    payloads = images()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        console.print("building a random ViT-B/32 CLIP ...")
        folder = build_clip(Path(tmp) / "clip-b32", size="base")
        prelabel = PrelabelParams(clip=ClipParams(model=str(folder)), captions=CaptionParams(policy="none"))
        modes = {"batched": args.max_batch, "one at a time": 1}
        results: dict[str, list[tuple[float, float, int]]] = {mode: [] for mode in modes}
        with ExitStack() as stack:
            urls = {}
            for mode, max_batch in modes.items():
                settings = ServeParams(max_batch=max_batch, max_wait_ms=5.0)
                app = create_app(settings, prelabel, params.ontology, secret=SECRET, studio=no_studio)
                urls[mode] = stack.enter_context(running(app))
                load(urls[mode], 2, 3.0, payloads)  # loads the weights and warms up, outside the timing
            for clients in args.clients:
                # the modes alternate in short rounds, so a change in the machine's load hits both alike
                rounds: dict[str, list[tuple[float, list[float]]]] = {mode: [] for mode in modes}
                for _ in range(args.rounds):
                    for mode in modes:
                        rounds[mode].append(load(urls[mode], clients, args.seconds / args.rounds, payloads))
                for mode in modes:
                    wall = sum(r[0] for r in rounds[mode])
                    latencies = [x for r in rounds[mode] for x in r[1]]
                    row = (len(latencies) / wall, float(np.percentile(latencies, 95)), len(latencies))
                    results[mode].append(row)
                    rate, p95, n = row
                    console.print(
                        f"{mode:>14}: {clients:>2} clients  {rate:6.2f} req/s  p95 {p95 * 1000:7.0f} ms  ({n})"
                    )

    table = Table(title=f"/score, random ViT-B/32 CLIP, CPU ({torch.get_num_threads()} torch threads), X-SDD images")
    for column in ("clients", "batched req/s", "1-at-a-time req/s", "ratio", "batched p95 ms", "1-at-a-time p95 ms"):
        table.add_column(column, justify="right")
    for k, clients in enumerate(args.clients):
        (rb, pb, _), (rs, ps, _) = results["batched"][k], results["one at a time"][k]
        table.add_row(str(clients), f"{rb:.2f}", f"{rs:.2f}", f"{rb / rs:.2f}x", f"{pb * 1000:.0f}", f"{ps * 1000:.0f}")
    console.print(table)
    plot(args.clients, results, args.out)
    console.print(f"figure: {args.out}")


def plot(clients: list[int], results: dict[str, list[tuple[float, float, int]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, rows in results.items():
        left.plot(clients, [r[0] for r in rows], marker="o", label=mode)
        right.plot(clients, [r[1] * 1000 for r in rows], marker="o", label=mode)
    left.set(xlabel="concurrent clients", ylabel="requests / s", title="Throughput", xscale="log", xticks=clients)
    right.set(xlabel="concurrent clients", ylabel="p95 latency (ms)", title="p95 latency", xscale="log", xticks=clients)
    for axis in (left, right):
        axis.set_xticklabels([str(c) for c in clients])
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle("curation serve /score: request batching vs one request at a time (random ViT-B/32, CPU)")
    figure.tight_layout()
    with atomic_path(out) as tmp:
        figure.savefig(tmp, dpi=120, format="png")


if __name__ == "__main__":
    main()
