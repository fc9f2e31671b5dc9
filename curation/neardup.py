"""Near-duplicate groups from 64-bit perceptual hashes.

Written here rather than taken from a library: imagehash has no index, and a binary ANN library (faiss) is a
heavy dependency for what the pigeonhole principle does exactly. If two hashes differ in at most ``t`` bits,
then split into ``t + 1`` bands they agree exactly on at least one band; so only hashes sharing a band value
are compared, instead of all pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

_BITS = 64
_ROW_CHUNK = 1024


def near_duplicate_components(hashes: Sequence[str], threshold: int) -> np.ndarray:
    """Label each hash with its connected component, linking hashes within ``threshold`` bits (Hamming).

    Args:
        hashes: 16-hex-digit perceptual hashes.
        threshold: Largest Hamming distance that still counts as a near-duplicate (0 = identical hashes).

    Returns:
        An int array, one component label per input hash; linking is transitive.
    """
    codes = np.array([int(h, 16) for h in hashes], dtype=np.uint64)
    n = len(codes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    unique, inverse = np.unique(codes, return_inverse=True)  # identical hashes are linked through `inverse`
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for band in _bands(threshold):
        for members in _buckets((unique >> np.uint64(band[0])) & np.uint64(band[1])):
            pairs = _close_pairs(unique[members], threshold)
            rows.append(members[pairs[0]])
            cols.append(members[pairs[1]])
    m = len(unique)
    i = np.concatenate([*rows, np.arange(m)])
    j = np.concatenate([*cols, np.arange(m)])
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(m, m))
    _, labels = connected_components(graph, directed=False)
    return labels[inverse]


def _bands(threshold: int) -> list[tuple[int, int]]:
    """(shift, mask) of ``threshold + 1`` contiguous bit bands covering all 64 bits."""
    n_bands = threshold + 1
    edges = np.linspace(0, _BITS, n_bands + 1).astype(int)
    return [(int(lo), (1 << int(hi - lo)) - 1) for lo, hi in pairwise(edges)]


def _buckets(values: np.ndarray) -> list[np.ndarray]:
    """Index arrays of the entries sharing a value, for values shared by two or more entries."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(ordered)]
    return [order[s:e] for s, e in zip(starts, ends, strict=True) if e - s > 1]


def _close_pairs(codes: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) within ``codes`` whose Hamming distance is at most ``threshold``."""
    found_i, found_j = [], []
    for start in range(0, len(codes), _ROW_CHUNK):
        block = codes[start : start + _ROW_CHUNK]
        distance = np.bitwise_count(block[:, None] ^ codes[None, :])
        i, j = np.nonzero(distance <= threshold)
        i = i + start
        keep = i < j
        found_i.append(i[keep])
        found_j.append(j[keep])
    return np.concatenate(found_i), np.concatenate(found_j)
