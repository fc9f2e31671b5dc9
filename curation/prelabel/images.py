"""Image loading for the models: read, check the hash, upright (EXIF), CLAHE, resize, normalise.

Runs in decoding threads beside the model (Pillow, OpenCV and numpy release the GIL for the heavy parts), so every
function here takes and returns plain values. Models never see the processors' own resizing: one recipe here
serves CLIP, BLIP and the offline backbone, and its settings are part of every cache key.
"""

from __future__ import annotations

import hashlib
import io
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from PIL import Image

from curation.imaging import HIGH_DEPTH_MODES, stretch_to_8bit, upright
from curation.prelabel.errors import ManifestError
from schemas.params_prelabel import PreprocessParams

if TYPE_CHECKING:
    from curation.prelabel.anomaly import FeatureSpec


@dataclass(frozen=True)
class ImageRef:
    """What the loader needs from one manifest row."""

    path: str
    sha256: str
    exif_orientation: int = 1
    row: int = -1


@dataclass(frozen=True)
class InputSpec:
    """A model's input: square side in pixels and per-channel normalisation (0-1 scale)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def load_rgb(ref: ImageRef) -> np.ndarray:
    """Read ``ref.path``, check it still has the ingested content, and return it upright as uint8 RGB (H, W, 3).

    Raises:
        ManifestError: the file is gone, unreadable, changed since ingest, or no longer decodes.
    """
    where = f"{ref.path} (manifest row {ref.row})" if ref.row >= 0 else ref.path
    try:
        with open(ref.path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise ManifestError(
            f"{where}: cannot read the file ({err.strerror}); re-run ingest (dvc repro ingest)"
        ) from err
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise ManifestError(f"{where}: the file changed since ingest (SHA-256 differs); re-run ingest first")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            image = _to_rgb(image)
    except Exception as err:  # any decoder failure on a file ingest accepted: name it, never skip it silently
        raise ManifestError(f"{where}: does not decode any more ({type(err).__name__}: {err}); re-run ingest") from err
    return np.asarray(upright(image, ref.exif_orientation))


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in HIGH_DEPTH_MODES:
        return stretch_to_8bit(image).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def clahe(rgb: np.ndarray, clip_limit: float, tile_grid: int) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (OpenCV) on the lightness channel only, so colours keep."""
    import cv2

    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    equaliser = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile_grid, tile_grid))
    lab[..., 0] = equaliser.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def resize_square(rgb: np.ndarray, size: int, mode: str, fill: int = 0) -> np.ndarray:
    """``center_crop``: shortest side to ``size``, middle square kept. ``letterbox``: longest side to ``size``,
    padded with ``fill`` to a centred square (the whole image stays visible)."""
    height, width = rgb.shape[:2]
    image = Image.fromarray(rgb)
    if mode == "center_crop":
        scale = size / min(height, width)
        new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        return np.asarray(image.crop((left, top, left + size, top + size)))
    if mode == "letterbox":
        scale = size / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
        canvas = Image.new("RGB", (size, size), (fill, fill, fill))
        canvas.paste(image, ((size - new_w) // 2, (size - new_h) // 2))
        return np.asarray(canvas)
    raise ValueError(f"unknown resize mode {mode!r}; use center_crop or letterbox")


def prepare(rgb: np.ndarray, spec: InputSpec, settings: PreprocessParams) -> np.ndarray:
    """Upright uint8 RGB -> the model's float32 (3, size, size) input."""
    if settings.clahe:
        rgb = clahe(rgb, settings.clahe_clip_limit, settings.clahe_tile_grid)
    square = resize_square(rgb, spec.size, settings.resize, settings.letterbox_fill)
    pixels = square.astype(np.float32) * (1.0 / 255.0)
    pixels = (pixels - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def load_and_prepare(ref: ImageRef, specs: Sequence[InputSpec], settings: PreprocessParams) -> list[np.ndarray]:
    """Decode once, prepare for each of ``specs`` (e.g. CLIP's 224 and BLIP's 384 inputs)."""
    rgb = load_rgb(ref)
    return [prepare(rgb, spec, settings) for spec in specs]


def anomaly_input(ref: ImageRef, spec: FeatureSpec, settings: PreprocessParams) -> np.ndarray:
    """Decode once and prepare the anomaly scorer's input (:func:`curation.prelabel.anomaly.prepare`: its own
    resizing and padding; CLAHE as for the other models when the params ask for it)."""
    from curation.prelabel.anomaly import prepare as prepare_patches

    rgb = load_rgb(ref)
    if settings.clahe:
        rgb = clahe(rgb, settings.clahe_clip_limit, settings.clahe_tile_grid)
    return prepare_patches(rgb, spec)[0]


T = TypeVar("T")
R = TypeVar("R")


def prefetch_batches(
    items: Sequence[T], work: Callable[[T], R], *, batch_size: int, workers: int
) -> Iterator[tuple[list[T], list[R]]]:
    """Yield ``(items, work(items))`` batch by batch, in order, while threads already prepare the next batches.

    At most ``workers + 1`` batches are in flight, so memory stays bounded on any number of images.
    """
    batches = [list(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]
    if not batches:
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prelabel-decode") as pool:
        pending: deque = deque()
        upcoming = iter(batches)

        def submit() -> None:
            batch = next(upcoming, None)
            if batch is not None:
                pending.append((batch, [pool.submit(work, item) for item in batch]))

        for _ in range(workers + 1):
            submit()
        try:
            while pending:
                batch, futures = pending.popleft()
                submit()
                yield batch, [future.result() for future in futures]
        finally:
            for _, futures in pending:
                for future in futures:
                    future.cancel()
