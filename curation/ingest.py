"""Ingest: every file under the raw folder ends up ingested, a duplicate copy, quarantined, or skipped, never lost.

Outputs (``write_ingest``): ``manifest.parquet`` (one row per unique image, :class:`ImageRecord` columns plus
``meta_*``), ``quarantine.csv``, ``skipped.csv``, ``issues.csv`` (metadata and label problems),
``prior_labels.parquet`` (empty when no labels are imported) and ``ingest.json`` (DVC metrics).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from curation.discover import Discovery, discover
from curation.io import write_csv, write_json, write_parquet
from curation.labels import ImageRef, read_prior_labels
from curation.metadata import MetadataJoin, join_metadata, read_metadata
from curation.neardup import near_duplicate_components
from curation.probe import Probe, probe_file
from schemas.params import IngestParams
from schemas.records import ImageRecord, PriorLabel, QuarantineRecord, columns

ID_LENGTH = 16
_SERIAL_BELOW = 64  # fewer files than this are probed in-process: starting workers would cost more
ISSUE_COLUMNS = ["kind", "source", "detail"]
SKIPPED_COLUMNS = ["path", "rel_path", "reason"]

Progress = Callable[[int], None]


@dataclass(frozen=True)
class IngestResult:
    manifest: pd.DataFrame
    quarantine: pd.DataFrame
    skipped: pd.DataFrame
    prior_labels: pd.DataFrame
    issues: pd.DataFrame
    report: dict[str, Any]


def ingest(
    raw_dir: Path,
    settings: IngestParams,
    *,
    class_names: Sequence[str],
    on_start: Callable[[int], None] | None = None,
    on_progress: Progress | None = None,
) -> IngestResult:
    """Validate, hash and de-duplicate every image under ``raw_dir``; join metadata; import prior labels.

    Args:
        raw_dir: Folder of raw images (walked recursively; never modified).
        settings: Ingest params; ``settings.metadata`` and ``settings.labels`` are used when set.
        class_names: Ontology classes, to resolve imported labels.
        on_start: Called once with the number of files to probe.
        on_progress: Called with the number of files probed since the last call.
    """
    raw_dir = Path(raw_dir)
    found = discover(raw_dir, settings.extensions)
    if on_start:
        on_start(len(found.candidates))
    probes = list(_probe_all(raw_dir, found.candidates, settings, on_progress))
    good = [p for p in probes if p.reason is None]
    quarantine = _quarantine_frame(raw_dir, probes, found)

    copies: dict[str, list[Probe]] = defaultdict(list)
    for probe in good:
        copies[probe.sha256].append(probe)
    uniques = sorted((min(group, key=lambda p: p.rel_path) for group in copies.values()), key=lambda p: p.sha256)
    _check_ids_unique(uniques)

    issues: list[tuple[str, str, str]] = []
    join = None
    if settings.metadata is not None:
        table = read_metadata(settings.metadata, settings.metadata_key)
        join = join_metadata(table, settings.metadata_key, [*found.candidates, *found.loops])
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
    manifest = _manifest_frame(raw_dir, uniques, copies, settings.phash_threshold, join)
    if join is not None:
        issues += [
            ("metadata_missing", rel, f"no row in {settings.metadata}")
            for rel, paths in zip(manifest["rel_path"], manifest["all_paths"], strict=True)
            if not any(p in join.by_file for p in paths)
        ]

    prior = pd.DataFrame(columns=columns(PriorLabel))
    if settings.labels is not None:
        refs = {p.rel_path: ImageRef(p.sha256[:ID_LENGTH], p.width, p.height) for p in good}
        imported = read_prior_labels(
            settings.labels,
            raw_dir,
            refs,
            class_names=class_names,
            labels_path=settings.labels_path,
            label_map=settings.label_map,
        )
        prior = imported.labels
        issues += [("label", i.source_file, i.detail) for i in imported.issues]

    issue_frame = pd.DataFrame(sorted(issues), columns=ISSUE_COLUMNS)
    skipped = pd.DataFrame(
        [(_joined(raw_dir, rel), rel, "extension not in ingest.extensions") for rel in found.skipped],
        columns=SKIPPED_COLUMNS,
    )
    report = _report(found, manifest, quarantine, skipped, prior, issue_frame, len(good))
    return IngestResult(manifest, quarantine, skipped, prior, issue_frame, report)


def write_ingest(result: IngestResult, out_dir: Path) -> None:
    """Write every ingest output atomically into ``out_dir``."""
    out_dir = Path(out_dir)
    write_parquet(out_dir / "manifest.parquet", result.manifest)
    write_parquet(out_dir / "prior_labels.parquet", result.prior_labels)
    write_csv(out_dir / "quarantine.csv", result.quarantine)
    write_csv(out_dir / "skipped.csv", result.skipped)
    write_csv(out_dir / "issues.csv", result.issues)
    write_json(out_dir / "ingest.json", result.report)


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


def _quarantine_frame(raw_dir: Path, probes: list[Probe], found: Discovery) -> pd.DataFrame:
    rows = [
        QuarantineRecord(
            path=_joined(raw_dir, p.rel_path),
            rel_path=p.rel_path,
            reason=p.reason,
            detail=p.detail,
            size_bytes=p.size_bytes,
        ).model_dump()
        for p in probes
        if p.reason is not None
    ]
    rows += [
        QuarantineRecord(
            path=_joined(raw_dir, rel),
            rel_path=rel,
            reason="symlink_loop",
            detail="folder symlink leads back to a folder above it; not followed",
            size_bytes=None,
        ).model_dump()
        for rel in found.loops
    ]
    rows += [
        QuarantineRecord(
            path=_joined(raw_dir, rel),
            rel_path=rel,
            reason="unreadable",
            detail="folder cannot be listed (check its permissions); files inside it were not seen",
            size_bytes=None,
        ).model_dump()
        for rel in found.unreadable_dirs
    ]
    frame = pd.DataFrame(rows, columns=columns(QuarantineRecord))
    return frame.sort_values("rel_path", kind="stable").reset_index(drop=True).astype({"size_bytes": "Int64"})


def _manifest_frame(
    raw_dir: Path,
    uniques: list[Probe],
    copies: dict[str, list[Probe]],
    threshold: int,
    join: MetadataJoin | None,
) -> pd.DataFrame:
    components = near_duplicate_components([p.phash for p in uniques], threshold)
    ids = [p.sha256[:ID_LENGTH] for p in uniques]
    members: dict[int, list[str]] = defaultdict(list)
    for component, image_id in zip(components, ids, strict=True):
        members[int(component)].append(image_id)
    records = []
    for probe, image_id, component in zip(uniques, ids, components, strict=True):
        group = members[int(component)]
        all_paths = sorted(c.rel_path for c in copies[probe.sha256])
        record = ImageRecord(
            image_id=image_id,
            sha256=probe.sha256,
            path=_joined(raw_dir, probe.rel_path),
            rel_path=probe.rel_path,
            all_paths=all_paths,
            n_copies=len(all_paths),
            size_bytes=probe.size_bytes,
            width=probe.width,
            height=probe.height,
            mode=probe.mode,
            format=probe.format,
            exif_orientation=probe.exif_orientation,
            phash=probe.phash,
            dup_group=min(group),
            dup_group_size=len(group),
        ).model_dump()
        if join is not None:
            row = next((join.by_file[p] for p in all_paths if p in join.by_file), {})
            record.update({column: row.get(column) for column in join.columns})
        records.append(record)
    meta_columns = join.columns if join is not None else []
    frame = pd.DataFrame(records, columns=[*columns(ImageRecord), *meta_columns])
    return frame.sort_values("image_id", kind="stable").reset_index(drop=True)


def _check_ids_unique(uniques: list[Probe]) -> None:
    prefixes = Counter(p.sha256[:ID_LENGTH] for p in uniques)
    clash = [prefix for prefix, count in prefixes.items() if count > 1]
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
) -> dict[str, Any]:
    groups = manifest.loc[manifest["dup_group_size"] > 1, "dup_group"]
    by_reason = quarantine["reason"].value_counts().sort_index()
    report: dict[str, Any] = {
        "files_seen": len(found.candidates) + len(found.loops) + len(found.unreadable_dirs),
        "ingested": len(manifest),
        "duplicate_copies": n_good - len(manifest),
        "near_duplicate_groups": int(groups.nunique()),
        "near_duplicate_images": len(groups),
        "quarantined": len(quarantine),
        "quarantined_by_reason": {str(k): int(v) for k, v in by_reason.items()},
        "skipped_other_files": len(skipped),
        "issues_by_kind": {str(k): int(v) for k, v in issues["kind"].value_counts().sort_index().items()},
        "prior_labels": len(prior),
        "prior_labels_unmapped": int(prior["label"].isna().sum()) if len(prior) else 0,
    }
    accounted = report["ingested"] + report["duplicate_copies"] + report["quarantined"]
    if accounted != report["files_seen"]:  # a bug, not bad input: fail loudly rather than lose a file
        raise RuntimeError(f"ingest lost track of files: seen {report['files_seen']}, accounted {accounted}")
    return report


def _joined(raw_dir: Path, rel_path: str) -> str:
    return str(PurePosixPath(Path(raw_dir).as_posix()) / rel_path)
