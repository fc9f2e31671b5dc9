from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from curation import neardup
from curation.neardup import THUMB_SIDE, near_duplicate_components, near_duplicate_groups


def _hex(value: int) -> str:
    return f"{value:016x}"


def _brute_force(codes: list[int], threshold: int) -> list[set[int]]:
    """Independent reference: all pairs + repeated merging of overlapping groups."""
    groups = [{i} for i in range(len(codes))]
    for i in range(len(codes)):
        for j in range(i + 1, len(codes)):
            if bin(codes[i] ^ codes[j]).count("1") <= threshold:
                a = next(g for g in groups if i in g)
                b = next(g for g in groups if j in g)
                if a is not b:
                    a |= b
                    groups.remove(b)
    return sorted(groups, key=min)


def _as_groups(labels: np.ndarray) -> list[set[int]]:
    groups: dict[int, set[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(int(label), set()).add(index)
    return sorted(groups.values(), key=min)


@pytest.mark.parametrize("threshold", [0, 1, 4, 6, 10, 16])
def test_matches_brute_force_on_clustered_random_hashes(threshold: int) -> None:
    rng = np.random.default_rng(threshold)
    centres = [int(c) for c in rng.integers(0, 2**63, size=12, dtype=np.int64)]
    codes = []
    for centre in centres:
        for _ in range(rng.integers(1, 6)):
            flips = rng.choice(64, size=rng.integers(0, 12), replace=False)
            codes.append(centre ^ sum(1 << int(b) for b in flips))
    labels = near_duplicate_components([_hex(c) for c in codes], threshold)
    assert _as_groups(labels) == _brute_force(codes, threshold)


def test_links_are_transitive_and_exact_at_the_threshold() -> None:
    a = 0
    b = a ^ 0b111  # 3 bits from a
    c = b ^ (0b111 << 10)  # 3 bits from b, 6 from a
    far = 2**64 - 1
    labels = near_duplicate_components([_hex(x) for x in (a, b, c, far)], 3)
    assert labels[0] == labels[1] == labels[2] != labels[3]
    labels = near_duplicate_components([_hex(x) for x in (a, b, c)], 2)
    assert len(set(labels.tolist())) == 3


def test_empty_input() -> None:
    assert near_duplicate_components([], 6).shape == (0,)


# --- pixel confirmation and cliques (near_duplicate_groups) ---

SIDE = THUMB_SIDE
SAME_HASH = "0" * 16  # every image a pHash candidate of every other: the grouping must rest on the pixels


def _texture(seed: int) -> np.ndarray:
    """Zero-mean fine texture (a few thumbnail pixels across), unit standard deviation."""
    noise = gaussian_filter(np.random.default_rng(seed).normal(size=(SIDE, SIDE)), 0.7)
    return (noise - noise.mean()) / noise.std()


def _thumb(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def test_a_chain_of_near_duplicates_is_not_one_group() -> None:
    # B sits 30 degrees from A and from C in texture space, A and C 60 degrees apart: correlations 0.87, 0.87, 0.5
    p, q = _texture(1), _texture(2)
    q = q - (p * q).mean() * p  # exactly orthogonal to p
    q /= q.std()
    angles = np.radians([0, 30, 60])
    thumbs = np.stack([_thumb(120 + 20 * (np.cos(a) * p + np.sin(a) * q)) for a in angles])
    result = near_duplicate_groups([SAME_HASH] * 3, thumbs, 6, min_correlation=0.8)
    a, b, c = result.labels.tolist()
    assert a != c  # the far ends of the chain never share a group
    assert (a == b) != (b == c)  # B joins exactly one of them
    assert result.pairs_across_groups == 1  # the cut link is counted, not hidden
    # the old candidate stage alone chains all three
    assert len(set(near_duplicate_components([SAME_HASH] * 3, 6).tolist())) == 1


def test_flat_and_vignetted_images_with_equal_hashes_do_not_group() -> None:
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / (SIDE - 1) - 0.5
    vignette = 30 + 180 * np.exp(-6 * (yy**2 + xx**2))  # strong fall-off, as in a badly lit or dark-bordered shot
    rng = np.random.default_rng(0)
    thumbs = np.stack(
        [
            np.zeros((SIDE, SIDE), dtype=np.uint8),  # black
            np.zeros((SIDE, SIDE), dtype=np.uint8),  # black again (different file, same pixels)
            _thumb(np.full((SIDE, SIDE), 128.0) + rng.normal(0, 0.3, (SIDE, SIDE))),  # flat grey, sensor noise
            _thumb(vignette),  # vignetting and nothing else
            _thumb(vignette + 4 * _texture(3)),  # the same vignetting over two different surfaces
            _thumb(vignette + 4 * _texture(4)),
        ]
    )
    result = near_duplicate_groups([SAME_HASH] * len(thumbs), thumbs, 6, min_correlation=0.8)
    assert len(set(result.labels.tolist())) == len(thumbs)
    assert result.low_information >= 3  # the black and grey ones are too flat to confirm anything


def test_groups_do_not_depend_on_row_order_and_empty_input_is_fine() -> None:
    base = [_texture(seed) for seed in range(5)]
    # two near-identical copies of each texture (a little noise), so there are real groups to compare
    thumbs = np.stack(
        [_thumb(128 + 25 * t + np.random.default_rng(k).normal(0, 1, t.shape)) for t in base for k in (0, 1)]
    )
    hashes = [SAME_HASH] * len(thumbs)
    first = near_duplicate_groups(hashes, thumbs, 6, min_correlation=0.8).labels
    order = np.random.default_rng(9).permutation(len(thumbs))
    second = near_duplicate_groups(hashes, thumbs[order], 6, min_correlation=0.8).labels
    groups = sorted(sorted(np.flatnonzero(first == g).tolist()) for g in set(first.tolist()))
    again = sorted(sorted(order[second == g].tolist()) for g in set(second.tolist()))
    assert groups == again == [[2 * k, 2 * k + 1] for k in range(5)]
    empty = near_duplicate_groups([], np.zeros((0, SIDE, SIDE), dtype=np.uint8), 6, min_correlation=0.8)
    assert empty.labels.shape == (0,) and empty.low_information == 0


def test_a_confirmed_set_above_the_linkage_limit_is_cut_into_cliques(monkeypatch) -> None:
    monkeypatch.setattr(neardup, "_LINKAGE_MAX", 4)
    texture = _texture(7)
    thumbs = np.stack(
        [_thumb(128 + 25 * texture + np.random.default_rng(k).normal(0, 1, texture.shape)) for k in range(10)]
    )
    result = near_duplicate_groups([SAME_HASH] * 10, thumbs, 6, min_correlation=0.8)
    sizes = sorted(np.unique(result.labels, return_counts=True)[1].tolist())
    assert sizes == [3, 3, 4]  # ten near-identical images, linked in parts of at most four
    assert result.pairs_across_groups == 45 - (3 + 3 + 6)  # every other confirmed pair is counted as cut
