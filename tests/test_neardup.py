from __future__ import annotations

import numpy as np
import pytest

from curation.neardup import near_duplicate_components


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
