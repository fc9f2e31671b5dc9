"""Segmentation masks beside the raw images: found, never ingested as images, turned into prior labels.

A file is a mask when its pixels are binary-like (:func:`binary_like`) and it is paired with an image by one of
three layouts (README, "Masks"):

* **mask tree**: it lies under a folder named ``masks`` or ``ground_truth`` and its path below that folder (its
  name without a ``_mask``/``-mask`` suffix) ends the path of exactly one image under the folder holding the tree
  (MVTec AD: ``ground_truth/crack/000_mask.png`` -> ``test/crack/000.png``);
* **named**: ``<name>_mask.<ext>`` or ``<name>-mask.<ext>`` beside ``<name>.<ext>``;
* **same stem**: ``<name>.png`` beside ``<name>.jpg``, when exactly one of the files with that stem is not
  binary-like (that one is the image). Two binary-like files with one stem are both kept as images, and said so.

A mask must have its image's size. A tree or named mask that cannot be used (no image, several images, another
size, the image quarantined) is still a mask: it is listed in ``masks.csv`` and ``issues.csv``, never ingested. A
same-stem file with another size stays an image, with an issue.

Each 8-connected region of a used mask becomes one prior label: its pixel box, its outline as a COCO polygon and
its pixel count as ``area``. An all-black mask becomes one image-level label: the image is OK.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import pandas as pd
from PIL import Image

from curation.labels import ImageRef, LabelIssue, label_row
from curation.shapes import mask_to_polygons

MASK_TREES = frozenset({"masks", "ground_truth"})
MASK_SUFFIXES = ("_mask", "-mask")
MASK_NAME = r"(?i)(?:^|/)(?:masks|ground_truth)/|[_-]mask\.[^./]*$"
"""Paths that name a mask: under a ``masks/`` or ``ground_truth/`` tree, or ending in ``_mask`` / ``-mask``."""
BINARY_SHARE = 0.95
"""Share of pixels at exactly 0 or 255 (per colour channel) that makes an anti-aliased mask binary-like."""
MAX_LEVELS = 3
"""A channel with at most this many distinct values is binary-like (index masks such as 0/1)."""
MASK_COLUMNS = ["rel_path", "image_rel_path", "image_id", "status", "regions", "detail"]

MaskStatus = Literal["used", "no_image", "ambiguous", "size_mismatch", "image_quarantined"]
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class MaskFile:
    """A file taken for a mask. ``image_rel_path`` is the image it belongs to (None when not found)."""

    rel_path: str
    image_rel_path: str | None
    status: MaskStatus
    detail: str = ""


@dataclass(frozen=True)
class Region:
    """One 8-connected region of a mask: pixel box (x, y, w, h), outline polygons and pixel count."""

    box: Box
    polygons: list[list[float]]
    area: float

    @property
    def shape(self) -> tuple[Box, list[list[float]], float]:
        return self.box, self.polygons, self.area


@dataclass(frozen=True)
class MaskLabels:
    rows: list[dict[str, Any]]
    issues: list[LabelIssue]
    regions: dict[str, int]
    """Mask rel_path -> number of regions, for every used mask."""


def binary_like(image: Image.Image) -> bool:
    """Whether an image's pixels look like a mask rather than a photo.

    Mode ``1``; palette images with at most :data:`MAX_LEVELS` indexes; 8-bit grey or colour images whose every
    colour channel has at most :data:`MAX_LEVELS` values or :data:`BINARY_SHARE` of its pixels at exactly 0 or
    255. Photos measured here had at most 18% of their pixels at 0 or 255, masks at least 97%.
    """
    if image.mode == "1":
        return True
    histogram = image.histogram()
    if image.mode == "P":
        return sum(1 for count in histogram if count) <= MAX_LEVELS
    channels = {"L": 1, "LA": 1, "RGB": 3, "RGBA": 3}.get(image.mode)
    if channels is None:
        return False
    for band in range(channels):
        counts = histogram[256 * band : 256 * (band + 1)]
        levels = sum(1 for count in counts if count)
        if levels > MAX_LEVELS and counts[0] + counts[255] < BINARY_SHARE * sum(counts):
            return False
    return True


def foreground(image: Image.Image) -> np.ndarray:
    """Defect pixels of a mask: non-zero when it has at most :data:`MAX_LEVELS` values, else >= 128.

    Palette masks: every non-zero index. Colour masks: the brightest channel of each pixel.
    """
    if image.mode == "1":
        return np.asarray(image, dtype=bool)
    if image.mode == "P":
        return np.asarray(image) != 0
    values = np.asarray(image.convert("RGB" if image.mode in ("RGB", "RGBA") else "L"))
    if values.ndim == 3:
        values = values.max(axis=2)
    levels = np.flatnonzero(np.bincount(values.ravel(), minlength=256))
    return values > 0 if len(levels) <= MAX_LEVELS else values >= 128


def mask_regions(mask: np.ndarray) -> list[Region]:
    """The 8-connected regions of a boolean mask, in label order (top-left first).

    Regions come from OpenCV's connected components; outlines from :func:`curation.shapes.mask_to_polygons`, which
    runs along pixel edges, so rasterising a region's polygons (pycocotools, as COCO tools do) gives its pixels back
    and the polygon's bounds equal the box. COCO polygons cannot hold holes: the polygon covers them, ``area`` (the
    pixel count) does not. Coordinates are in pixels of the stored image with (0, 0) the top-left corner of the
    first pixel.
    """
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    regions = []
    for index in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[index])
        outline = mask_to_polygons(labels[y : y + h, x : x + w] == index)
        polygons = [[v + (x if i % 2 == 0 else y) for i, v in enumerate(p)] for p in outline]
        regions.append(Region((float(x), float(y), float(w), float(h)), polygons, float(area)))
    return regions


def read_regions(path: Path) -> list[Region]:
    """The regions of the mask file at ``path``."""
    with Image.open(path) as image:
        image.load()
        return mask_regions(foreground(image))


def find_masks(files: pd.DataFrame, quarantined: Iterable[str]) -> tuple[list[MaskFile], list[tuple[str, str]]]:
    """Which decoded files are masks, and of which image.

    Args:
        files: One row per decoded file: ``rel_path``, ``width``, ``height``, ``binary`` (see :func:`binary_like`).
        quarantined: rel_path of files that could not be decoded (they can still be a mask's image).

    Returns:
        The mask files (sorted; every status, so none is ingested) and issues ``(rel_path, detail)`` about files
        that look like masks but stay images, or masks that cannot be used.
    """
    # Narrowed with vectorised string operations first: at a million files, only the mask-like ones and the
    # files sharing their names become Python objects.
    rel_paths = files["rel_path"]
    stems = rel_paths.str.rsplit("/", n=1).str[-1].str.replace(r"\.[^.]*$", "", regex=True)
    candidate = files["binary"].to_numpy(dtype=bool) | rel_paths.str.contains(MASK_NAME, regex=True).to_numpy()
    if not candidate.any():
        return [], []
    wanted = {name for stem in stems[candidate] for name in (stem, _strip_suffix(stem)[0])}
    subset = files[candidate | stems.isin(wanted).to_numpy()]
    info = {
        rel: (int(w), int(h), bool(b))
        for rel, w, h, b in zip(subset["rel_path"], subset["width"], subset["height"], subset["binary"], strict=True)
    }
    failed = {rel for rel in quarantined if PurePosixPath(rel).stem in wanted}
    pairing = _Pairing(info, failed)
    masks: list[MaskFile] = []
    issues: list[tuple[str, str]] = []
    for rel in sorted(rel_paths[candidate]):
        found = pairing.classify(rel)
        if isinstance(found, MaskFile):
            masks.append(found)
            if found.status != "used":
                issues.append((rel, found.detail))
        elif found:
            issues.append((rel, found))
    return masks, issues


class _Pairing:
    """Indexes of the walked files for :func:`find_masks`."""

    def __init__(self, info: dict[str, tuple[int, int, bool]], failed: set[str]) -> None:
        self.info = info
        self.failed = failed
        self.by_dir_stem: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.by_tail: dict[tuple[str, ...], list[str]] = defaultdict(list)
        for rel in sorted([*info, *failed]):
            path = PurePosixPath(rel)
            self.by_dir_stem[str(path.parent), path.stem].append(rel)
            if _tree_at(path) is None:
                parts = (*path.parent.parts, path.stem)
                for start in range(len(parts)):
                    self.by_tail[parts[start:]].append(rel)

    def binary(self, rel: str) -> bool:
        return rel not in self.failed and self.info[rel][2]

    def classify(self, rel: str) -> MaskFile | str | None:
        """A :class:`MaskFile`, an issue (the file stays an image), or None (a plain image)."""
        path = PurePosixPath(rel)
        base, named = _strip_suffix(path.stem)
        tree = _tree_at(path)
        if tree is not None:
            root = "/".join(path.parts[:tree])
            tail = (*path.parent.parts[tree + 1 :], base)
            partners = [p for p in self.by_tail.get(tail, []) if not root or p.startswith(root + "/")]
            how = f"the image whose path ends with {'/'.join(tail)!r} under {root or 'raw_dir'}/"
        elif named:
            partners = [p for p in self.by_dir_stem.get((str(path.parent), base), []) if p != rel]
            how = f"an image named {base!r} beside it"
        else:
            partners = [p for p in self.by_dir_stem.get((str(path.parent), path.stem), []) if p != rel]
            how = "the image with its name"
        images = [p for p in partners if not self.binary(p)]
        if not self.binary(rel):
            if (tree is not None or named) and partners:
                return "named or placed like a mask but has many grey levels, so it was kept as an image"
            return None
        if tree is None and not named:
            return self._same_stem(rel, partners, images)
        if not partners:
            return MaskFile(rel, None, "no_image", f"mask without an image: found no {how}; add it or delete the mask")
        chosen = images if images else partners
        if len(chosen) > 1:
            shown = ", ".join(chosen[:5])
            return MaskFile(rel, None, "ambiguous", f"mask matches several images ({shown}); rename it or them")
        return self._checked(rel, chosen[0], keep_as_image=False)

    def _same_stem(self, rel: str, partners: list[str], images: list[str]) -> MaskFile | str | None:
        if not partners:
            return None
        if len(images) != 1:
            others = ", ".join(partners[:5])
            return (
                f"binary-like file beside {others} with the same name: cannot tell which is the mask, so it was kept "
                "as an image; name the mask <name>_mask.png or put it under masks/"
            )
        return self._checked(rel, images[0], keep_as_image=True)

    def _checked(self, rel: str, image: str, *, keep_as_image: bool) -> MaskFile | str:
        if image in self.failed:
            return MaskFile(rel, image, "image_quarantined", f"mask of {image}, which is quarantined: no labels")
        mask_size, image_size = self.info[rel][:2], self.info[image][:2]
        if mask_size == image_size:
            return MaskFile(rel, image, "used")
        sizes = f"{mask_size[0]}x{mask_size[1]} while {image} is {image_size[0]}x{image_size[1]}"
        if keep_as_image:
            return f"binary-like like a mask of {image} but {sizes}, so it was kept as an image"
        return MaskFile(rel, image, "size_mismatch", f"mask is {sizes}; export the mask at the image's size")


def _tree_at(path: PurePosixPath) -> int | None:
    """Index of the last folder of ``path`` named like a mask tree, or None."""
    folders = [part.lower() for part in path.parent.parts]
    hits = [k for k, part in enumerate(folders) if part in MASK_TREES]
    return hits[-1] if hits else None


def _strip_suffix(stem: str) -> tuple[str, bool]:
    for suffix in MASK_SUFFIXES:
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)], True
    return stem, False


def mask_labels(
    raw_dir: Path,
    masks: list[MaskFile],
    refs: Mapping[str, ImageRef],
    other: pd.DataFrame,
    *,
    resolve: Callable[[str], str | None],
    ok_label: str,
    defect_label: str,
) -> MaskLabels:
    """Prior-label rows from the used masks.

    A region's source label is the image's class from the other sources (``other``: every prior label not from
    a mask) when they give exactly one, else ``defect_label``; an all-black mask gives one image-level row with
    that class, else ``ok_label``. Contradictions (regions on an image labelled OK, an all-black mask on an image
    labelled with another class, several classes) are issues.

    Args:
        raw_dir: Folder the masks' rel_paths are relative to.
        masks: Output of :func:`find_masks`.
        refs: rel_path of every ingested copy -> its image.
        other: Prior labels from the other sources (``image_id``, ``source_label`` columns).
        resolve: Source label -> ontology class (see :func:`curation.labels.label_resolver`).
        ok_label: Source label meaning "no defect".
        defect_label: Source label for a region of unknown class.
    """
    classes: dict[str, set[str]] = defaultdict(set)
    for image_id, source_label in zip(other["image_id"], other["source_label"], strict=True):
        classes[image_id].add(source_label)
    ok = resolve(ok_label)
    rows: list[dict[str, Any]] = []
    issues: list[LabelIssue] = []
    counts: dict[str, int] = {}
    for mask in masks:
        if mask.status != "used" or mask.image_rel_path not in refs:
            continue
        image = refs[mask.image_rel_path]
        regions = read_regions(Path(raw_dir) / mask.rel_path)
        counts[mask.rel_path] = len(regions)
        known = sorted(classes.get(image.image_id, ()))
        given = known[0] if len(known) == 1 else None
        if len(known) > 1:
            detail = f"the image has several classes ({', '.join(known)}), so its mask's labels are "
            issues.append(LabelIssue(mask.rel_path, detail + f"{defect_label!r} (regions) or {ok_label!r} (all black)"))
        if not regions:
            source_label = given or ok_label
            label = resolve(source_label)
            if given is not None and label is not None and ok is not None and label != ok:
                detail = (
                    f"mask is all black (no defect) but the image is labelled {given!r}; check the mask or the class"
                )
                issues.append(LabelIssue(mask.rel_path, detail))
            rows.append(label_row(image, mask.image_rel_path, source_label, label, "masks", mask.rel_path))
            continue
        if given is not None and ok is not None and resolve(given) == ok:
            detail = f"mask has {len(regions)} defect region(s) but the image is labelled {given!r} (OK); "
            issues.append(LabelIssue(mask.rel_path, detail + f"its regions are labelled {defect_label!r}"))
            given = None
        source_label = given or defect_label
        label = resolve(source_label)
        rows += [
            label_row(image, mask.image_rel_path, source_label, label, "masks", mask.rel_path, *region.shape)
            for region in regions
        ]
    return MaskLabels(rows, issues, counts)


def masks_frame(masks: list[MaskFile], refs: Mapping[str, ImageRef], regions: Mapping[str, int]) -> pd.DataFrame:
    """``masks.csv``: every file taken for a mask, its image, status and region count (used masks only)."""
    rows = [
        (
            m.rel_path,
            m.image_rel_path,
            refs[m.image_rel_path].image_id if m.image_rel_path in refs else None,
            m.status,
            regions.get(m.rel_path),
            m.detail,
        )
        for m in masks
    ]
    return pd.DataFrame(rows, columns=MASK_COLUMNS).astype({"regions": "Int64"})
