"""Scaling of the Ray engine from 1 to 2 model actors, against the local engine, on real X-SDD images.

Not a test: timings are noisy, so it reports images/s and ratios measured in one run, rounds interleaved.

    python scripts/bench_ray.py --n 192 --rounds 2

Each run is the whole prelabel stage (``prelabel`` with ``force=True`` on a fresh cache: decoding, image forward,
zero-shot scoring) with a random ViT-B/32-sized CLIP (the real compute cost of the default checkpoint, which cannot
be downloaded here). Ray runs on a local ``ray.init(num_cpus=CPUS)``; each actor reserves 0.75 CPU and each decoding
task 0.25, so two actors and a decoding task fit on two cores. Actor start-up (loading the model) is inside the
timing, as a user would see it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_prelabel import manifest_of, spread, xsdd_files  # noqa: E402
from tiny_models import build_clip  # noqa: E402

from curation.prelabel.stage import prelabel  # noqa: E402
from schemas.params import load_params  # noqa: E402
from schemas.params_prelabel import CaptionParams, ClipParams, FewShotParams, PrelabelParams, RayParams  # noqa: E402


def settings_for(clip_dir: Path, engine: str, actors: int) -> PrelabelParams:
    return PrelabelParams(
        clip=ClipParams(model=str(clip_dir)),
        captions=CaptionParams(policy="none"),
        fewshot=FewShotParams(enabled=False),
        device="cpu",
        engine=engine,
        ray=RayParams(actors=actors, cpus_per_actor=0.75, cpus_per_decode_task=0.25),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=192, help="X-SDD images per run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the median is reported")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "bench_ray.json")
    args = parser.parse_args()

    import ray
    import torch

    ontology = load_params(ROOT / "params.yaml").ontology
    manifest = manifest_of(spread(xsdd_files(), args.n))
    ray.init(num_cpus=args.cpus, include_dashboard=False, configure_logging=False)
    configs = {"local engine": ("local", 1), "ray, 1 actor": ("ray", 1), "ray, 2 actors": ("ray", 2)}
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        clip_dir = build_clip(tmp / "clip-b32", size="base")
        for round_ in range(args.rounds):
            for label, (engine, actors) in configs.items():
                cache = tmp / f"cache-{round_}-{engine}-{actors}"
                start = time.perf_counter()
                result = prelabel(
                    manifest, settings_for(clip_dir, engine, actors), ontology, cache_dir=cache, force=True
                )
                seconds[label].append(time.perf_counter() - start)
                assert result.cache_stats["embeddings_computed"] == len(manifest)
                print(f"round {round_ + 1} {label}: {seconds[label][-1]:.1f} s", flush=True)
    ray.shutdown()

    n = len(manifest)
    median = {label: sorted(values)[len(values) // 2] for label, values in seconds.items()}
    rate = {label: n / s for label, s in median.items()}
    scaling = rate["ray, 2 actors"] / rate["ray, 1 actor"]
    print(f"\n{n} X-SDD images, ViT-B/32-sized random CLIP, torch threads in this process: {torch.get_num_threads()}")
    for label in configs:
        print(f"  {label:14s} {median[label]:6.1f} s  {rate[label]:6.2f} images/s")
    versus_local = rate["ray, 2 actors"] / rate["local engine"]
    print(f"  scaling 1 -> 2 actors: {scaling:.2f}x; ray 2 actors vs local engine: {versus_local:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"images": n, "cpus": args.cpus, "seconds": seconds, "images_per_s": rate, "scaling_1_to_2": scaling}
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
