"""The review queue: in which order push imports tasks and the "Most uncertain first" tab serves them.

Two rankings of the images that have predictions, each deterministic (ties by image id):

* **uncertain**: lowest margin first, then highest entropy (an image with several predictions rows, one per model
  version, counts with its most uncertain row);
* **anomalous**: the images the anomaly pre-labeler did not call OK (``anomaly_defect`` true, or unknown when the
  ontology has no OK class), highest ``anomaly_score`` first.

The queue takes them in turn, most anomalous first: 1st anomalous, 1st uncertain, 2nd anomalous, 2nd uncertain,
..., skipping an image already placed; when one ranking runs out the other continues alone. Without anomaly
columns (older predictions files, or anomaly off) the queue is exactly the uncertain ranking, as before. Images
without predictions come last, by image id. Label Studio serves only tasks that still need annotations, so the
queue's head is always the most anomalous and most uncertain *unlabeled* images.

Push writes each image's 1-based place as ``queue`` in the task data; the tab orders by it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import zip_longest
from typing import Any

QUEUE = "queue"  # task data key: the image's place in the queue


def review_queue(rows: Iterable[Mapping[str, Any]], image_ids: Sequence[str]) -> dict[str, int]:
    """Image id -> 1-based place in the review queue (see the module docstring).

    Args:
        rows: predictions rows (dicts with image_id, margin, entropy and optionally anomaly_score,
            anomaly_defect); several rows per image are allowed.
        image_ids: every image to place (the manifest's), including those without predictions.
    """
    uncertainty: dict[str, tuple[float, float]] = {}
    anomaly: dict[str, float] = {}
    for row in rows:
        image_id = row["image_id"]
        key = (float(row["margin"]), -float(row["entropy"]))
        uncertainty[image_id] = min(uncertainty.get(image_id, key), key)
        score = _number(row.get("anomaly_score"))
        if score is not None and _flag(row.get("anomaly_defect")) is not False:
            anomaly[image_id] = max(anomaly.get(image_id, score), score)
    uncertain = sorted(uncertainty, key=lambda i: (uncertainty[i], i))
    anomalous = sorted(anomaly, key=lambda i: (-anomaly[i], i))
    order: dict[str, int] = {}
    for pair in zip_longest(anomalous, uncertain):
        for image_id in pair:
            if image_id is not None and image_id not in order:
                order[image_id] = len(order) + 1
    for image_id in sorted(set(image_ids) - order.keys()):
        order[image_id] = len(order) + 1
    return order


def _number(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    number = float(value)  # type: ignore[arg-type]
    return None if math.isnan(number) else number


def _flag(value: object) -> bool | None:
    """A nullable boolean column's value: pandas gives NaN/None/pd.NA for a missing one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        return bool(value)
    except TypeError:  # pd.NA
        return None
