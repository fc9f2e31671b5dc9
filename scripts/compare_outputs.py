"""Compare two runs' outputs: which files are byte-identical, which differ, and why the known differences are benign.

Usage:
    python scripts/compare_outputs.py BEFORE AFTER [--explain]

BEFORE and AFTER are each a ``data/`` folder or a ``sha256sum`` list of one (``find data -type f ! -name push.json
-print0 | sort -z | xargs -0 sha256sum``). Prints the identical/different/missing counts and every differing file.

With ``--explain`` (two folders), each differing file is checked against the column renames of issue 15 (export
``labels.csv``: ``description`` -> ``prediction_description``, ``description_ko`` -> ``prediction_description_ko``;
``embeddings.parquet``: ``model_name`` -> ``model_key``) and the identifiers derived from the renamed bytes (the
export's dataset version, a hash over every split's COCO and CSV text; the FiftyOne dataset version, a hash over the
input files). A file counts as explained when it equals its BEFORE twin after the renames are undone and those
identifiers are replaced; the script recomputes each identifier from the BEFORE files with the renames applied, so
a changed value is explained only if it is exactly what the renames predict. Exit status 0 when every differing file
is explained (or none differ), 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

CSV_RENAMES = {"description": "prediction_description", "description_ko": "prediction_description_ko"}
PARQUET_RENAMES = {"embeddings.parquet": {"model_name": "model_key"}}
SPLITS = ("train", "val", "test")
FIFTYONE_INPUTS = (  # curation.browse.inputs.INPUT_NAMES order and the dvc.yaml fiftyone stage's files
    ("manifest", "ingest/manifest.parquet"),
    ("predictions", "refine/predictions.parquet"),
    ("embeddings", "prelabel/embeddings.parquet"),
    ("annotations", "pull/annotations.parquet"),
    ("consensus", "agreement/consensus.parquet"),
    ("splits", "split/splits.parquet"),
    ("augmented", "augment/augmented.parquet"),
)


def hashes(source: Path) -> dict[str, str]:
    """relative path (under data/) -> sha256, from a folder or a sha256sum list."""
    if source.is_dir():
        found = {}
        for path in sorted(p for p in source.rglob("*") if p.is_file() and p.name != "push.json"):
            found[path.relative_to(source).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
        return found
    listed = {}
    for line in source.read_text(encoding="utf-8").splitlines():
        digest, name = line.split(maxsplit=1)
        name = name.lstrip("*")
        listed[name.removeprefix("data/")] = digest
    return listed


def renamed_csv(text: str) -> str:
    """The export CSV text with the header renamed as the new code names it."""
    header, _, rest = text.partition("\n")
    columns = [CSV_RENAMES.get(c, c) for c in header.split(",")]
    return ",".join(columns) + "\n" + rest


def export_version(folder: Path, *, rename: bool) -> str:
    """curation.export's dataset version recomputed from the written files: sha256 over, per split, the compact COCO
    (without ``info``) and the CSV text, first 16 hex digits."""
    digest = hashlib.sha256()
    for split in SPLITS:
        coco = json.loads((folder / "export" / split / "labels.json").read_text(encoding="utf-8"))
        coco.pop("info", None)
        digest.update(json.dumps(coco, sort_keys=True, separators=(",", ":")).encode())
        text = (folder / "export" / split / "labels.csv").read_text(encoding="utf-8")
        digest.update((renamed_csv(text) if rename else text).encode())
    return digest.hexdigest()[:16]


def fiftyone_version(folder: Path, embeddings: bytes | None = None) -> str:
    """curation.browse.inputs.dataset_version over the fiftyone stage's inputs, optionally with other embeddings."""
    digest = hashlib.sha256()
    for name, rel in FIFTYONE_INPUTS:
        path = folder / rel
        if not path.is_file():
            continue
        digest.update(name.encode())
        digest.update(embeddings if name == "embeddings" and embeddings is not None else path.read_bytes())
    return digest.hexdigest()[:8]


def same_parquet_after_rename(before: Path, after: Path, renames: dict[str, str]) -> bool:
    import pandas as pd

    old = pd.read_parquet(before)
    new = pd.read_parquet(after).rename(columns={v: k for k, v in renames.items()})
    return list(old.columns) == list(new.columns) and old.equals(new)


def explain(before: Path, after: Path, differing: list[str]) -> dict[str, str]:
    """differing file -> why it differs (only for the explained ones)."""
    substitutions: dict[str, str] = {}
    reasons: dict[str, str] = {}
    if (before / "export").is_dir() and (after / "export").is_dir():
        old, predicted = export_version(before, rename=False), export_version(before, rename=True)
        actual = export_version(after, rename=False)
        if predicted == actual and old != actual:
            substitutions[old] = actual
    embeddings = after / "prelabel" / "embeddings.parquet"
    if embeddings.is_file() and (before / "fiftyone").is_dir():
        old = fiftyone_version(before)
        predicted = fiftyone_version(before, embeddings.read_bytes())
        if predicted == fiftyone_version(after) and old != predicted:
            substitutions[old] = predicted
    for rel in differing:
        b, a = before / rel, after / rel
        name = Path(rel).name
        if name in PARQUET_RENAMES and same_parquet_after_rename(b, a, PARQUET_RENAMES[name]):
            reasons[rel] = f"same frame after renaming {PARQUET_RENAMES[name]} back"
            continue
        try:
            old_text, new_text = b.read_text(encoding="utf-8"), a.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        changed = []
        if name == "labels.csv" and rel.startswith("export/"):
            old_text = renamed_csv(old_text)
            changed.append("CSV header renamed")
        for old, new in substitutions.items():
            if old in old_text:
                old_text = old_text.replace(old, new)
                changed.append(f"version {old} -> {new}")
        if changed and old_text == new_text:
            reasons[rel] = "identical after: " + "; ".join(changed)
    return reasons


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--explain", action="store_true", help="check differing files against the known renames")
    args = parser.parse_args()
    old, new = hashes(args.before), hashes(args.after)
    same = sorted(k for k in old.keys() & new.keys() if old[k] == new[k])
    differing = sorted(k for k in old.keys() & new.keys() if old[k] != new[k])
    only_before, only_after = sorted(old.keys() - new.keys()), sorted(new.keys() - old.keys())
    print(
        f"identical: {len(same)}, different: {len(differing)}, only before: {len(only_before)}, "
        f"only after: {len(only_after)}"
    )
    reasons = explain(args.before, args.after, differing) if args.explain and args.before.is_dir() else {}
    for rel in differing:
        print(f"  differs: {rel}" + (f"  [{reasons[rel]}]" if rel in reasons else ""))
    for rel in only_before:
        print(f"  only before: {rel}")
    for rel in only_after:
        print(f"  only after: {rel}")
    unexplained = [r for r in differing if r not in reasons] + only_before + only_after
    if args.explain:
        print(f"explained by the renames: {len(reasons)}; unexplained: {len(unexplained)}")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
