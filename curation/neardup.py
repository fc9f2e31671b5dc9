"""Near-duplicate groups: perceptual-hash candidates, confirmed on pixels, grouped as cliques.

1. **Candidates** (:func:`near_duplicate_components`): images whose 64-bit perceptual hashes differ in at most
   ``threshold`` bits, linked transitively. Written here rather than taken from a library: imagehash has no
   index, and a binary ANN library (faiss) is a heavy dependency for what the pigeonhole principle does exactly.
   If two hashes differ in at most ``t`` bits, then split into ``t + 1`` bands they agree exactly on at least one
   band; so only hashes sharing a band value are compared, instead of all pairs.
2. **Pixel confirmation**: a pHash alone is degenerate on low-information images (uniform, near-black, strong
   vignetting or dark borders), and on such images chains of "within 6 bits" ran through hundreds of different
   parts. A candidate pair counts only when the *detail* of the two 32x32 grey thumbnails (ingest's probe keeps
   one per image) correlates at or above ``min_correlation``. Detail = the thumbnail minus a least-squares cubic
   surface (illumination, vignetting) minus a Gaussian blur (sigma 2 px: shading), so what is compared is the
   surface texture, not the lighting. An image whose detail is flat (standard deviation under
   :data:`MIN_DETAIL` grey levels) cannot be confirmed and joins no group.
3. **Cliques** (:func:`near_duplicate_groups`): confirmed pairs would still chain, so each connected set of them
   is cut by complete linkage (scipy) at ``1 - min_correlation``: in every group, every pair is a confirmed
   near-duplicate. A confirmed pair that complete linkage puts in two groups is counted, not hidden.

Everything is ordered by the caller's row order (ingest passes rows sorted by content hash), so the same images
give the same groups whatever order their files were found in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from numpy.polynomial.polynomial import polyvander2d
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.ndimage import gaussian_filter
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

THUMB_SIDE = 32
"""Side of the grey thumbnail that confirms a candidate pair (``THUMB_SIDE ** 2`` bytes per image)."""
MIN_DETAIL = 1.0
"""Detail (grey levels, standard deviation) below which an image is too uniform to be confirmed as a duplicate."""
_BITS = 64
_ROW_CHUNK = 1024
_SURFACE_DEGREE = 3  # illumination model: total degree of the least-squares polynomial surface
_SHADING_SIGMA = 2.0  # thumbnail pixels
_APART = 3.0  # a distance above any correlation distance (1 - r <= 2)
_DETAIL_CHUNK = 4096  # thumbnails filtered at a time (float64 work arrays of 8 KiB each)
_LINKAGE_MAX = 4096  # members per complete-linkage run (its distance matrix is quadratic)


@dataclass(frozen=True)
class NearDuplicates:
    """Near-duplicate groups of a list of images.

    Attributes:
        labels: One group label per image (the smallest row index in its group); singletons label themselves.
        low_information: Images with a pHash candidate whose thumbnail detail is too flat to confirm anything.
        pairs_across_groups: Confirmed near-duplicate pairs that ended in different groups (the clique rule cut
            a chain between them); such pairs may land in different splits.
    """

    labels: np.ndarray
    low_information: int
    pairs_across_groups: int


def near_duplicate_groups(
    hashes: Sequence[str], thumbnails: np.ndarray, threshold: int, *, min_correlation: float
) -> NearDuplicates:
    """Group images that are near-identical: pHash within ``threshold`` bits and thumbnail detail correlated.

    Args:
        hashes: 16-hex-digit perceptual hashes, one per image.
        thumbnails: ``(n, THUMB_SIDE, THUMB_SIDE)`` uint8 grey thumbnails, same order.
        threshold: Largest pHash Hamming distance of a candidate pair.
        min_correlation: Smallest correlation of the two thumbnails' detail that confirms a candidate pair.

    Returns:
        The groups (every pair inside a group is a confirmed pair) and what could not be grouped.
    """
    labels = np.arange(len(hashes))
    candidates = near_duplicate_components(hashes, threshold)
    members = np.flatnonzero(np.bincount(candidates, minlength=1)[candidates] > 1)
    if not len(members):
        return NearDuplicates(labels, 0, 0)
    detail = _detail(np.asarray(thumbnails)[members])
    informative = detail.std(axis=1) >= MIN_DETAIL
    low_information = int((~informative).sum())
    members, detail = members[informative], detail[informative]
    unit = detail - detail.mean(axis=1, keepdims=True)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)  # informative rows are far from zero
    codes = np.array([int(h, 16) for h in hashes], dtype=np.uint64)[members]
    first, second = _confirmed_pairs(candidates[members], codes, unit, threshold, min_correlation)
    m = len(members)
    graph = coo_matrix((np.ones(len(first), dtype=np.int8), (first, second)), shape=(m, m))
    _, confirmed = connected_components(graph, directed=False)
    local = np.arange(m)
    for component in _sets_of_two_or_more(confirmed):
        if len(component) == 2:  # one confirmed pair: already a clique
            local[component] = component[0]
            continue
        for part in np.array_split(component, -(-len(component) // _LINKAGE_MAX)):
            local[part] = part[_complete_linkage(unit[part], codes[part], threshold, min_correlation)]
    labels[members] = members[local]
    across = int((local[first] != local[second]).sum())
    return NearDuplicates(labels, low_information, across)


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


def _detail(thumbnails: np.ndarray) -> np.ndarray:
    """Thumbnails minus their illumination surface and their shading, flattened (float32, computed in chunks)."""
    count, side = len(thumbnails), thumbnails.shape[1]
    grid = np.linspace(-1.0, 1.0, side)
    y, x = np.meshgrid(grid, grid, indexing="ij")
    degrees = [(i, j) for i in range(_SURFACE_DEGREE + 1) for j in range(_SURFACE_DEGREE + 1)]
    keep = [k for k, (i, j) in enumerate(degrees) if i + j <= _SURFACE_DEGREE]
    design = polyvander2d(y.ravel(), x.ravel(), [_SURFACE_DEGREE, _SURFACE_DEGREE])[:, keep]
    projection = np.linalg.pinv(design)  # least-squares surface coefficients = projection @ pixels
    out = np.empty((count, side * side), dtype=np.float32)
    for start in range(0, count, _DETAIL_CHUNK):
        pixels = thumbnails[start : start + _DETAIL_CHUNK].reshape(-1, side * side).astype(np.float64)
        residual = (pixels - (design @ (projection @ pixels.T)).T).reshape(-1, side, side)
        shading = gaussian_filter(residual, sigma=(0, _SHADING_SIGMA, _SHADING_SIGMA), mode="reflect")
        out[start : start + len(pixels)] = (residual - shading).reshape(-1, side * side)
    return out


def _confirmed_pairs(
    candidates: np.ndarray, codes: np.ndarray, unit: np.ndarray, threshold: int, min_correlation: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) inside one candidate component, within ``threshold`` bits and ``min_correlation``."""
    found_i, found_j = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for component in _sets_of_two_or_more(candidates):
        for start in range(0, len(component), _ROW_CHUNK):
            rows = component[start : start + _ROW_CHUNK]
            bits = np.bitwise_count(codes[rows][:, None] ^ codes[component][None, :])
            correlation = unit[rows] @ unit[component].T
            i, j = np.nonzero((bits <= threshold) & (correlation >= min_correlation))
            keep = rows[i] < component[j]
            found_i.append(rows[i][keep])
            found_j.append(component[j][keep])
    return np.concatenate(found_i), np.concatenate(found_j)


def _complete_linkage(unit: np.ndarray, codes: np.ndarray, threshold: int, min_correlation: float) -> np.ndarray:
    """Index (into the given rows) of each row's group: complete linkage, so every pair in a group is confirmed."""
    if len(unit) == 1:
        return np.zeros(1, dtype=np.int64)
    distance = 1.0 - unit @ unit.T
    bits = np.bitwise_count(codes[:, None] ^ codes[None, :])
    distance[bits > threshold] = _APART  # pHash too far: never inside one group
    rows, cols = np.triu_indices(len(unit), 1)
    tree = linkage(np.clip(distance[rows, cols], 0.0, None), method="complete")
    cluster = fcluster(tree, t=1.0 - min_correlation, criterion="distance")
    first_row = {c: k for k, c in reversed(list(enumerate(cluster)))}  # smallest row of each cluster
    return np.array([first_row[c] for c in cluster], dtype=np.int64)


def _sets_of_two_or_more(labels: np.ndarray) -> list[np.ndarray]:
    """Row indices sharing a label, for labels held by two or more rows, in order of their smallest row."""
    order = np.argsort(labels, kind="stable")
    ordered = labels[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(ordered)]
    sets = [order[s:e] for s, e in zip(starts, ends, strict=True) if e - s > 1]
    return sorted(sets, key=lambda rows: int(rows[0]))
