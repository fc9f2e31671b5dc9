"""The prelabel cache: image embeddings, anomaly patch features and captions keyed by (content SHA-256, namespace).

A namespace is a hash of everything that determines the cached value: the model id + revision and the
preprocessing for embeddings; the captioner id + revision, preprocessing and generation params for captions; the
model id + revision for text embeddings (keyed by the text itself) and the model's logit scale; the backbone, its
:class:`~curation.prelabel.anomaly.FeatureSpec` and the preprocessing for anomaly patch features. With everything
cached, a re-run never loads the model weights at all.

Patch features are kept whole (float16 ``.npy`` bytes, 28 x 28 x 344 = 539 KB per image at the default spec) rather
than per-image score maps: a score map depends on the reference (the batch in no-label mode, the reviewed OK
images, the golden image), which changes as labels arrive, while the features depend on the image alone.
Prompts do not enter the embedding key on purpose: zero-shot scores are recomputed from cached embeddings on every
run (a matrix product), so editing a prompt re-scores everything without re-encoding a single image.

SQLite (standard library) holds it: one file, atomic commits per batch, so a killed run keeps every finished batch
and the next run resumes from there.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    namespace TEXT NOT NULL, sha256 TEXT NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (namespace, sha256)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS captions (
    namespace TEXT NOT NULL, sha256 TEXT NOT NULL, caption TEXT NOT NULL, PRIMARY KEY (namespace, sha256)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS texts (
    namespace TEXT NOT NULL, text TEXT NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (namespace, text)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS patches (
    namespace TEXT NOT NULL, sha256 TEXT NOT NULL, grid BLOB NOT NULL, PRIMARY KEY (namespace, sha256)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scalars (
    namespace TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL, PRIMARY KEY (namespace, name)
) WITHOUT ROWID;
"""
_CHUNK = 500  # SQLite's bound-parameter limit is far above this; chunks keep each query small


class PrelabelCache:
    """``get_*`` return what is cached for the given hashes; ``put_*`` insert or replace and commit."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "cache.sqlite"
        self._db = sqlite3.connect(self.path, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PrelabelCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_embeddings(self, namespace: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        rows = self._select("SELECT sha256, vector FROM embeddings", namespace, hashes)
        return {sha: np.frombuffer(blob, dtype=np.float32).copy() for sha, blob in rows}

    def put_embeddings(self, namespace: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        rows = [(namespace, sha, np.asarray(v, dtype=np.float32).tobytes()) for sha, v in items]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)", rows)

    def get_captions(self, namespace: str, hashes: Sequence[str]) -> dict[str, str]:
        return dict(self._select("SELECT sha256, caption FROM captions", namespace, hashes))

    def put_captions(self, namespace: str, items: Iterable[tuple[str, str]]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO captions VALUES (?, ?, ?)", [(namespace, sha, text) for sha, text in items]
            )

    def get_texts(self, namespace: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        rows = self._select("SELECT text, vector FROM texts", namespace, texts, column="text")
        return {text: np.frombuffer(blob, dtype=np.float32).copy() for text, blob in rows}

    def put_texts(self, namespace: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        rows = [(namespace, text, np.asarray(v, dtype=np.float32).tobytes()) for text, v in items]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO texts VALUES (?, ?, ?)", rows)

    def get_patches(self, namespace: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Per-image patch-feature grids (g, g, D) float16 (anomaly scoring), stored as ``.npy`` bytes."""
        rows = self._select("SELECT sha256, grid FROM patches", namespace, hashes)
        return {sha: np.load(io.BytesIO(blob), allow_pickle=False) for sha, blob in rows}

    def put_patches(self, namespace: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        rows = []
        for sha, grid in items:
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(grid, dtype=np.float16), allow_pickle=False)
            rows.append((namespace, sha, buffer.getvalue()))
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO patches VALUES (?, ?, ?)", rows)

    def get_scalar(self, namespace: str, name: str) -> float | None:
        row = self._db.execute(
            "SELECT value FROM scalars WHERE namespace = ? AND name = ?", (namespace, name)
        ).fetchone()
        return None if row is None else float(row[0])

    def put_scalar(self, namespace: str, name: str, value: float) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO scalars VALUES (?, ?, ?)", (namespace, name, float(value)))

    def _select(self, query: str, namespace: str, keys: Sequence[str], column: str = "sha256") -> list[tuple]:
        found: list[tuple] = []
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            found += self._db.execute(f"{query} WHERE namespace = ? AND {column} IN ({marks})", [namespace, *chunk])
        return found
