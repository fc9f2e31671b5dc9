"""Benchmark the prelabel stage, and check the few-shot accuracy claim, on real X-SDD steel-defect images.

Not a test: timings are noisy, so each part reports ratios measured in one run (ours vs a baseline).

    python scripts/bench_prelabel.py                    # every part, 128 images
    python scripts/bench_prelabel.py --parts a,b,d --n 64
    python scripts/bench_prelabel.py --parts fewshot    # accuracy only

Parts:
  fewshot  EfficientNet-Lite0 embeddings (the offline backbone) + the stage's few-shot fit (params.yaml's
           prelabel.fewshot) with K labels per class, accuracy on every other X-SDD image, mean over seeded draws;
           the former recipe (standard scaling, C=1) beside it. --fewshot-cache /tmp/x.npy embeds only once.
  a        the stage (decode threads, batching, zero-shot, outputs) vs the bare image forward on pre-decoded
           tensors, images/s ratio (target >= 0.85).
  b        the stage vs a per-image loop over transformers' zero-shot-image-classification pipeline (target >= 5x).
  c        batched vs per-image BLIP captioning.
  d        re-run with 1% new images vs the full run (target <= 5% of the time).
a, b and d use a random ViT-B/32-sized CLIP (``CLIPModel(CLIPConfig())``), c a random BLIP-base: the real compute
cost of the default checkpoints, which cannot be downloaded here. Images are read in place, never copied.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tiny_models: builders of random CLIP/BLIP checkpoints

from tiny_models import build_blip, build_clip  # noqa: E402

from curation.prelabel.images import ImageRef, load_and_prepare  # noqa: E402
from curation.prelabel.stage import prelabel, write_prelabel  # noqa: E402
from schemas.params import load_params  # noqa: E402
from schemas.params_prelabel import CaptionParams, ClipParams, FewShotParams, PrelabelParams, PreprocessParams  # noqa: E402

ONTOLOGY: list = []  # the project's ontology, read once at start
STEADY: list[float] = []  # the last run_stage's steady image rate
XSDD = ROOT.parent / "shared" / "datasets" / "x-sdd" / "X-SDD" / "datas"


def xsdd_files() -> list[tuple[Path, str]]:
    """(path, class folder) of every X-SDD image, sorted."""
    if not XSDD.is_dir():
        sys.exit(f"X-SDD not found at {XSDD}")
    return sorted((p, p.parent.name) for p in XSDD.glob("*/*") if p.suffix.lower() in (".jpg", ".png", ".bmp"))


def manifest_of(paths: list[Path]) -> pd.DataFrame:
    rows = []
    for path in paths:
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        rows.append({"image_id": sha[:16], "sha256": sha, "path": str(path), "exif_orientation": 1})
    return pd.DataFrame(rows).drop_duplicates("image_id").reset_index(drop=True)


def spread(files: list[tuple[Path, str]], n: int, seed: int = 0) -> list[Path]:
    """``n`` images drawn evenly over the classes (seeded)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(files))
    return [files[i][0] for i in order[:n]]


def part_fewshot(
    files: list[tuple[Path, str]], shots: int, draws: int, settings: FewShotParams, cache: Path | None
) -> None:
    """The stage's own few-shot code (``fit_predict``) with ``settings`` from params.yaml, and the former recipe
    (standard scaling, C=1) on the same draws for comparison."""
    from curation.prelabel.fewshot import fit_predict

    y = np.array([label for _, label in files])
    classes = sorted(set(y))
    start = time.perf_counter()
    if cache is not None and cache.is_file():
        x = np.load(cache)
        if len(x) != len(y):
            sys.exit(f"{cache}: {len(x)} embeddings for {len(y)} images; delete it to embed again")
    else:
        x = embed_offline([p for p, _ in files])
        if cache is not None:
            np.save(cache, x)
    print(f"[fewshot] {len(y)} X-SDD images, {len(classes)} classes, embeddings in {time.perf_counter() - start:.0f} s")
    ids = [str(i) for i in range(len(y))]
    recipes = {
        f"{settings.normalize}, C={settings.regularization:g} (params.yaml)": settings,
        "standard, C=1 (former recipe)": settings.model_copy(update={"normalize": "standard", "regularization": 1.0}),
    }
    for name, recipe in recipes.items():
        accuracies, cv = [], []
        for seed in range(draws):
            rng = np.random.default_rng(seed)
            train = np.concatenate([rng.choice(np.flatnonzero(y == c), size=shots, replace=False) for c in classes])
            labels = {ids[i]: str(y[i]) for i in train}
            result = fit_predict(x, ids, labels, classes, classes, recipe)
            test = ~result.labelled
            predicted = np.asarray(classes)[result.probabilities[test].argmax(axis=1)]
            accuracies.append(float((predicted == y[test]).mean()))
            cv.append(result.cv_accuracy)
        print(
            f"[fewshot] EfficientNet-Lite0 + few-shot {name}, {shots} labels per class: accuracy "
            f"{np.mean(accuracies):.3f} +- {np.std(accuracies):.3f} (mean +- sd over {draws} draws; min "
            f"{np.min(accuracies):.3f}, max {np.max(accuracies):.3f}) on the remaining images; the stage's "
            f"cross-validated estimate {np.mean(cv):.3f}"
        )


def embed_offline(paths: list[Path]) -> np.ndarray:
    """EfficientNet-Lite0 embeddings of ``paths`` with the default preprocessing, as the stage computes them."""
    from curation.prelabel.models import OfflineBackbone, select_runtime

    backbone = OfflineBackbone(select_runtime("cpu"))
    preprocess = PreprocessParams()
    features = []
    for i in range(0, len(paths), 64):
        batch = [load_and_prepare(ImageRef(str(p), _sha(p)), [backbone.spec], preprocess)[0] for p in paths[i : i + 64]]
        features.append(backbone.encode_images(np.stack(batch)))
    return np.concatenate(features)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stage_settings(clip_dir: Path) -> PrelabelParams:
    return PrelabelParams(
        clip=ClipParams(model=str(clip_dir)),
        captions=CaptionParams(policy="none"),
        fewshot=FewShotParams(enabled=False),
        device="cpu",
    )


def run_stage(manifest: pd.DataFrame, settings: PrelabelParams, cache: Path, out: Path, *, force: bool) -> float:
    """Seconds for the whole stage; its image loop's steady rate goes to STEADY (see :func:`steady_rate`)."""
    ontology = ONTOLOGY[0]
    marks: list[tuple[float, int]] = []
    start = time.perf_counter()
    result = prelabel(
        manifest,
        settings,
        ontology,
        cache_dir=cache,
        force=force,
        on_progress=lambda n: marks.append((time.perf_counter(), n)),
    )
    write_prelabel(result, out)
    STEADY[:] = [steady_rate(marks)]
    return time.perf_counter() - start


def steady_rate(marks: list[tuple[float, int]]) -> float:
    """Images/s from the end of the first batch to the end of the last: the throughput once running, without the
    one-off costs before the first batch is out (loading the weights, filling the decode queue)."""
    if len(marks) < 2:
        return float("nan")
    return sum(n for _, n in marks[1:]) / (marks[-1][0] - marks[0][0])


def bare_forward(clip_dir: Path, manifest: pd.DataFrame, batch_size: int) -> tuple[float, float]:
    """Seconds for the image forward alone, on tensors decoded and preprocessed beforehand (model loaded), and its
    steady rate measured like the stage's (after the first batch)."""
    from curation.prelabel.models import Checkpoint, ClipScorer, select_runtime

    scorer = ClipScorer(Checkpoint(str(clip_dir), clip_dir, "bench"), select_runtime("cpu"))
    pixels = np.stack(
        [
            load_and_prepare(ImageRef(p, s), [scorer.spec], PreprocessParams())[0]
            for p, s in zip(manifest["path"], manifest["sha256"], strict=True)
        ]
    )
    scorer.encode_images(pixels[:2])  # load the weights and warm up, outside the timing
    marks = []
    start = time.perf_counter()
    for i in range(0, len(pixels), batch_size):
        scorer.encode_images(pixels[i : i + batch_size])
        marks.append((time.perf_counter(), len(pixels[i : i + batch_size])))
    return time.perf_counter() - start, steady_rate(marks)


def hf_pipeline_loop(clip_dir: Path, manifest: pd.DataFrame, labels: list[str]) -> float:
    """The usual approach: one pipeline call per image (image and every candidate label encoded each call)."""
    from transformers import pipeline

    classifier = pipeline("zero-shot-image-classification", model=str(clip_dir), device="cpu")
    classifier(str(manifest["path"].iloc[0]), candidate_labels=labels)  # warm-up outside the timing
    start = time.perf_counter()
    for path in manifest["path"]:
        classifier(str(path), candidate_labels=labels)
    return time.perf_counter() - start


def part_captions(tmp: Path, files: list[tuple[Path, str]], n: int, tokens: int, beams: int) -> None:
    from curation.prelabel.captions import generation_kwargs
    from curation.prelabel.models import Captioner, Checkpoint, select_runtime

    blip_dir = build_blip(tmp / "blip-base", size="base")
    captioner = Captioner(Checkpoint("blip-base-random", blip_dir, "bench"), select_runtime("cpu"))
    paths = spread(files, n, seed=3)
    pixels = np.stack(
        [load_and_prepare(ImageRef(str(p), _sha(p)), [captioner.spec], PreprocessParams())[0] for p in paths]
    )
    generation = generation_kwargs(CaptionParams(max_new_tokens=tokens, num_beams=beams))
    generation["min_new_tokens"] = tokens  # equal work in both contenders: a random model may stop at any token
    captioner.caption(pixels[:1], generation)  # load + warm up
    start = time.perf_counter()
    captioner.caption(pixels, generation)
    batched = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(len(pixels)):
        captioner.caption(pixels[i : i + 1], generation)
    single = time.perf_counter() - start
    print(
        f"[c] BLIP-base ({n} images, {tokens} new tokens, {beams} beams): batched {batched / n:.1f} s/image, "
        f"per-image {single / n:.1f} s/image; batched is {single / batched:.2f}x faster"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="fewshot,a,b,c,d", help="comma-separated: fewshot,a,b,c,d")
    parser.add_argument("--n", type=int, default=128, help="images for a, b, d")
    parser.add_argument("--shots", type=int, default=5, help="labels per class for the few-shot check")
    parser.add_argument("--draws", type=int, default=20, help="seeded draws for the few-shot check")
    parser.add_argument(
        "--fewshot-cache",
        type=Path,
        default=None,
        help="a .npy file (outside the repo) holding the X-SDD embeddings: written when missing, read when present",
    )
    parser.add_argument("--caption-images", type=int, default=4)
    parser.add_argument("--caption-tokens", type=int, default=8)
    parser.add_argument("--caption-beams", type=int, default=3)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    params = load_params(ROOT / "params.yaml")
    ONTOLOGY.append(params.ontology)
    files = xsdd_files()
    import torch

    print(f"torch threads: {torch.get_num_threads()}, CPU cores: {os.cpu_count()}")
    if "fewshot" in parts:
        part_fewshot(files, args.shots, args.draws, params.prelabel.fewshot, args.fewshot_cache)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        if parts & {"a", "b", "d"}:
            clip_dir = build_clip(tmp / "clip-b32", size="base")
            chosen = spread(files, args.n + max(1, round(args.n / 100)))
            manifest = manifest_of(chosen[: args.n])
            settings = stage_settings(clip_dir)
            full = run_stage(manifest, settings, tmp / "cache", tmp / "out-full", force=True)
            stage_steady = STEADY[0]
            n = len(manifest)
            print(f"[stage] {n} images, full run (fresh cache, --force): {full:.1f} s = {n / full:.2f} images/s")
            if "a" in parts:
                bare, bare_steady = bare_forward(clip_dir, manifest, settings.clip.batch_size)
                print(
                    f"[a] bare image forward on pre-decoded tensors: {bare:.1f} s = {n / bare:.2f} images/s; "
                    f"whole stage / bare: {bare / full:.2f} (the stage's time includes loading the weights and "
                    f"encoding every prompt once, which the bare loop does not do)"
                )
                print(
                    f"[a] throughput once running (after the first batch): stage {stage_steady:.2f} images/s "
                    f"(decoding in threads beside the model) vs bare {bare_steady:.2f} images/s: ratio "
                    f"{stage_steady / bare_steady:.2f} (target >= 0.85)"
                )
            if "b" in parts:
                ontology = ONTOLOGY[0]
                labels = [c.prompts_en[0] for c in ontology.classes] + [
                    h.prompts_en[0] for h in ontology.hard_negatives
                ]
                loop = hf_pipeline_loop(clip_dir, manifest, labels)
                print(
                    f"[b] per-image zero-shot-image-classification pipeline loop ({len(labels)} labels): "
                    f"{loop:.1f} s = "
                    f"{n / loop:.2f} images/s; the stage is {loop / full:.2f}x faster (target >= 5x)"
                )
            if "d" in parts:
                grown = manifest_of(chosen)
                added = len(grown) - n
                again = run_stage(manifest, settings, tmp / "cache", tmp / "out-same", force=False)
                incremental = run_stage(grown, settings, tmp / "cache", tmp / "out-inc", force=False)
                print(
                    f"[d] re-run, nothing new: {again:.2f} s ({again / full:.1%} of the full run); re-run with {added} "
                    f"new image(s) ({added / len(grown):.1%}): {incremental:.2f} s = {incremental / full:.1%} of the "
                    f"full run (target <= 5%)"
                )
        if "c" in parts:
            part_captions(tmp, files, args.caption_images, args.caption_tokens, args.caption_beams)


if __name__ == "__main__":
    main()
