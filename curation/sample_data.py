"""Procedural sample data: a small, deterministic defect-image dataset for the demo and the tests.

The images are drawn with numpy and Pillow only: brushed-steel grain under varied lighting, one defect per image
(scratch, contamination, dent, crack, discoloration) or none (``ok``, sometimes with a harmless shadow, reflection or
lens dust). The files are spread over ``images/<line>/<camera>/`` folders, never by class, and come with the
problems a real export has: mixed formats, names with spaces and Korean characters, exact and near duplicates,
broken files and a metadata CSV that does not quite match the folder. ``truth.csv`` holds the ground truth.

The same arguments always give byte-identical files: all randomness comes from ``numpy.random.default_rng`` seeded
with ``seed`` (and the image index), and timestamps come from a fixed base date, never from the clock.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from curation.errors import InputError
from curation.io import atomic_path

SAMPLE_CLASSES = ("scratch", "contamination", "dent", "crack", "discoloration", "ok")
SEVERITIES = ("minor", "major", "critical")

LINES = ("line-1", "line-2", "line-3")
CAMERAS = ("cam-a", "cam-b")
PRODUCTS = {"line-1": "bracket-A", "line-2": "housing-B", "line-3": "housing-B"}

METADATA_COLUMNS = ("file", "line", "product", "camera", "lighting", "captured_at")
TRUTH_COLUMNS = ("file", "label", "severity")

_BASE_TIME = datetime(2024, 3, 4, 6, 0, 0)
_MIN_SIZE = 64
_N_EXACT_DUPLICATES = 2
_N_NEAR_DUPLICATES = 2

Float = np.ndarray  # float32 arrays: (H, W) fields or (H, W, 3) colour images in [0, 1]
Strokes = Iterable[tuple[Sequence[tuple[float, float]], float]]


@dataclass(frozen=True)
class _Lighting:
    """How one lighting setup shows the surface: overall gain, gradient and vignetting ranges, grain contrast."""

    gain: float
    gradient: tuple[float, float]
    vignette: tuple[float, float]
    grain: float
    glare_probability: float


_LIGHTING = {
    "diffuse": _Lighting(1.0, (0.03, 0.15), (0.0, 0.2), 1.0, 0.1),
    "coaxial": _Lighting(1.1, (0.02, 0.1), (0.15, 0.35), 0.8, 0.15),
    "low-angle": _Lighting(0.9, (0.2, 0.45), (0.0, 0.2), 1.6, 0.35),
}
LIGHTINGS = tuple(_LIGHTING)

# Image formats as (Pillow format, file extension, save options); fixed options keep the bytes reproducible.
_FORMATS: dict[str, tuple[str, str, dict[str, int]]] = {
    "png": ("PNG", ".png", {"compress_level": 1}),  # fast; noisy images barely compress
    "jpeg": ("JPEG", ".jpg", {"quality": 90}),
    "bmp": ("BMP", ".bmp", {}),
    "tiff": ("TIFF", ".tif", {}),
    "webp": ("WEBP", ".webp", {"quality": 90}),
}
_NEAR_DUPLICATE_JPEG_QUALITY = 70
_NEAR_DUPLICATE_BRIGHTNESS_SHIFT = 3


@dataclass(frozen=True)
class RenderedSample:
    """One rendered surface.

    Attributes:
        label: One of ``SAMPLE_CLASSES``.
        severity: One of ``SEVERITIES`` for a defect, ``""`` for ``ok``.
        image: The picture, uint8 array of shape (size, size, 3).
        defect_free: The same surface, lighting and nuisances without the defect (equal to ``image`` for ``ok``).
    """

    label: str
    severity: str
    image: np.ndarray
    defect_free: np.ndarray


@dataclass(frozen=True)
class SampleSummary:
    """What ``generate_sample`` wrote. Paths of files are relative to ``images/``, with forward slashes.

    Attributes:
        out_dir: The output folder holding ``images/``, ``metadata.csv`` and ``truth.csv``.
        n_per_class: Rendered images per class, duplicates not counted.
        n_images: Decodable image files written, duplicates included (the rows of ``truth.csv``).
        n_broken: Files with an image extension that cannot be decoded.
        n_duplicates: Byte-identical copies of other images.
        n_near_duplicates: Re-encoded or slightly brightened copies of other images.
        label_counts: Rows of ``truth.csv`` per label, in ``SAMPLE_CLASSES`` order.
        exact_duplicates: ``(copy, source)`` pairs.
        near_duplicates: ``(copy, source)`` pairs.
        broken_files: The broken files.
        unlisted_file: The image that has no row in ``metadata.csv``.
        missing_file: The ``metadata.csv`` row whose file does not exist.
    """

    out_dir: Path
    n_per_class: int
    n_images: int
    n_broken: int
    n_duplicates: int
    n_near_duplicates: int
    label_counts: Mapping[str, int]
    exact_duplicates: tuple[tuple[str, str], ...]
    near_duplicates: tuple[tuple[str, str], ...]
    broken_files: tuple[str, ...]
    unlisted_file: str
    missing_file: str

    @property
    def images_dir(self) -> Path:
        """The folder of images (walk it recursively)."""
        return self.out_dir / "images"

    @property
    def metadata_csv(self) -> Path:
        """The metadata CSV (``METADATA_COLUMNS``)."""
        return self.out_dir / "metadata.csv"

    @property
    def truth_csv(self) -> Path:
        """The ground-truth CSV (``TRUTH_COLUMNS``)."""
        return self.out_dir / "truth.csv"


@dataclass(frozen=True)
class _Shot:
    """Where one file goes and the metadata a camera would record for it."""

    file: str
    line: str
    camera: str
    lighting: str
    captured_at: str

    def metadata_row(self) -> tuple[str, ...]:
        return (self.file, self.line, PRODUCTS[self.line], self.camera, self.lighting, self.captured_at)


def generate_sample(out_dir: Path, *, n_per_class: int = 20, seed: int = 0, size: int = 256) -> SampleSummary:
    """Write a sample defect dataset: images, ``metadata.csv`` and ``truth.csv``.

    Files this generator owns are overwritten; other files in ``out_dir`` are left alone, so use a fresh folder
    when changing the arguments.

    Args:
        out_dir: Folder to write into; created if missing.
        n_per_class: Rendered images per class in ``SAMPLE_CLASSES``.
        seed: Non-negative seed; the same seed gives byte-identical files.
        size: Width and height of every image in pixels.

    Returns:
        A summary of what was written, including the deliberate problems (duplicates, broken files, metadata gaps).

    Raises:
        InputError: If ``n_per_class`` < 1, ``seed`` < 0 or ``size`` < 64.
    """
    if n_per_class < 1:
        raise InputError(f"n_per_class must be at least 1, got {n_per_class}; ask for one or more images per class.")
    if seed < 0:
        raise InputError(f"seed must be zero or positive, got {seed}.")
    if size < _MIN_SIZE:
        raise InputError(f"size must be at least {_MIN_SIZE} pixels, got {size}.")

    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    rng = np.random.default_rng(seed)
    n_renders = n_per_class * len(SAMPLE_CLASSES)
    labels = [SAMPLE_CLASSES[i] for i in rng.permutation(np.repeat(np.arange(len(SAMPLE_CLASSES)), n_per_class))]
    formats = _assign_formats(rng, n_renders)
    stems = _assign_stems(rng, n_renders)
    n_extra = _N_EXACT_DUPLICATES + _N_NEAR_DUPLICATES + 3  # copies, then three broken files
    offsets = np.cumsum(rng.integers(15, 600, n_renders + n_extra + 1)).tolist()
    shots = [_random_shot(rng, (_BASE_TIME + timedelta(seconds=s)).isoformat()) for s in offsets]
    picked = [int(i) for i in rng.permutation(n_renders)[: _N_EXACT_DUPLICATES + _N_NEAR_DUPLICATES + 1]]
    exact_sources = picked[:_N_EXACT_DUPLICATES]
    near_sources = picked[_N_EXACT_DUPLICATES:-1]
    unlisted = picked[-1]
    sources = set(exact_sources + near_sources)

    truth: list[tuple[str, str, str]] = []
    written: dict[int, tuple[bytes, np.ndarray, str]] = {}  # bytes, pixels and format of the duplicates' sources
    for index in range(n_renders):
        shot = _place(shots[index], f"{stems[index]}{_FORMATS[formats[index]][1]}")
        shots[index] = shot
        sample = render_sample(labels[index], np.random.default_rng([seed, index]), size=size, lighting=shot.lighting)
        data = _encode(sample.image, formats[index])
        _write_bytes(images_dir / shot.file, data)
        truth.append((shot.file, sample.label, sample.severity))
        if index in sources:
            written[index] = (data, sample.image, formats[index])

    copies = [(source, written[source][2], written[source][0]) for source in exact_sources]  # byte-identical
    for variant, source in enumerate(near_sources):  # re-encoded or brightened: near-duplicates
        _, pixels, fmt = written[source]
        if variant == 0:
            fmt, data = "jpeg", _encode(pixels, "jpeg", quality=_NEAR_DUPLICATE_JPEG_QUALITY)
        else:
            brighter = np.minimum(pixels.astype(np.int16) + _NEAR_DUPLICATE_BRIGHTNESS_SHIFT, 255).astype(np.uint8)
            data = _encode(brighter, fmt)
        copies.append((source, fmt, data))
    index = n_renders
    pairs: list[tuple[str, str]] = []
    for source, fmt, data in copies:
        shot = _copy_of(shots[source], shots[index], f"img_{index:04d}{_FORMATS[fmt][1]}")
        _write_bytes(images_dir / shot.file, data)
        shots[index] = shot
        truth.append((shot.file, *truth[source][1:]))
        pairs.append((shot.file, shots[source].file))
        index += 1
    exact_pairs, near_pairs = pairs[: len(exact_sources)], pairs[len(exact_sources) :]

    broken: list[str] = []
    for suffix, data in _broken_payloads(rng, seed, size):
        shot = _place(shots[index], f"img_{index:04d}{suffix}")
        _write_bytes(images_dir / shot.file, data)
        shots[index] = shot
        broken.append(shot.file)
        index += 1

    missing = _place(shots[index], f"img_{index:04d}.png")
    metadata = [shot.metadata_row() for i, shot in enumerate(shots[:index]) if i != unlisted]
    metadata.append(missing.metadata_row())
    _write_csv(out_dir / "metadata.csv", METADATA_COLUMNS, sorted(metadata))
    _write_csv(out_dir / "truth.csv", TRUTH_COLUMNS, sorted(truth))

    counts = Counter(label for _, label, _ in truth)
    return SampleSummary(
        out_dir=out_dir,
        n_per_class=n_per_class,
        n_images=len(truth),
        n_broken=len(broken),
        n_duplicates=len(exact_pairs),
        n_near_duplicates=len(near_pairs),
        label_counts={label: counts[label] for label in SAMPLE_CLASSES},
        exact_duplicates=tuple(exact_pairs),
        near_duplicates=tuple(near_pairs),
        broken_files=tuple(broken),
        unlisted_file=shots[unlisted].file,
        missing_file=missing.file,
    )


def render_sample(
    label: str, rng: np.random.Generator, *, size: int = 256, lighting: str = "diffuse"
) -> RenderedSample:
    """Render one metal surface of class ``label``.

    Args:
        label: One of ``SAMPLE_CLASSES``.
        rng: Source of all randomness; the same generator state gives the same pixels.
        size: Width and height in pixels.
        lighting: One of ``LIGHTINGS``; low-angle light shows more grain and a stronger gradient.

    Returns:
        The image, the same scene without the defect, and the severity (from the defect's size and contrast).

    Raises:
        InputError: If ``label`` or ``lighting`` is unknown.
    """
    if label not in SAMPLE_CLASSES:
        raise InputError(f"Unknown sample class {label!r}; use one of {', '.join(SAMPLE_CLASSES)}.")
    if lighting not in _LIGHTING:
        raise InputError(f"Unknown lighting {lighting!r}; use one of {', '.join(LIGHTINGS)}.")
    light = _LIGHTING[lighting]
    xs, ys = _coords(size)
    albedo = _brushed_metal(rng, size, light.grain)
    light_angle = rng.uniform(0, 2 * math.pi)
    gain = _illumination(rng, xs, ys, light_angle, light)
    glare = np.zeros((size, size), np.float32)
    if rng.random() < light.glare_probability:
        glare = _glare_band(rng, xs, ys, amplitude=(0.1, 0.25), width=(0.02, 0.05))
    veil = np.ones((size, size), np.float32)
    nuisance_probability = 0.4 if label == "ok" else 0.1
    if rng.random() < nuisance_probability:
        gain = gain * _shadow(rng, xs, ys)
    if rng.random() < nuisance_probability:
        glare = np.maximum(glare, _glare_band(rng, xs, ys, amplitude=(0.2, 0.45), width=(0.04, 0.1)))
    if rng.random() < nuisance_probability:
        veil = _lens_dust(rng, size)

    defect_free = _expose(albedo, gain, glare, veil)
    if label == "ok":
        return RenderedSample(label, "", defect_free, defect_free)
    magnitude = float(rng.uniform(0, 1))
    damaged = _DEFECTS[label](albedo.copy(), rng, magnitude, light_angle)
    severity = SEVERITIES[min(int(magnitude * len(SEVERITIES)), len(SEVERITIES) - 1)]
    return RenderedSample(label, severity, _expose(damaged, gain, glare, veil), defect_free)


# --- file plan ------------------------------------------------------------------------------------------------------


def _assign_formats(rng: np.random.Generator, n: int) -> list[str]:
    """Mostly PNG and JPEG, a few BMP, TIFF and WEBP, in random order."""
    n_rare = max(1, n // 40)
    rare = ["bmp", "tiff", "webp"] * n_rare
    common = ["png", "jpeg"] * ((n - len(rare)) // 2 + 1)
    formats = (rare + common)[:n]
    return [formats[i] for i in rng.permutation(n)]


def _assign_stems(rng: np.random.Generator, n: int) -> list[str]:
    """Neutral names ``img_0007``; two with Korean characters and a space, two with a space."""
    stems = [f"img_{i:04d}" for i in range(n)]
    for rank, i in enumerate(rng.permutation(n)[:4]):
        stems[i] = f"검사 {i:04d}" if rank < 2 else f"img {i:04d}"
    return stems


def _random_shot(rng: np.random.Generator, captured_at: str) -> _Shot:
    """Line, camera and lighting of one capture; the file name is set by ``_place``."""
    return _Shot(
        file="",
        line=LINES[int(rng.integers(len(LINES)))],
        camera=CAMERAS[int(rng.integers(len(CAMERAS)))],
        lighting=LIGHTINGS[int(rng.integers(len(LIGHTINGS)))],
        captured_at=captured_at,
    )


def _place(shot: _Shot, name: str) -> _Shot:
    """Put a file named ``name`` in the folder of its line and camera."""
    return _Shot(f"{shot.line}/{shot.camera}/{name}", shot.line, shot.camera, shot.lighting, shot.captured_at)


def _copy_of(source: _Shot, slot: _Shot, name: str) -> _Shot:
    """A copy of ``source`` saved again beside it, with the capture time of its own ``slot``."""
    folder = source.file.rsplit("/", 1)[0]
    return _Shot(f"{folder}/{name}", source.line, source.camera, source.lighting, slot.captured_at)


def _broken_payloads(rng: np.random.Generator, seed: int, size: int) -> list[tuple[str, bytes]]:
    """An empty JPEG, a JPEG cut in half, and a Git LFS pointer (text) named ``.png``."""
    image = render_sample("ok", np.random.default_rng([seed, 1 << 30]), size=size).image
    jpeg = _encode(image, "jpeg")
    oid = "".join(f"{b:02x}" for b in rng.integers(0, 256, 32))
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(jpeg)}\n"
    return [(".jpg", b""), (".jpg", jpeg[: len(jpeg) // 2]), (".png", pointer.encode("ascii"))]


def _encode(pixels: np.ndarray, fmt: str, **options: int) -> bytes:
    pil_format, _, defaults = _FORMATS[fmt]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=pil_format, **{**defaults, **options})
    return buffer.getvalue()


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


# --- surface and lighting -------------------------------------------------------------------------------------------


def _coords(size: int) -> tuple[Float, Float]:
    """Pixel-centre coordinates in [0, 1]: x grows to the right, y downwards."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(axis, axis)


def _brushed_metal(rng: np.random.Generator, size: int, grain_scale: float) -> Float:
    """Albedo of brushed steel: a grey or slightly tinted base, directional grain, fine noise and soft mottling."""
    base = rng.uniform(0.42, 0.72)
    tint = 1 + rng.normal(0, 0.025, 3).astype(np.float32)
    streak = int(rng.integers(size // 10, size // 3))
    span = math.ceil(size * 1.45)  # any rotation of a span x span square still covers the centre size x size
    noise = np.cumsum(rng.standard_normal((span, span + streak), dtype=np.float32), axis=1)
    streaks = (noise[:, streak:] - noise[:, :-streak]) / math.sqrt(streak)  # long along x, unit variance
    angle = rng.uniform(-20, 20) + (90 if rng.random() < 0.5 else 0)
    rotated = np.asarray(Image.fromarray(streaks).rotate(angle, resample=Image.Resampling.BILINEAR))
    start = (span - size) // 2
    grain = rotated[start : start + size, start : start + size]
    fine = rng.standard_normal((size, size), dtype=np.float32)
    mottle = 0.03 * _smooth_noise(rng, size, cells=4)
    lum = base + rng.uniform(0.012, 0.03) * grain_scale * grain + 0.006 * fine + mottle
    return np.clip(lum[..., None] * tint, 0, 1).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, *, cells: int) -> Float:
    """Standard normal noise on a ``cells`` x ``cells`` grid, upsampled smoothly to ``size`` x ``size``."""
    coarse = Image.fromarray(rng.standard_normal((cells, cells), dtype=np.float32))
    return np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC))


def _illumination(rng: np.random.Generator, xs: Float, ys: Float, angle: float, light: _Lighting) -> Float:
    """Light falling off across the part towards ``angle``, with vignetting."""
    strength = rng.uniform(*light.gradient)
    vignette = rng.uniform(*light.vignette)
    ramp = (xs - 0.5) * math.cos(angle) + (ys - 0.5) * math.sin(angle)
    radius2 = (xs - 0.5) ** 2 + (ys - 0.5) ** 2
    return (light.gain * (1 + 2 * strength * ramp) * (1 - 2 * vignette * radius2)).astype(np.float32)


def _glare_band(
    rng: np.random.Generator,
    xs: Float,
    ys: Float,
    *,
    amplitude: tuple[float, float],
    width: tuple[float, float],
) -> Float:
    """A straight band of specular reflection (a fraction of the way to white)."""
    theta = rng.uniform(0, math.pi)
    x0, y0 = rng.uniform(0.2, 0.8, 2)
    distance = (xs - x0) * -math.sin(theta) + (ys - y0) * math.cos(theta)
    return (rng.uniform(*amplitude) * np.exp(-((distance / rng.uniform(*width)) ** 2))).astype(np.float32)


def _shadow(rng: np.random.Generator, xs: Float, ys: Float) -> Float:
    """A soft-edged shadow over one side of the image (multiplicative)."""
    theta = rng.uniform(0, 2 * math.pi)
    distance = (xs - 0.5) * math.cos(theta) + (ys - 0.5) * math.sin(theta) - rng.uniform(0.1, 0.4)
    cover = 1 / (1 + np.exp(-distance / rng.uniform(0.03, 0.1)))
    return (1 - rng.uniform(0.15, 0.3) * cover).astype(np.float32)


def _lens_dust(rng: np.random.Generator, size: int) -> Float:
    """Out-of-focus dust on the lens: a few soft grey discs (multiplicative)."""
    canvas = Image.new("L", (size, size))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(2, 7))):
        radius = size * rng.uniform(0.012, 0.04)
        cx, cy = rng.uniform(0, size, 2)
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=int(rng.integers(90, 200)))
    blurred = canvas.filter(ImageFilter.GaussianBlur(size * 0.02))
    return 1 - 0.18 * np.asarray(blurred, dtype=np.float32) / 255


def _expose(albedo: Float, gain: Float, glare: Float, veil: Float) -> np.ndarray:
    """Light the surface, add glare, look through the lens, and quantise to 8 bits."""
    lit = albedo * gain[..., None]
    lit = lit + glare[..., None] * (1 - lit)
    lit = lit * veil[..., None]
    return np.round(np.clip(lit, 0, 1) * 255).astype(np.uint8)


# --- masks ----------------------------------------------------------------------------------------------------------


def _stroke_mask(size: int, strokes: Strokes, blur: float) -> Float:
    """Anti-aliased mask in [0, 1] of polylines ``(points, width in pixels)``, drawn at twice the resolution."""
    canvas = Image.new("L", (2 * size, 2 * size))
    draw = ImageDraw.Draw(canvas)
    for points, width in strokes:
        scaled = [(2 * x, 2 * y) for x, y in points]
        draw.line(scaled, fill=255, width=max(1, round(2 * width)), joint="curve")
        if width > 1:  # round caps, so short segments of a polyline join without gaps
            for x, y in scaled:
                draw.ellipse((x - width, y - width, x + width, y + width), fill=255)
    mask = canvas.resize((size, size), Image.Resampling.BOX).filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(mask, dtype=np.float32) / 255


def _blob_mask(
    rng: np.random.Generator, size: int, centre: Sequence[float], radius: float, *, roughness: float, blur: float
) -> Float:
    """Mask in [0, 1] of an irregular blob: a polygon with jittered, smoothed radii, then blurred."""
    n = int(rng.integers(12, 20))
    angles = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * (2 * math.pi / n)
    radii = radius * np.exp(rng.normal(0, roughness, n))
    radii = 0.5 * radii + 0.25 * (np.roll(radii, 1) + np.roll(radii, -1))
    points = [
        (2 * (centre[0] + r * math.cos(a)), 2 * (centre[1] + r * math.sin(a)))
        for a, r in zip(angles, radii, strict=True)
    ]
    canvas = Image.new("L", (2 * size, 2 * size))
    ImageDraw.Draw(canvas).polygon(points, fill=255)
    mask = canvas.resize((size, size), Image.Resampling.BOX).filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(mask, dtype=np.float32) / 255


# --- defects: (albedo, rng, magnitude in [0, 1], light angle) -> damaged albedo ---------------------------------------


def _scratch(albedo: Float, rng: np.random.Generator, magnitude: float, light_angle: float) -> Float:
    """One to three thin, long, nearly parallel lines, bright (fresh metal) or dark (groove)."""
    size = albedo.shape[0]
    px = size / 256
    n_lines = 1 if rng.random() < 0.6 else int(rng.integers(2, 4))
    theta = rng.uniform(0, math.pi)
    length = size * (0.3 + 0.55 * magnitude)
    cx, cy = rng.uniform(0.3, 0.7, 2) * size
    t = np.linspace(-0.5, 0.5, 24)
    strokes = []
    for i in range(n_lines):
        angle = theta + rng.normal(0, 0.04)
        offset = (i - (n_lines - 1) / 2) * rng.uniform(4, 10) * px
        ox, oy = cx - offset * math.sin(angle), cy + offset * math.cos(angle)
        along = t * length * rng.uniform(0.7, 1.0)
        across = rng.normal(0, 0.04) * length * (1 - 4 * t**2)  # a gentle bow
        xs = ox + along * math.cos(angle) - across * math.sin(angle)
        ys = oy + along * math.sin(angle) + across * math.cos(angle)
        strokes.append((list(zip(xs.tolist(), ys.tolist(), strict=True)), px * (0.8 + 1.4 * magnitude)))
    fade = np.clip(0.75 + 0.4 * _smooth_noise(rng, size, cells=6), 0.2, 1)  # worn unevenly along its length
    mask = (_stroke_mask(size, strokes, blur=0.4 * px) * fade)[..., None]
    contrast = 0.2 + 0.35 * magnitude
    if rng.random() < 0.6:
        return np.clip(albedo + contrast * mask, 0, 1)
    return albedo * (1 - min(0.9, 1.4 * contrast) * mask)


def _contamination(albedo: Float, rng: np.random.Generator, magnitude: float, light_angle: float) -> Float:
    """Irregular dark, oily blotches with scattered particles around them."""
    size = albedo.shape[0]
    px = size / 256
    cover = np.zeros((size, size), np.float32)
    centres = []
    for _ in range(int(rng.integers(1, 4))):
        centre = rng.uniform(0.15, 0.85, 2) * size
        radius = size * (0.025 + 0.07 * magnitude) * rng.uniform(0.6, 1.2)
        blob = _blob_mask(rng, size, centre, radius, roughness=0.35, blur=px * rng.uniform(0.8, 3.0))
        halo = _blob_mask(rng, size, centre, 1.5 * radius, roughness=0.2, blur=0.5 * radius)  # thin oil film
        opacity = (0.45 + 0.45 * magnitude) * rng.uniform(0.8, 1.0)
        cover = np.maximum(cover, opacity * np.maximum(blob, 0.3 * halo))
        centres.append((centre, radius))
    particles = []
    for _ in range(int(rng.integers(4, 12 + int(30 * magnitude)))):
        centre, radius = centres[int(rng.integers(len(centres)))]
        x, y = rng.normal(centre, 1.8 * radius)
        particles.append(([(x, y), (x + rng.normal(0, px), y + rng.normal(0, px))], px * rng.uniform(0.6, 2.0)))
    cover = np.maximum(cover, 0.8 * _stroke_mask(size, particles, blur=0.3 * px))[..., None]
    cover = cover * np.clip(0.85 + 0.15 * _smooth_noise(rng, size, cells=12), 0, 1)[..., None]  # uneven film
    colour = np.array([0.16, 0.13, 0.09], np.float32) * rng.uniform(0.7, 1.3)
    return albedo * (1 - cover) + colour * cover


def _dent(albedo: Float, rng: np.random.Generator, magnitude: float, light_angle: float) -> Float:
    """A round or oval depression: a bowl shaded by the light direction, darker inside, with a highlight rim."""
    size = albedo.shape[0]
    radius = size * (0.05 + 0.12 * magnitude)
    aspect = rng.uniform(0.65, 1.0)
    phi = rng.uniform(0, math.pi)
    cx, cy = rng.uniform(0.2, 0.8, 2) * size
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    u = (xs - cx) * math.cos(phi) + (ys - cy) * math.sin(phi)
    v = -(xs - cx) * math.sin(phi) + (ys - cy) * math.cos(phi)
    d2 = (u / radius) ** 2 + (v / (radius * aspect)) ** 2
    depth = -np.where(d2 < 1, (1 - d2) ** 2, 0)  # height: 0 outside, -1 at the bottom
    grad_y, grad_x = np.gradient(depth)
    shade = -(grad_x * math.cos(light_angle) + grad_y * math.sin(light_angle)) * radius * (0.06 + 0.08 * magnitude)
    rim = (0.04 + 0.06 * magnitude) * np.exp(-(((np.sqrt(d2) - 1) / 0.08) ** 2))
    return np.clip(albedo * (1 + 0.12 * depth[..., None]) + (shade + rim)[..., None], 0, 1)


def _crack(albedo: Float, rng: np.random.Generator, magnitude: float, light_angle: float) -> Float:
    """A dark, jagged, tapering random walk growing both ways from a start point, with a few branches."""
    size = albedo.shape[0]
    px = size / 256
    step = 2.5 * px
    n_steps = int(size * (0.25 + 0.5 * magnitude) / step / 2)
    x0, y0 = rng.uniform(0.25, 0.75, 2) * size
    heading = rng.uniform(0, 2 * math.pi)
    width = px * (1.0 + 1.8 * magnitude)
    arms = [(x0, y0, heading, n_steps, width, 0), (x0, y0, heading + math.pi, n_steps, width, 0)]
    strokes = []
    while arms:
        x, y, heading, steps, arm_width, depth = arms.pop()
        angle = heading
        for i in range(steps):
            heading += rng.normal(0, 0.05)
            angle = heading + 0.5 * (angle - heading) + rng.normal(0, 0.45)
            nx, ny = x + step * math.cos(angle), y + step * math.sin(angle)
            segment_width = arm_width * (1 - 0.7 * i / steps)
            strokes.append(([(x, y), (nx, ny)], segment_width))
            if depth < 2 and rng.random() < 0.035:
                turn = rng.choice([-1, 1]) * rng.uniform(0.5, 1.1)
                arms.append((nx, ny, angle + turn, int(steps * rng.uniform(0.2, 0.5)), 0.7 * segment_width, depth + 1))
            x, y = nx, ny
    mask = _stroke_mask(size, strokes, blur=0.35 * px)[..., None]
    return albedo * (1 - (0.55 + 0.35 * magnitude) * mask)


# Tint gains per colour channel as (outer, inner): heat tint goes straw -> blue towards the hottest point.
_TINTS = (
    ((1.25, 1.05, 0.7), (0.7, 0.85, 1.4)),  # heat tint
    ((1.2, 0.95, 0.7), (0.95, 0.65, 0.45)),  # brown oxidation
    ((1.15, 0.85, 1.1), (0.75, 0.75, 1.35)),  # purple-blue temper colours
)


def _discoloration(albedo: Float, rng: np.random.Generator, magnitude: float, light_angle: float) -> Float:
    """A large soft patch of heat tint or oxidation, colour changing from its edge to its centre."""
    size = albedo.shape[0]
    radius = size * (0.15 + 0.2 * magnitude)
    centre = rng.uniform(0.3, 0.7, 2) * size
    mask = _blob_mask(rng, size, centre, radius, roughness=0.25, blur=0.35 * radius)[..., None]
    outer, inner = (np.array(gain, np.float32) for gain in _TINTS[int(rng.integers(len(_TINTS)))])
    gain = outer + (inner - outer) * np.clip(1.6 * mask - 0.4, 0, 1)
    alpha = (0.55 + 0.45 * magnitude) * mask
    return np.clip(albedo * (1 - alpha) + albedo * gain * alpha, 0, 1)


_DEFECTS: dict[str, Callable[[Float, np.random.Generator, float, float], Float]] = {
    "scratch": _scratch,
    "contamination": _contamination,
    "dent": _dent,
    "crack": _crack,
    "discoloration": _discoloration,
}
