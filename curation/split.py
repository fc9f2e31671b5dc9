"""Split: stratified by class, grouped, deterministic, and stable as the dataset grows.

How an image gets its split:

1. **Groups.** Images that share a near-duplicate group (``dup_group`` from ingest) or a value of any column in
   ``split.group_by`` (e.g. ``meta_line``, a part serial) are joined into one group (connected components), and a
   group never crosses splits.
2. **Strata.** Each group is stratified by its majority class (ties: first class name); unlabeled images form an
   ``unlabeled`` stratum, or are left out (``split.unlabeled: drop``) and counted.
3. **Order by size, then content id.** Within a stratum, groups are ordered largest first, equal sizes by
   ``sha256(seed:group key)``, where the group key is the smallest image id in the group: a content id, not a row
   position, so the order of the input never matters.
4. **Fill to the ratios.** Walking that order, a group goes to the split where it brings the class closest to its
   target counts (``ratio * n``): the one whose error ``|count - target|`` grows least, ties to the split further
   below target. Large groups are placed while small ones can still even out the rest, so each class lands within
   one image of its targets with single-image groups, and close to them whenever its groups allow. A group larger
   than ``split.max_group_share`` of the split it lands in is warned about (its images weigh that split's metrics
   as if they were one).
5. **Stability.** A re-cut on a larger dataset would move old images, so assignments of the last release
   (``split.previous``, written by ``curation release``) are pinned: every image found there keeps its split, a new
   image that joins a pinned group follows the group, and only the new groups are cut, against each split's
   remaining deficit (``ratio * n_class - pinned``), so the ratios stay on target as the dataset grows. A new image
   that bridges groups pinned to different splits cannot keep both intact: old images keep their split (a test
   image never moves into training), the new images follow the most held-out split, and the group is reported.

Outputs (``write_split``): ``splits.parquet`` (:data:`SPLIT_COLUMNS`), ``split.json`` (DVC metrics: counts per
split and class, achieved ratios, warnings) and ``class_counts.csv`` (a DVC bar plot: class, split, images).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from curation.errors import EmptyDatasetError, InputError
from curation.headline import write_headline
from curation.io import publish, write_csv, write_json, write_parquet
from schemas.params_dataset import SPLITS, SplitParams
from schemas.records import SplitRow, boxes_to_json, columns

UNLABELED = "unlabeled"
CONSENSUS_COLUMNS = ("severity", "disputed", "description")
"""The columns of consensus that :func:`image_labels` reads besides image_id and label."""
PRIOR_COLUMNS = ("x", "y", "w", "h", "polygons", "area")
"""The columns of prior labels that :func:`image_labels` reads besides image_id and label."""
HELD_OUT_ORDER = ("test", "val", "train")  # a contested new image goes to the first of these that claims it
SPLIT_COLUMNS = columns(SplitRow)


class SplitError(InputError):
    """Inputs of the split stage cannot be used as they are."""


@dataclass(frozen=True)
class SplitResult:
    splits: pd.DataFrame
    report: dict[str, Any]
    warnings: list[str]


def image_labels(
    manifest: pd.DataFrame,
    *,
    consensus: pd.DataFrame | None = None,
    prior: pd.DataFrame | None = None,
    class_names: Sequence[str],
) -> pd.DataFrame:
    """One label row per manifest image: from consensus when given, else prior labels, else none.

    Boxes come from prior labels (consensus rows carry none); with consensus, a prior box is kept only when its
    class equals the image's consensus label.

    Returns:
        Frame indexed like ``manifest`` with ``label`` (null = unlabeled), ``severity``, ``label_source``
        (``consensus`` | ``prior`` | ``none``), ``disputed`` and ``boxes`` (JSON list of ``{x, y, w, h, label}`` in
        pixels, or null; a region that came with a shape also has ``segmentation``, its list of flat polygons, and
        ``area``, its pixel area: see :mod:`curation.shapes`).
    """
    known = set(class_names)
    ids = manifest["image_id"]
    out = pd.DataFrame({"image_id": ids.to_numpy()})
    out["label"] = None
    out["severity"] = None
    out["description"] = None
    out["label_source"] = "none"
    out["disputed"] = False
    boxes = _prior_boxes(prior) if prior is not None and len(prior) else {}
    if consensus is not None:
        _require_columns(consensus, ["image_id", "label"], "consensus")
        table = consensus.drop_duplicates("image_id", keep="last").set_index("image_id")
        _check_labels(table["label"], known, "consensus")
        out["label"] = ids.map(table["label"]).astype(object).where(ids.isin(table.index), None).to_numpy()
        if "severity" in table:
            out["severity"] = ids.map(table["severity"]).astype(object).to_numpy()
        if "description" in table:  # the reviewers' text (consensus only; prior labels carry none)
            out["description"] = ids.map(table["description"]).astype(object).to_numpy()
        if "disputed" in table:
            out["disputed"] = ids.map(table["disputed"]).fillna(False).astype(bool).to_numpy()
        out.loc[ids.isin(table.index).to_numpy(), "label_source"] = "consensus"
    elif prior is not None and len(prior):
        _require_columns(prior, ["image_id", "label"], "prior labels")
        mapped = prior.dropna(subset=["label"])
        _check_labels(mapped["label"], known, "prior labels")
        majority = (
            mapped.groupby(["image_id", "label"])
            .size()
            .rename("n")
            .reset_index()
            # most rows first, then the class name: one deterministic label per image
            .sort_values(["image_id", "n", "label"], ascending=[True, False, True])
            .drop_duplicates("image_id")
            .set_index("image_id")["label"]
        )
        out["label"] = ids.map(majority).astype(object).to_numpy()
        out.loc[ids.isin(majority.index).to_numpy(), "label_source"] = "prior"
    same_class = consensus is not None
    out["boxes"] = [
        _boxes_for(i, label, boxes, same_class) for i, label in zip(out["image_id"], out["label"], strict=True)
    ]
    return out


def label_source(
    consensus_path: Path, consensus: pd.DataFrame | None, prior_path: Path, prior: pd.DataFrame | None
) -> str:
    """Which labels :func:`image_labels` takes, in words for the summary line: the same choice it makes.

    Args:
        consensus_path: Where the consensus table was looked for.
        consensus: That table, or None when the file is absent.
        prior_path: Where the prior labels were looked for.
        prior: That table, or None when the file is absent.

    Returns:
        ``consensus (PATH)``, ``prior labels (PATH)`` or ``none``.
    """
    if consensus is not None:
        return f"consensus ({consensus_path})"
    if prior is not None and len(prior):
        return f"prior labels ({prior_path})"
    return "none"


def split(
    manifest: pd.DataFrame,
    labels: pd.DataFrame,
    settings: SplitParams,
    *,
    previous: pd.DataFrame | None = None,
    allow_empty: bool = False,
) -> SplitResult:
    """Assign every (labelled) manifest image to train, val or test.

    Args:
        manifest: ``manifest.parquet`` rows (``image_id``, ``dup_group`` and the ``group_by`` columns).
        labels: :func:`image_labels` output for the same images.
        settings: Ratios, seed, group columns, unlabeled policy.
        previous: ``splits.parquet`` of an earlier version; its assignments are kept (see the module docstring).
        allow_empty: Cut a split even when no image has a label (otherwise an error).

    Returns:
        ``splits`` sorted by ``image_id`` with :data:`SPLIT_COLUMNS`; ``report`` for ``split.json``;
        ``warnings`` (also in the report) for classes too small to split, groups broken by pins and groups above
        ``split.max_group_share`` of their split.

    Raises:
        EmptyDatasetError: no image has a label and ``allow_empty`` is false.
    """
    group_columns = list(dict.fromkeys(["dup_group", *settings.group_by]))
    _require_columns(manifest, ["image_id", *group_columns], "manifest")
    if manifest["image_id"].duplicated().any():
        dup = manifest.loc[manifest["image_id"].duplicated(), "image_id"].iloc[0]
        raise SplitError(f"manifest: image_id {dup!r} occurs more than once; re-run ingest to rebuild the manifest")
    frame = manifest[["image_id"]].reset_index(drop=True).copy()
    label_table = labels.set_index("image_id")
    for column in ("label", "severity", "label_source", "disputed", "boxes", "description"):
        frame[column] = frame["image_id"].map(label_table[column]).to_numpy()
    frame["group"] = _groups(manifest.reset_index(drop=True), group_columns)
    frame["stratum"] = frame["label"].where(frame["label"].notna(), UNLABELED)
    frame["stratum"] = frame["group"].map(_majority(frame))
    if not allow_empty and frame["label"].notna().sum() == 0:
        raise EmptyDatasetError(
            f"none of the {len(frame)} image(s) has a label, so the split would hold no labelled image; import "
            "labels (curation ingest --labels, or ingest.labels), or review them in Label Studio and run agreement; "
            "pass --allow-empty to split unlabelled images on purpose"
        )

    n_dropped = 0
    if settings.unlabeled == "drop":
        keep = frame["label"].notna()
        n_dropped = int((~keep).sum())
        frame = frame[keep].reset_index(drop=True)

    pins = _pins(previous)
    frame["split"] = frame["image_id"].map(pins).astype(object)
    frame["pinned"] = frame["split"].notna()
    warnings: list[str] = []
    _follow_pinned_groups(frame, warnings)
    ratios = settings.ratios
    for stratum, rows in frame.groupby("stratum", sort=True):
        free = rows[rows["split"].isna()]
        if free.empty:
            continue
        sizes = free.groupby("group").size()
        keys = free.groupby("group")["image_id"].min()
        order = sorted(sizes.index, key=lambda g: (-sizes[g], _unit_hash(settings.seed, keys[g]), keys[g]))
        assigned = rows["split"].value_counts()
        targets = _deficits(ratios, len(rows), {s: int(assigned.get(s, 0)) for s in SPLITS}, len(free))
        chosen = _fill([int(sizes[g]) for g in order], targets, [s for s in SPLITS if ratios[s] > 0])
        frame.loc[free.index, "split"] = free["group"].map(dict(zip(order, chosen, strict=True)))
        n_groups = rows["group"].nunique()
        needed = sum(1 for r in ratios.values() if r > 0)
        if n_groups < needed:
            warnings.append(
                f"class {stratum!r} has {len(rows)} image(s) in {n_groups} group(s), fewer than the {needed} "
                "splits: it cannot appear in every split; label more images of it"
            )

    warnings += _large_groups(frame, settings.max_group_share)
    frame = frame.sort_values("image_id", kind="stable").reset_index(drop=True)
    splits = frame[SPLIT_COLUMNS].astype({"pinned": bool, "disputed": bool})
    report = _report(frame, ratios, n_dropped, len(pins), previous, warnings)
    return SplitResult(splits, report, warnings)


def write_split(result: SplitResult, out_dir: Path) -> None:
    """Write ``splits.parquet``, ``split.json`` and ``class_counts.csv`` into ``out_dir`` as one set."""
    counts = result.splits.assign(cls=result.splits["label"].fillna(UNLABELED))
    table = counts.groupby(["cls", "split"]).size().rename("images").reset_index().rename(columns={"cls": "class"})
    with publish(out_dir) as staging:
        write_parquet(staging / "splits.parquet", result.splits)
        write_json(staging / "split.json", result.report)
        write_headline(staging, "split", result.report)
        if len(table):  # DVC plot data: written only with rows (no images, no plot)
            write_csv(staging / "class_counts.csv", table)


def read_previous(path: Path | None) -> pd.DataFrame | None:
    """The previous release's ``splits.parquet``, or None when ``path`` is None or does not exist."""
    if path is None or not Path(path).is_file():
        return None
    from curation.tables import read_table

    # the pins need two columns; the earlier labels and boxes stay on disk
    return read_table(path, SplitRow, columns=["image_id", "split"], fix="restore it from git", error=SplitError)


def _groups(manifest: pd.DataFrame, columns: list[str]) -> np.ndarray[Any, np.dtype[np.object_]]:
    """Connected components over images linked by equal non-null values in ``columns``; named by smallest id."""
    n = len(manifest)
    rows, cols = [], []
    for column in columns:
        values = manifest[column]
        present = values.notna().to_numpy()
        codes = pd.factorize(values[present].astype(str))[0]
        index = np.flatnonzero(present)
        # link each image to the first image holding the same value: a star per value, enough for components
        first = pd.Series(index).groupby(codes).transform("first").to_numpy()
        rows.append(index)
        cols.append(first)
    row = np.concatenate(rows) if rows else np.array([], dtype=int)
    col = np.concatenate(cols) if cols else np.array([], dtype=int)
    graph = coo_matrix((np.ones(len(row), dtype=np.int8), (row, col)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    ids = manifest["image_id"].astype(str)
    names: np.ndarray[Any, np.dtype[np.object_]] = ids.groupby(component).transform("min").to_numpy()
    return names


def _majority(frame: pd.DataFrame) -> pd.Series:
    """Stratum of each group: its most frequent class (ties: first name), so a mixed group is cut once."""
    counts = frame.groupby(["group", "stratum"]).size().rename("n").reset_index()
    counts = counts.sort_values(["group", "n", "stratum"], ascending=[True, False, True])
    return counts.drop_duplicates("group").set_index("group")["stratum"]


def _pins(previous: pd.DataFrame | None) -> dict[str, str]:
    if previous is None:
        return {}
    bad = previous.loc[~previous["split"].isin(SPLITS), "split"]
    if len(bad):
        raise SplitError(f"previous splits: unknown split {bad.iloc[0]!r}; expected one of {list(SPLITS)}")
    return dict(zip(previous["image_id"].astype(str), previous["split"].astype(str), strict=True))


def _follow_pinned_groups(frame: pd.DataFrame, warnings: list[str]) -> None:
    """New images in a group with pinned members take the group's split (see the module docstring)."""
    pinned = frame[frame["pinned"]]
    if pinned.empty:
        return
    by_group = pinned.groupby("group")["split"].agg(lambda s: sorted(set(s), key=HELD_OUT_ORDER.index))
    crossing = by_group[by_group.map(len) > 1]
    for group, names in crossing.items():
        warnings.append(
            f"group {group!r} now joins images pinned to {names}: old images keep their split, new ones go to "
            f"{names[0]!r}; review these near-duplicates"
        )
    new = frame["split"].isna() & frame["group"].isin(by_group.index)
    frame.loc[new, "split"] = frame.loc[new, "group"].map(by_group.map(lambda names: names[0]))


def _unit_hash(seed: int, key: str) -> float:
    """Map (seed, key) to [0, 1) through SHA-256: the same on every machine and Python version."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _deficits(ratios: dict[str, float], n_total: int, assigned: dict[str, int], n_free: int) -> dict[str, float]:
    """Image counts the free groups should add per split so that each split approaches ``ratio * n_total``."""
    want = {s: max(0.0, ratios[s] * n_total - assigned[s]) if ratios[s] > 0 else 0.0 for s in SPLITS}
    total = sum(want.values())
    if total <= 0:  # every split already at or above target: share the new images by the ratios
        want = {s: ratios[s] for s in SPLITS}
        total = 1.0
    return {s: want[s] * n_free / total for s in SPLITS}


def _fill(sizes: list[int], targets: dict[str, float], allowed: list[str]) -> list[str]:
    """Place groups in order, each where the error ``|count - target|`` grows least (ties: the larger deficit).

    Hand-written: this is greedy number partitioning (largest first, to the emptiest bin relative to its target),
    a few lines; scikit-learn's group splitters take no ratios and no pinned counts.
    """
    filled = dict.fromkeys(allowed, 0.0)
    chosen = []
    for size in sizes:

        def cost(name: str, size: int = size) -> tuple[float, float, int]:
            gap = targets[name] - filled[name]
            return abs(gap - size) - abs(gap), -gap, allowed.index(name)

        best = min(allowed, key=cost)
        filled[best] += size
        chosen.append(best)
    return chosen


def _large_groups(frame: pd.DataFrame, max_share: float) -> list[str]:
    """One warning per group of two or more images that is more than ``max_share`` of the split it is in."""
    split_sizes = frame["split"].value_counts()
    counts = frame.groupby(["group", "split"]).size().rename("n").reset_index()
    counts["share"] = counts["n"] / counts["split"].map(split_sizes)
    large = counts[(counts["n"] > 1) & (counts["share"] > max_share)]
    large = large.sort_values(["share", "group", "split"], ascending=[False, True, True])
    return [
        f"group {group!r} holds {n} images, {share:.1%} of split {name!r} ({split_sizes[name]} images), above "
        f"split.max_group_share = {max_share:g}: they count as one sample there; check that the group is real "
        "(manifest dup_group, split.group_by) or raise the share"
        for group, name, n, share in large[["group", "split", "n", "share"]].itertuples(index=False)
    ]


def _report(
    frame: pd.DataFrame,
    ratios: dict[str, float],
    n_dropped: int,
    n_pins: int,
    previous: pd.DataFrame | None,
    warnings: list[str],
) -> dict[str, Any]:
    per_class: dict[str, Any] = {}
    image_class = frame["label"].where(frame["label"].notna(), UNLABELED)
    for cls, rows in frame.groupby(image_class, sort=True):
        counts = rows["split"].value_counts()
        n = len(rows)
        per_class[str(cls)] = {
            "images": n,
            "groups": int(rows["group"].nunique()),
            **{s: int(counts.get(s, 0)) for s in SPLITS},
            "ratio": {s: round(counts.get(s, 0) / n, 4) for s in SPLITS},
            "max_deviation_images": round(max(abs(counts.get(s, 0) - ratios[s] * n) for s in SPLITS), 2),
        }
    counts = frame["split"].value_counts()
    n = len(frame)
    removed = 0
    if previous is not None:
        removed = int((~previous["image_id"].isin(frame["image_id"])).sum())
    return {
        "images": n,
        "groups": int(frame["group"].nunique()),
        "splits": {s: int(counts.get(s, 0)) for s in SPLITS},
        "ratio": {s: round(counts.get(s, 0) / n, 4) if n else 0.0 for s in SPLITS},
        "target": ratios,
        "classes": per_class,
        "unlabeled_dropped": n_dropped,
        "label_sources": {str(k): int(v) for k, v in Counter(frame["label_source"]).most_common()},
        "pinned": int(frame["pinned"].sum()),
        "pins_in_previous": n_pins,
        "previous_images_removed": removed,
        "warnings": warnings,
    }


def _prior_boxes(prior: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    _require_columns(prior, ["image_id", "label", "x", "y", "w", "h"], "prior labels")
    shaped = prior["polygons"].notna() if "polygons" in prior.columns else pd.Series(False, index=prior.index)
    rows = prior[prior["label"].notna() & (prior[["x", "y", "w", "h"]].notna().all(axis=1) | shaped)]
    boxes: dict[str, list[dict[str, Any]]] = {}
    for position, row in zip(rows.index, rows.itertuples(index=False), strict=True):
        box = {"x": row.x, "y": row.y, "w": row.w, "h": row.h, "label": str(row.label)}
        if shaped[position]:
            box.update(_shape(row, position))
        for key in ("x", "y", "w", "h", "area"):
            if key in box:
                box[key] = float(box[key])
        boxes.setdefault(str(row.image_id), []).append(box)
    return boxes


def _shape(row: Any, position: int) -> dict[str, Any]:
    """``segmentation`` and ``area`` of a prior label with polygons (its box from the polygons when it has none)."""
    from curation.shapes import parse_polygons, polygons_box

    try:
        polygons = parse_polygons(row.polygons)
    except ValueError as err:
        raise SplitError(
            f"prior labels: row {position + 1} (1-based, image {row.image_id}): polygons cannot be read ({err}); "
            "fix or remove the mask or polygon file it came from and re-run ingest"
        ) from None
    shape: dict[str, Any] = {"segmentation": polygons}
    if pd.isna(row.x) or pd.isna(row.y) or pd.isna(row.w) or pd.isna(row.h):
        shape.update(zip(("x", "y", "w", "h"), polygons_box(polygons), strict=True))
    area = getattr(row, "area", None)
    if area is not None and not pd.isna(area):
        shape["area"] = area
    return shape


def _boxes_for(
    image_id: str, label: str | None, boxes: dict[str, list[dict[str, Any]]], same_class: bool
) -> str | None:
    found = boxes.get(image_id)
    if not found or pd.isna(label):
        return None
    kept = [b for b in found if b["label"] == label] if same_class else found
    return boxes_to_json(kept)


def _check_labels(values: pd.Series, known: set[str], what: str) -> None:
    unknown = sorted(set(values.dropna().astype(str)) - known)
    if unknown:
        raise SplitError(
            f"{what}: label(s) {unknown} are not ontology classes; fix them or add them to ontology.classes"
        )


def _require_columns(frame: pd.DataFrame, needed: list[str], what: str) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise SplitError(
            f"{what}: missing column(s) {missing}; columns present: {list(frame.columns)}"
            + (" (split.group_by names manifest columns, e.g. dup_group or meta_line)" if what == "manifest" else "")
        )
