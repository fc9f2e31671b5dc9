"""Release: push the data, write the dataset card, commit ``dvc.lock`` and tag, so ``git checkout NAME && dvc pull``
gives exactly this dataset.

Order matters: every check runs first (git repo with DVC, a free valid tag name, nothing else staged, the
released stages up to date), then the data is pushed, and only then are the card, ``dvc.lock`` and the pinned
splits committed and tagged. A failed push therefore leaves no tag pointing at data the remote does not have.

The release also copies ``splits.parquet`` to ``split.previous`` (``releases/splits.parquet`` by default): the next
split run pins these assignments, so no released test image ever moves into a later training set.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from curation.errors import CurationError
from curation.headline import METRICS_FILE
from schemas.ontology import Ontology
from schemas.params_dataset import SPLITS, ReleaseParams, SplitParams

_Settings = TypeVar("_Settings", ReleaseParams, SplitParams)


class ReleaseError(CurationError):
    """The release could not be made; nothing was committed or tagged."""


@dataclass(frozen=True)
class ReleaseResult:
    name: str
    version: str
    remote: str
    remote_url: str
    card: Path
    commit: str


def release(
    repo: Path,
    name: str,
    settings: ReleaseParams,
    *,
    ontology: Ontology,
    split_settings: SplitParams,
    message: str | None = None,
) -> ReleaseResult:
    """Release the current pipeline outputs of ``repo`` as ``name``.

    Args:
        repo: Root of a git repository with DVC initialised and the pipeline run (``dvc repro``).
        name: Tag name, e.g. ``v1.0``; must be a valid, unused git tag.
        settings: Remote, card path, stages that must be up to date, output folders.
        ontology: For the card's class table.
        split_settings: Where to pin this release's splits (``previous``), and the card's split description.
        message: Extra text for the commit and tag message.

    Raises:
        ReleaseError: not a git + DVC repo, bad or used tag name, other changes staged, stages not up to date,
            missing export, a failed push. Nothing is committed or tagged then.
    """
    repo = Path(repo).resolve()
    settings, split_settings = _within(repo, settings), _within(repo, split_settings)
    _check_repo(repo, name)
    _check_up_to_date(repo, settings.stages)
    export_report = _read_json(repo / settings.export_dir / "export.json")
    if export_report is None:
        raise ReleaseError(f"{repo / settings.export_dir}/export.json not found; run `dvc repro` before releasing")

    remote, remote_url = _ensure_remote(repo, settings)
    _dvc(repo, "push", "-r", remote)  # everything in dvc.lock, so `dvc pull` at the tag finds it all

    card = repo / settings.card
    card.write_text(dataset_card(repo, name, settings, ontology, split_settings, remote), encoding="utf-8")
    to_add = [settings.card, Path("dvc.lock"), Path(".dvc") / "config"]
    splits_file = repo / settings.split_dir / "splits.parquet"
    if split_settings.previous is not None and splits_file.is_file():
        pinned = repo / split_settings.previous
        pinned.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(splits_file, pinned)
        to_add.append(split_settings.previous)
    to_add += _dvc_gitignores(repo) + _small_outputs(repo, settings)
    _git(repo, "add", "--", *[str(p) for p in to_add if (repo / p).exists()])
    version = str(export_report.get("version"))
    text = f"Release {name}: dataset version {version}" + (f"\n\n{message}" if message else "")
    if _git(repo, "diff", "--cached", "--name-only").strip():
        _git(repo, "commit", "-q", "-m", text)
    _git(repo, "tag", "-a", name, "-m", text)
    commit = _git(repo, "rev-parse", "HEAD").strip()
    return ReleaseResult(name, version, remote, remote_url, card, commit)


def dataset_card(
    repo: Path, name: str, settings: ReleaseParams, ontology: Ontology, split_settings: SplitParams, remote: str
) -> str:
    """DATASET.md: classes, counts per split, agreement, pre-label quality, provenance and known limits."""
    export_report = _read_json(repo / settings.export_dir / "export.json") or {}
    provenance = _read_json(repo / settings.export_dir / "provenance.json") or {}
    split_report = _read_json(repo / settings.split_dir / "split.json") or {}
    augment_report = _read_json(repo / settings.augment_dir / "augment.json")
    splits = export_report.get("splits", {})
    lines = [
        f"# Dataset {name}",
        "",
        f"- Dataset version (content hash of the export): `{export_report.get('version')}`",
        f"- Released: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Get it: `git checkout {name} && dvc pull` (DVC remote `{remote}`)",
        "- Layout: `data/export/<split>/labels.json` (COCO), `labels.csv`, `data/` (images, original bytes)",
        "",
        "## Classes",
        "",
        "| class | 한국어 | definition | " + " | ".join(SPLITS) + " | total |",
        "|---|---|---|" + "---:|" * (len(SPLITS) + 1),
    ]
    for defect in ontology.classes:
        counts = [splits.get(s, {}).get("classes", {}).get(defect.name, 0) for s in SPLITS]
        lines.append(
            f"| {defect.name} | {defect.name_ko or '-'} | {defect.definition or '-'} | "
            + " | ".join(str(c) for c in counts)
            + f" | {sum(counts)} |"
        )
    lines += [
        "",
        "## Counts per split",
        "",
        "| split | images | originals | augmented | annotations | whole-image boxes | unlabeled |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("images", "originals", "augmented", "annotations", "whole_image_boxes", "unlabeled")
    for split in SPLITS:
        row = splits.get(split, {})
        lines.append(f"| {split} | " + " | ".join(str(row.get(k, 0)) for k in keys) + " |")
    target = split_report.get("target", split_settings.ratios)
    groups = ", ".join(dict.fromkeys(["dup_group", *split_settings.group_by]))
    lines += [
        "",
        f"Split: target {_ratios(target)}, achieved (originals) {_ratios(split_report.get('ratio', {}))}; "
        f"stratified by class, grouped by {groups} (a group never crosses "
        f"splits), seed {split_settings.seed}; {split_report.get('pinned', 0)} image(s) pinned to an earlier "
        "release's split.",
        f"Label sources: {_inline(split_report.get('label_sources', {}))}.",
        "",
        "## Agreement",
        "",
        *_metric_lines(repo / settings.agreement_dir, "No agreement metrics in this release (no review round)."),
        "",
        "## Pre-label quality",
        "",
        *_metric_lines(repo / settings.prelabel_dir, "No pre-label metrics in this release."),
        "",
        "## Augmentation",
        "",
    ]
    if augment_report:
        recipe = ", ".join(t["name"] for t in augment_report.get("recipe", []))
        lines.append(
            f"{augment_report.get('variants_per_image')} variant(s) per train image, seed "
            f"{augment_report.get('seed')}, recipe `{augment_report.get('recipe_hash')}` ({recipe}); "
            f"{augment_report.get('boxes_dropped', 0)} of {augment_report.get('boxes_in', 0)} boxes dropped "
            "(left the image or fell under min_visibility). Val and test are never augmented."
        )
    else:
        lines.append("No augmentation in this release.")
    model_versions = provenance.get("model_versions") or []
    lines += [
        "",
        "## Provenance",
        "",
        f"- Model versions: {', '.join(_inline(m) for m in model_versions) or 'none (no pre-labels)'}",
        f"- Params SHA-256: `{provenance.get('params_sha256')}`",
        f"- Input SHA-256: {_inline(provenance.get('inputs', {}))}",
        f"- Export link mode: {provenance.get('link')}",
        f"- Pipeline: `dvc.yaml` and `dvc.lock` at this tag; `dvc metrics diff <older tag> {name}` shows what changed.",
        "",
        "## Known limits",
        "",
        *[f"- {line}" for line in _known_limits(export_report, split_report, settings, ontology, augment_report)],
        "",
    ]
    return "\n".join(lines)


def _known_limits(
    export_report: dict, split_report: dict, settings: ReleaseParams, ontology: Ontology, augment_report: dict | None
) -> list[str]:
    limits = list(split_report.get("warnings", []))
    counted = {c for s in export_report.get("splits", {}).values() for c, n in s.get("classes", {}).items() if n}
    empty = [name for name in ontology.class_names if name not in counted]
    if empty:
        limits.append(f"Classes without any exported image: {', '.join(empty)}.")
    whole = sum(s.get("whole_image_boxes", 0) for s in export_report.get("splits", {}).values())
    if whole:
        limits.append(
            f"{whole} annotation(s) are whole-image boxes: those images have an image-level label only "
            "(classification), not a located defect."
        )
    if split_report.get("unlabeled_dropped"):
        limits.append(f"{split_report['unlabeled_dropped']} unlabeled image(s) were left out.")
    unlabeled = sum(s.get("unlabeled", 0) for s in export_report.get("splits", {}).values())
    if not export_report.get("include_unlabeled", False):
        n = split_report.get("classes", {}).get("unlabeled", {}).get("images", 0)
        if n:
            limits.append(f"{n} unlabeled image(s) have a split but are not exported.")
    elif unlabeled:
        limits.append(f"{unlabeled} exported image(s) have no label.")
    if augment_report and augment_report.get("augmented_images"):
        limits.append(
            "Augmented variants are computed on the stored pixels (EXIF orientation not applied), as the boxes are."
        )
    limits += settings.known_limits
    return limits


def _metric_lines(folder: Path, empty: str) -> list[str]:
    """The stage's headline (``metrics.json``) when it has one, else the numbers of every JSON in ``folder``."""
    found = []
    headline = folder / METRICS_FILE
    paths = [headline] if headline.is_file() else sorted(folder.glob("*.json")) if folder.is_dir() else []
    for path in paths:
        data = _read_json(path)
        flat = _flatten(data) if isinstance(data, dict) else {}
        numbers = {k: v for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numbers:
            found.append(f"From `{path.name}`:")
            found += [f"- {k}: {_number(v)}" for k, v in list(numbers.items())[:40]]
    return found or [empty]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _number(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _ratios(ratios: dict[str, float]) -> str:
    return ":".join(f"{ratios.get(s, 0):.3g}" for s in SPLITS) + " (train:val:test)"


def _inline(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in mapping.items()) or "-"


def _check_repo(repo: Path, name: str) -> None:
    try:
        top = _git(repo, "rev-parse", "--show-toplevel").strip()
    except ReleaseError as err:
        raise ReleaseError(f"{repo}: not a git repository; run `git init` (and `dvc init`) first") from err
    if Path(top).resolve() != repo:
        raise ReleaseError(f"{repo}: not the root of its git repository ({top}); pass the root with --repo")
    if not (repo / ".dvc").is_dir():
        raise ReleaseError(f"{repo}: DVC is not initialised here; run `dvc init` first")
    try:
        _git(repo, "check-ref-format", f"refs/tags/{name}")
    except ReleaseError as err:
        raise ReleaseError(f"{name!r} is not a valid git tag name; use e.g. v1.0 or dataset-2024-06") from err
    if _git(repo, "tag", "--list", name).strip():
        raise ReleaseError(f"tag {name!r} already exists; a release is immutable, choose a new name")
    staged = _git(repo, "diff", "--cached", "--name-only").strip()
    if staged:
        files = ", ".join(staged.splitlines()[:5])
        raise ReleaseError(f"other changes are staged ({files}); commit or unstage them before a release")
    if not (repo / "dvc.lock").is_file():
        raise ReleaseError(f"{repo}/dvc.lock not found; run `dvc repro` before releasing")


def _check_up_to_date(repo: Path, stages: Sequence[str]) -> None:
    status = json.loads(_dvc(repo, "status", "--json", *stages) or "{}")
    if status:
        changed = ", ".join(sorted(status))
        raise ReleaseError(f"stages not up to date: {changed}; run `dvc repro` and release again")


def _within(repo: Path, settings: _Settings) -> _Settings:
    """``settings`` with absolute paths inside ``repo`` made relative to it (load_params makes paths absolute when
    params.yaml is not in the working directory), since git names files relative to the repository."""
    changed = {}
    for key in type(settings).model_fields:
        value = getattr(settings, key)
        if isinstance(value, Path) and value.is_absolute() and value.is_relative_to(repo):
            changed[key] = value.relative_to(repo)
    return settings.model_copy(update=changed)


def _ensure_remote(repo: Path, settings: ReleaseParams) -> tuple[str, str]:
    """The default DVC remote; when there is none, add ``settings.remote`` as a local folder remote."""
    try:
        default = _dvc(repo, "remote", "default").strip()
    except ReleaseError:
        default = ""
    if default:
        return default, _dvc(repo, "config", f"remote.{default}.url").strip()
    folder = (repo / settings.remote_url).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    _dvc(repo, "remote", "add", "--default", settings.remote, str(folder))
    return settings.remote, str(folder)


def _dvc_gitignores(repo: Path) -> list[Path]:
    """.gitignore files DVC wrote for its outputs (new or changed), to commit with dvc.lock."""
    listed = _git(repo, "ls-files", "--modified", "--others", "--exclude-standard")
    return [Path(p) for p in listed.splitlines() if Path(p).name == ".gitignore"]


def _small_outputs(repo: Path, settings: ReleaseParams) -> list[Path]:
    """Metrics and plot tables (``cache: false`` in dvc.yaml) at the top of the stage folders: they live in git."""
    found = []
    for folder in (settings.split_dir, settings.augment_dir, settings.export_dir):
        listed = _git(repo, "ls-files", "--modified", "--others", "--exclude-standard", "--", str(folder))
        found += [
            Path(p) for p in listed.splitlines() if Path(p).suffix in {".json", ".csv"} and Path(p).parent == folder
        ]
    return found


def _git(repo: Path, *args: str) -> str:
    return _run(["git", *args], repo)


def _dvc(repo: Path, *args: str) -> str:
    return _run([sys.executable, "-m", "dvc", *args], repo)


def _run(command: list[str], cwd: Path) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    except FileNotFoundError as err:
        raise ReleaseError(f"{command[0]} not found; install it (git) or use the project venv (dvc)") from err
    if done.returncode != 0:
        shown = " ".join(command[2:] if command[0] == sys.executable else command)
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise ReleaseError(f"`{shown}` failed in {cwd}: {detail[-1] if detail else f'exit {done.returncode}'}")
    return done.stdout


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as err:
        raise ReleaseError(f"{path}: not valid JSON ({err}); re-run the stage that writes it") from err
