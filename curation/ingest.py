"""Ingest: every file under the raw folder ends up ingested, a duplicate copy, quarantined, a mask, or skipped.

Outputs (``write_ingest``): ``manifest.parquet`` (one row per unique image, :class:`ImageRecord` columns plus
``meta_*``), ``quarantine.csv``, ``skipped.csv``, ``issues.csv`` (metadata, label and mask problems),
``prior_labels.parquet`` (empty when no labels are imported), ``masks.csv`` (files taken for masks) and
``ingest.json`` (DVC metrics). The metadata CSV and label files are checked before any image is decoded.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import pairwise, repeat
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from curation.copies import merge_copies
from curation.discover import Discovery, discover
from curation.errors import LabelImportError
from curation.headline import write_headline
from curation.io import publish, write_csv, write_json, write_parquet
from curation.labels import ImageRef, check_label_source, label_resolver, labels_frame, read_prior_labels
from curation.masks import MaskFile, find_masks, mask_labels, masks_frame
from curation.metadata import MetadataJoin, join_metadata, metadata_labels, read_metadata
from curation.neardup import THUMB_SIDE, NearDuplicates, near_duplicate_groups
from curation.ontology import OntologyPlan, plan_classes
from curation.probe import Probe, probe_file
from schemas.params import IngestParams
from schemas.records import ImageRecord, QuarantineRecord, columns

ID_LENGTH = 16
_SERIAL_BELOW = 64  # fewer files than this are probed in-process: starting workers would cost more
ISSUE_COLUMNS = ["kind", "source", "detail"]
_LABEL_ISSUE_KINDS = frozenset({"label", "mask", "label_conflict"})
"""issues.csv kinds that mean an imported label (or a mask) was not taken in as it is."""
SKIPPED_COLUMNS = ["path", "rel_path", "reason"]

_PROBE_COLUMNS = (
    "rel_path",
    "sha256",
    "size_bytes",
    "width",
    "height",
    "mode",
    "format",
    "exif_orientation",
    "phash",
    "binary",
    "thumbnail",  # bytes, only for grouping: not a manifest column
)
_PROBE_INTS = ("size_bytes", "width", "height", "exif_orientation")
_PROBE_STRINGS = ("rel_path", "sha256", "mode", "format", "phash")
_CHUNK = 8192  # probes turned into compact columns at a time
# ingest.json's near_duplicate_group_sizes: (bucket name, smallest, largest group size)
_GROUP_SIZE_BUCKETS = (
    ("2", 2, 2),
    ("3-4", 3, 4),
    ("5-8", 5, 8),
    ("9-16", 9, 16),
    ("17-64", 17, 64),
    ("65+", 65, 2**62),
)
_LOOP_DETAIL = "folder symlink leads back to a folder above it; not followed"
_UNREADABLE_DETAIL = "folder cannot be listed (check its permissions); files inside it were not seen"

Progress = Callable[[int], None]


@dataclass(frozen=True)
class IngestResult:
    manifest: pd.DataFrame
    quarantine: pd.DataFrame
    skipped: pd.DataFrame
    prior_labels: pd.DataFrame
    issues: pd.DataFrame
    report: dict[str, Any]
    masks: pd.DataFrame
    ontology_plan: OntologyPlan | None = None
    """Imported labels of no class, counted per source label (``counts``), and with ``ingest.unmapped_labels:
    add`` the classes and label_map entries params.yaml needs (the command writes them); None when every label
    maps."""
    notes: tuple[str, ...] = ()
    """What was left out and why, one line each, for the command to print."""


def ingest(
    raw_dir: Path,
    settings: IngestParams,
    *,
    class_names: Sequence[str],
    on_start: Callable[[int], None] | None = None,
    on_progress: Progress | None = None,
) -> IngestResult:
    """Validate, hash and de-duplicate every image under ``raw_dir``; join metadata; import prior labels and masks.

    Args:
        raw_dir: Folder of raw images (walked recursively; never modified).
        settings: Ingest params; ``settings.metadata``, ``settings.labels`` and ``settings.label_column`` are used
            when set, masks unless ``settings.masks`` is ``off``.
        class_names: Ontology classes, to resolve imported labels.
        on_start: Called once with the number of files to probe.
        on_progress: Called with the number of files probed since the last call.
    """
    raw_dir = Path(raw_dir)
    found = discover(raw_dir, settings.extensions)
    # everything that can fail as a whole is checked before the first image is decoded
    resolve = label_resolver(class_names, settings.label_map)
    table = join = None
    if settings.metadata is not None:
        table = read_metadata(
            settings.metadata,
            settings.metadata_key,
            label_column=settings.label_column,
            label_threshold=settings.label_threshold,
        )
        join = join_metadata(
            table, settings.metadata_key, [*found.candidates, *found.loops], source=str(settings.metadata)
        )
    if settings.labels is not None:
        check_label_source(
            settings.labels, raw_dir, labels_path=settings.labels_path, headerless_box=settings.labels_box
        )

    if on_start:
        on_start(len(found.candidates))
    good, failed = _collect(_probe_all(raw_dir, found.candidates, settings, on_progress))
    masks: list[MaskFile] = []
    issues: list[tuple[str, str, str]] = []
    if settings.masks == "auto":
        masks, mask_issues = find_masks(good, [p.rel_path for p in failed])
        issues += [("mask", rel, detail) for rel, detail in mask_issues]
        good = good[~good["rel_path"].isin({m.rel_path for m in masks})].reset_index(drop=True)
    quarantine = _quarantine_frame(raw_dir, failed, found)
    uniques, all_paths = _deduplicate(good)

    if join is not None:
        issues += [
            ("metadata_unknown_file", f"{settings.metadata}:{line}", f"no file {key!r} under {raw_dir}")
            for line, key in join.unknown_rows
        ]
        issues += [
            (
                "metadata_ambiguous",
                f"{settings.metadata}:{line}",
                f"file name {key!r} occurs in several folders; write its path relative to {raw_dir}",
            )
            for line, key in join.ambiguous_rows
        ]
    near = _near_duplicates(uniques, settings)
    manifest = _manifest_frame(raw_dir, uniques, all_paths, near.labels, join)
    if join is not None:
        issues += [
            ("metadata_missing", rel, f"no row in {settings.metadata}")
            for rel, paths in zip(manifest["rel_path"], manifest["all_paths"], strict=True)
            if not any(p in join.by_file for p in paths)
        ]

    used_masks = any(m.status == "used" for m in masks)
    needs_refs = settings.labels is not None or settings.label_column is not None or used_masks
    refs = (
        {  # one object per file copy: built only when some label source needs it
            rel: ImageRef(sha[:ID_LENGTH], int(width), int(height))
            for rel, sha, width, height in zip(
                good["rel_path"], good["sha256"], good["width"], good["height"], strict=True
            )
        }
        if needs_refs
        else {}
    )
    rows: list[dict[str, Any]] = []
    if settings.labels is not None:
        imported = read_prior_labels(
            settings.labels,
            raw_dir,
            refs,
            class_names=class_names,
            labels_path=settings.labels_path,
            label_map=settings.label_map,
            headerless_box=settings.labels_box,
        )
        rows += imported.labels.to_dict("records")
        issues += [("label", i.source_file, i.detail) for i in imported.issues]
    if table is not None and join is not None and settings.label_column is not None:
        meta_rows, meta_issues = metadata_labels(
            table,
            join,
            refs,
            column=settings.label_column,
            threshold=settings.label_threshold,
            ok_label=settings.ok_label,
            defect_label=settings.defect_label,
            resolve=resolve,
            source_file=str(settings.metadata),
        )
        rows += meta_rows
        issues += [("label", i.source_file, i.detail) for i in meta_issues]
    regions: dict[str, int] = {}
    if used_masks:
        from_masks = mask_labels(
            raw_dir,
            masks,
            refs,
            labels_frame(_without_nan(rows)),  # the classes the other sources give each image
            resolve=resolve,
            ok_label=settings.ok_label,
            defect_label=settings.defect_label,
        )
        rows += from_masks.rows
        issues += [("mask", i.source_file, i.detail) for i in from_masks.issues]
        regions = from_masks.regions
    prior, conflicts = merge_copies(labels_frame(_without_nan(rows)))
    issues += [("label_conflict", rel, detail) for rel, detail in conflicts]
    prior, plan, notes = _resolve_unmapped(prior, settings, class_names)
    label_issues = Counter(kind for kind, _, _ in issues if kind in _LABEL_ISSUE_KINDS)
    if label_issues:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(label_issues.items()))
        notes.append(
            f"{sum(label_issues.values())} label or mask problem(s) to check ({kinds}): labels that could not be "
            "matched or read, copies with conflicting classes (left unlabelled for review), unusable masks or masks "
            "that contradict the image's class; each is a row of issues.csv with its file and the fix"
        )

    issue_frame = pd.DataFrame(sorted(issues), columns=ISSUE_COLUMNS)
    skipped = pd.DataFrame(
        [(_joined(raw_dir, rel), rel, "extension not in ingest.extensions") for rel in found.skipped],
        columns=SKIPPED_COLUMNS,
    )
    mask_frame = masks_frame(masks, refs, regions)
    report = _report(found, manifest, quarantine, skipped, prior, issue_frame, len(good), mask_frame, near)
    if plan is not None:  # labels found of no class: what ingest.unmapped_labels did with them
        report["prior_labels_unmapped"] = sum(plan.counts.values())
        report["prior_labels_unmapped_by_source"] = plan.counts
        report["prior_labels_left_out"] = sum(plan.counts.values()) if settings.unmapped_labels == "skip" else 0
        if settings.unmapped_labels == "add":
            report["classes_added"] = [name for name, _ in plan.added]
    notes += _left_out_notes(report)
    return IngestResult(manifest, quarantine, skipped, prior, issue_frame, report, mask_frame, plan, tuple(notes))


def _without_nan(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows from a frame (NaN for a missing box) and from readers (None) alike: None."""
    return [{k: None if isinstance(v, float) and v != v else v for k, v in row.items()} for row in rows]


def _left_out_notes(report: dict[str, Any]) -> list[str]:
    """The files ingest did not take in, and why, one line each (the counts are also in ingest.json)."""
    notes = []
    if report["quarantined"]:
        reasons = ", ".join(f"{reason} {n}" for reason, n in report["quarantined_by_reason"].items())
        notes.append(f"quarantined {report['quarantined']} file(s) ({reasons}); quarantine.csv says why for each")
    if report["skipped_other_files"]:
        notes.append(
            f"skipped {report['skipped_other_files']} file(s) without an image extension (ingest.extensions); "
            "listed in skipped.csv"
        )
    return notes


def _resolve_unmapped(
    prior: pd.DataFrame, settings: IngestParams, class_names: Sequence[str]
) -> tuple[pd.DataFrame, OntologyPlan | None, list[str]]:
    """Apply ``ingest.unmapped_labels`` to imported labels that map to no ontology class.

    Returns:
        The labels to keep, the ontology plan (None when every label maps), and notes saying what happened.

    Raises:
        LabelImportError: with ``error`` (the default), when any label maps to no class; the message counts them
            per source label and names the fixes.
    """
    unmapped = prior["label"].isna()
    if not unmapped.any():
        return prior, None, []
    counts = prior.loc[unmapped, "source_label"].astype(str).value_counts()
    # a mask adds one row per region beside the image's own label: say on how many images, too
    images = prior.loc[unmapped].groupby(prior.loc[unmapped, "source_label"].astype(str))["image_id"].nunique()
    listed = ", ".join(
        f"{source!r} ({int(counts[source])}"
        + ("" if counts[source] == images[source] else f" labels on {int(images[source])} images")
        + ")"
        for source in sorted(counts.index)
    )
    total = int(unmapped.sum())
    n_images = prior.loc[unmapped, "image_id"].nunique()
    if settings.unmapped_labels == "error":
        raise LabelImportError(
            f"{total} imported label(s) map to no ontology class ({n_images} image(s)): {listed}; map them to "
            "classes in ingest.label_map, add them as classes with `curation ontology init`, or set "
            "ingest.unmapped_labels to skip (leave them out) or add (append them to the ontology)"
        )
    if settings.unmapped_labels == "skip":
        note = f"left out {total} imported label(s) of no ontology class (ingest.unmapped_labels: skip): {listed}"
        plan = OntologyPlan(resolved={}, counts={str(k): int(v) for k, v in counts.items()})
        return prior[~unmapped].reset_index(drop=True), plan, [note]
    plan = plan_classes(
        counts.to_dict(), class_names=class_names, label_map=settings.label_map, ok_label=settings.ok_label
    )
    prior = prior.copy()
    prior.loc[unmapped, "label"] = prior.loc[unmapped, "source_label"].astype(str).map(plan.resolved)
    return prior, plan, []


def write_ingest(result: IngestResult, out_dir: Path) -> None:
    """Write every ingest output into ``out_dir`` as one set (:func:`curation.io.publish`)."""
    with publish(out_dir) as staging:
        write_parquet(staging / "manifest.parquet", result.manifest)
        write_parquet(staging / "prior_labels.parquet", result.prior_labels)
        write_csv(staging / "quarantine.csv", result.quarantine)
        write_csv(staging / "skipped.csv", result.skipped)
        write_csv(staging / "issues.csv", result.issues)
        write_csv(staging / "masks.csv", result.masks)
        write_json(staging / "ingest.json", result.report)
        write_headline(staging, "ingest", result.report)


def _probe_all(
    raw_dir: Path, rel_paths: list[str], settings: IngestParams, on_progress: Progress | None
) -> Iterator[Probe]:
    paths = [os.path.join(raw_dir, rel) for rel in rel_paths]
    workers = settings.workers or os.cpu_count() or 1
    if workers == 1 or len(paths) < _SERIAL_BELOW:
        results: Iterator[Probe] = map(probe_file, paths, rel_paths, repeat(settings.max_pixels))
        executor = None
    else:
        # fork where the OS has it: measured here, workers started by forkserver probed no faster than one
        # process. Safe because curation.progress draws from this thread, so no other thread holds locks.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        executor = ProcessPoolExecutor(max_workers=workers, mp_context=context)
        chunk = max(1, min(64, len(paths) // (workers * 8)))
        results = executor.map(probe_file, paths, rel_paths, repeat(settings.max_pixels), chunksize=chunk)
    try:
        for probe in results:
            if on_progress:
                on_progress(1)
            yield probe
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)


def _collect(probes: Iterable[Probe]) -> tuple[pd.DataFrame, list[Probe]]:
    """Usable probes as compact columns (built a chunk at a time), failed ones as they are (few).

    One column per :data:`_PROBE_COLUMNS`, in probe order; string columns are Arrow-backed, so a row costs its bytes,
    not a Python object per value.
    """
    frames: list[pd.DataFrame] = []
    chunk: list[tuple] = []
    failed: list[Probe] = []
    for probe in probes:
        if probe.reason is not None:
            failed.append(probe)
            continue
        chunk.append(tuple(getattr(probe, name) for name in _PROBE_COLUMNS))
        if len(chunk) == _CHUNK:
            frames.append(_good_frame(chunk))
            chunk = []
    frames.append(_good_frame(chunk))
    return pd.concat(frames, ignore_index=True), failed


def _good_frame(rows: list[tuple]) -> pd.DataFrame:
    import pyarrow as pa

    frame = pd.DataFrame(rows, columns=list(_PROBE_COLUMNS))
    typed = frame.astype({c: "int64" for c in _PROBE_INTS}).astype({c: "str" for c in _PROBE_STRINGS})
    # thumbnails: THUMB_SIDE**2 bytes a row, no Python object each
    return typed.astype({"binary": "bool", "thumbnail": pd.ArrowDtype(pa.binary())})


def _deduplicate(good: pd.DataFrame) -> tuple[pd.DataFrame, list[list[str]]]:
    """One row per content hash (the copy with the smallest rel_path), sorted by hash, and every copy's rel_path.

    A global step: it needs every usable file's hash at once, so it works on the compact columns only.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    keys = pa.table({"sha256": pa.array(good["sha256"]), "rel_path": pa.array(good["rel_path"])})
    # Arrow sorts the strings in place (UTF-8 byte order = code point order, as Python's sort): no Python objects
    order = pc.sort_indices(keys, sort_keys=[("sha256", "ascending"), ("rel_path", "ascending")])
    ordered = good.take(order.to_numpy()).reset_index(drop=True)
    first = ~ordered["sha256"].duplicated().to_numpy()
    starts = np.flatnonzero(first)
    rel_paths = ordered["rel_path"].tolist()
    bounds = [*starts.tolist(), len(rel_paths)]
    all_paths = [rel_paths[start:end] for start, end in pairwise(bounds)]
    uniques = ordered.iloc[starts].reset_index(drop=True)
    _check_ids_unique(uniques["sha256"])
    return uniques, all_paths


def _quarantine_frame(raw_dir: Path, failed: list[Probe], found: Discovery) -> pd.DataFrame:
    rows = [_quarantine_row(raw_dir, p.rel_path, p.reason, p.detail, p.size_bytes) for p in failed]
    rows += [_quarantine_row(raw_dir, rel, "symlink_loop", _LOOP_DETAIL, None) for rel in found.loops]
    rows += [_quarantine_row(raw_dir, rel, "unreadable", _UNREADABLE_DETAIL, None) for rel in found.unreadable_dirs]
    frame = pd.DataFrame(rows, columns=columns(QuarantineRecord))
    return frame.sort_values("rel_path", kind="stable").reset_index(drop=True).astype({"size_bytes": "Int64"})


def _quarantine_row(raw_dir: Path, rel_path: str, reason: Any, detail: str, size_bytes: int | None) -> dict:
    return QuarantineRecord(
        path=_joined(raw_dir, rel_path), rel_path=rel_path, reason=reason, detail=detail, size_bytes=size_bytes
    ).model_dump()


def _manifest_frame(
    raw_dir: Path,
    uniques: pd.DataFrame,
    all_paths: list[list[str]],
    dup_groups: np.ndarray,
    join: MetadataJoin | None,
) -> pd.DataFrame:
    """The manifest, built column by column from the unique images (sorted by sha256, hence by image_id)."""
    if uniques.empty:  # untyped columns, as an empty manifest has always been written
        return pd.DataFrame([], columns=[*columns(ImageRecord), *(join.columns if join is not None else [])])
    ids = uniques["sha256"].str[:ID_LENGTH]
    group = ids.groupby(dup_groups)
    prefix = _joined(raw_dir, "x")[:-1]  # rel_paths from discover are clean, so joining is concatenating
    data: dict[str, Any] = {
        "image_id": ids,
        "sha256": uniques["sha256"],
        "path": prefix + uniques["rel_path"],
        "rel_path": uniques["rel_path"],
        "all_paths": all_paths,
        "n_copies": [len(paths) for paths in all_paths],
        **{name: uniques[name] for name in _PROBE_COLUMNS if name not in ("rel_path", "sha256")},
        "dup_group": group.transform("min"),
        "dup_group_size": group.transform("size").astype("int64"),
    }
    frame = pd.DataFrame(data, columns=columns(ImageRecord))
    _check_records(frame)
    if join is not None:
        found = [next((join.by_file[p] for p in paths if p in join.by_file), -1) for paths in all_paths]
        for k, column in enumerate(join.columns):
            values = join.values[:, k]
            frame[column] = [values[row] if row >= 0 else None for row in found]
    return frame


def _near_duplicates(uniques: pd.DataFrame, settings: IngestParams) -> NearDuplicates:
    """Near-duplicate groups of the unique images, in their (content-hash) order: see :mod:`curation.neardup`."""
    pixels = np.frombuffer(b"".join(uniques["thumbnail"].tolist()), dtype=np.uint8)
    return near_duplicate_groups(
        uniques["phash"].tolist(),
        pixels.reshape(len(uniques), THUMB_SIDE, THUMB_SIDE),
        settings.phash_threshold,
        min_correlation=settings.near_duplicate_min_correlation,
    )


def _group_sizes(sizes: pd.Series) -> dict[str, int]:
    """Near-duplicate groups (of two or more images) counted by size bucket; every bucket is always present."""
    counts = sizes.value_counts()
    return {
        name: int(counts[(counts.index >= low) & (counts.index <= high)].sum())
        for name, low, high in _GROUP_SIZE_BUCKETS
    }


def _check_records(frame: pd.DataFrame) -> None:
    """What building an :class:`ImageRecord` per row checked, once per column: every field set, ints integral.

    The columns come from decoded probes, so a failure here is a bug, not bad input.
    """
    for name, field in ImageRecord.model_fields.items():
        column = frame[name]
        integral = not len(column) or pd.api.types.is_integer_dtype(column)
        if column.isna().any() or (field.annotation is int and not integral):
            raise RuntimeError(f"manifest column {name!r} does not hold {field.annotation} for every image")


def _check_ids_unique(sha256: pd.Series) -> None:
    prefixes = sha256.str[:ID_LENGTH]
    clash = sorted(set(prefixes[prefixes.duplicated()]))
    if clash:  # 64-bit prefixes: practically never, but a silent merge of two images would be far worse
        raise RuntimeError(f"image_id prefix collision for {clash}; raise curation.ingest.ID_LENGTH")


def _report(
    found: Discovery,
    manifest: pd.DataFrame,
    quarantine: pd.DataFrame,
    skipped: pd.DataFrame,
    prior: pd.DataFrame,
    issues: pd.DataFrame,
    n_good: int,
    masks: pd.DataFrame,
    near: NearDuplicates,
) -> dict[str, Any]:
    groups = manifest.loc[manifest["dup_group_size"] > 1, "dup_group"]
    group_sizes = groups.value_counts()
    by_reason = quarantine["reason"].value_counts().sort_index()
    report: dict[str, Any] = {
        "files_seen": len(found.candidates) + len(found.loops) + len(found.unreadable_dirs),
        "ingested": len(manifest),
        "duplicate_copies": n_good - len(manifest),
        "near_duplicate_groups": int(groups.nunique()),
        "near_duplicate_images": len(groups),
        "near_duplicate_group_sizes": _group_sizes(group_sizes),
        "near_duplicate_largest_group": int(manifest["dup_group_size"].max()) if len(manifest) else 0,
        "near_duplicate_pairs_across_groups": near.pairs_across_groups,
        "near_duplicate_low_information": near.low_information,
        "quarantined": len(quarantine),
        "quarantined_by_reason": {str(k): int(v) for k, v in by_reason.items()},
        "skipped_other_files": len(skipped),
        "issues_by_kind": {str(k): int(v) for k, v in issues["kind"].value_counts().sort_index().items()},
        "prior_labels": len(prior),
        "prior_labels_unmapped": int(prior["label"].isna().sum()) if len(prior) else 0,
        "masks": len(masks),
        "masks_by_status": {str(k): int(v) for k, v in masks["status"].value_counts().sort_index().items()},
        "mask_regions": int(masks["regions"].sum()),
        "masks_empty": int((masks["regions"] == 0).sum()),
        "prior_labels_by_format": {
            str(k): int(v) for k, v in prior["source_format"].value_counts().sort_index().items()
        },
    }
    accounted = report["ingested"] + report["duplicate_copies"] + report["quarantined"] + report["masks"]
    if accounted != report["files_seen"]:  # a bug, not bad input: fail loudly rather than lose a file
        raise RuntimeError(f"ingest lost track of files: seen {report['files_seen']}, accounted {accounted}")
    return report


def _joined(raw_dir: Path, rel_path: str) -> str:
    return str(PurePosixPath(Path(raw_dir).as_posix()) / rel_path)
