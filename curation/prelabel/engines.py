"""Where a prelabel run's model work happens: in this process (``local``) or on Ray Data actors (``ray``).

Both engines take the images whose outputs are not in the cache and yield ``(refs, outputs)`` one model batch at a
time; the stage stores every batch in its cache as it arrives. So the cache, the outputs and resuming after a kill
are the same whichever engine computed them, and a ray run after a local run recomputes nothing.

The Ray engine is Ray Data, not a home-made scheduler: one dataset row per model batch (the local engine's
batches, in the same order, so a deterministic model gives bit-identical outputs: results for a row may depend on
which rows share its batch), decoded by CPU tasks, then ``map_batches`` over an actor pool where each actor holds
one model (``prelabel.ray``: actors, GPUs and CPUs per actor). Ray streams the rows, so only a few batches of
pixels are in flight at a time. Image paths and a local checkpoint folder must be readable at the same path on
every node (a shared mount); the cache stays with the driver.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from curation.errors import CurationError
from curation.prelabel.anomaly import FeatureSpec
from curation.prelabel.base import ImageModel
from curation.prelabel.errors import ModelUnavailableError
from curation.prelabel.images import ImageRef, InputSpec, anomaly_input, load_and_prepare, prefetch_batches
from schemas.params_prelabel import PreprocessParams, RayParams

if TYPE_CHECKING:
    from curation.prelabel.models import Checkpoint

Batches = Iterator[tuple[list[ImageRef], Sequence[Any]]]
ModelKind = Literal["clip", "captioner", "backbone", "patches", "clip-patches"]
_CONNECT_TIMEOUT_S = 5.0
_INSTALL_HINT = "prelabel.engine: ray needs Ray Data: pip install 'defect-curation[ray]' (or set engine: local)"


@dataclass(frozen=True)
class ModelRecipe:
    """How to build a model in another process: small and picklable. ``device`` is the params' preference,
    resolved where the model runs (a GPU actor picks CUDA even when the driver has no GPU)."""

    kind: ModelKind
    checkpoint: Checkpoint | None  # None for the offline backbone
    device: str
    features: FeatureSpec | None = None  # patch features (kinds "patches", "clip-patches") only

    def build(self) -> ImageModel:
        from curation.prelabel import models

        runtime = models.select_runtime(self.device)
        if self.kind == "backbone":
            return models.OfflineBackbone(runtime)
        if self.kind == "patches":
            from curation.prelabel.anomaly_scorer import PatchModel

            return PatchModel(models.OfflineBackbone(runtime), self.features)
        if self.checkpoint is None:
            raise TypeError(f"a {self.kind} recipe needs a checkpoint")
        if self.kind == "clip-patches":
            from curation.prelabel.anomaly_scorer import ClipPatchModel

            return ClipPatchModel(models.ClipScorer(self.checkpoint, runtime), spec=self.features)
        if self.kind == "clip":
            return models.ClipScorer(self.checkpoint, runtime)
        return models.Captioner(self.checkpoint, runtime)


# the per-image model outputs the engines run
Method = Literal["encode_images", "caption", "extract_patches", "extract_shared"]


@dataclass(frozen=True)
class Work:
    """One kind of per-image model output: ``model.<method>(pixels, **kwargs)`` on inputs prepared for ``spec``."""

    recipe: ModelRecipe
    method: Method
    spec: InputSpec | FeatureSpec  # a FeatureSpec: the anomaly input (anomaly.prepare), else the model's
    preprocess: PreprocessParams
    batch_size: int
    kwargs: dict[str, Any] = field(default_factory=dict)


def local_batches(model: ImageModel, work: Work, refs: Sequence[ImageRef], *, decode_workers: int) -> Batches:
    """Decode in threads beside the model and run ``work`` on ``model`` in this process."""
    call = getattr(model, work.method)
    for batch, arrays in prefetch_batches(
        refs, _Decode(work.spec, work.preprocess).one, batch_size=work.batch_size, workers=decode_workers
    ):
        yield batch, call(np.stack(arrays), **work.kwargs)


def ray_batches(work: Work, refs: Sequence[ImageRef], settings: RayParams) -> Batches:
    """Run ``work`` on Ray Data: decoding in CPU tasks, the model in an actor pool; batches arrive as they finish.

    Raises:
        CurationError: the error a task raised (a changed image, a model that does not load), as it was raised.
        ModelUnavailableError: Ray is not installed.
    """
    batches = [list(refs[i : i + work.batch_size]) for i in range(0, len(refs), work.batch_size)]
    if not batches:
        return
    try:
        import ray
    except ImportError as err:
        raise ModelUnavailableError(_INSTALL_HINT) from err
    if settings.address is None:
        _check_fits(ray.cluster_resources(), settings)
    for row in _dataset(ray, work, batches, settings).iter_rows():
        if row["error"]:
            raise pickle.loads(row["error"])  # a CurationError from our own task, e.g. an image changed since ingest
        outputs = row["outputs"]
        yield batches[int(row["batch"])], list(outputs) if work.method == "caption" else np.asarray(outputs)


def _check_fits(resources: dict[str, float], settings: RayParams) -> None:
    """On a local Ray, the actors and one decoding task must fit at once, or the run would wait forever for a CPU.
    (Not checked on a cluster address: an autoscaling cluster adds nodes when asked.)"""
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    need_cpus = settings.actors * settings.cpus_per_actor + settings.cpus_per_decode_task
    need_gpus = settings.actors * settings.gpus_per_actor
    if need_cpus > cpus + 1e-9 or need_gpus > gpus + 1e-9:
        raise ModelUnavailableError(
            f"prelabel.ray asks for {need_cpus:g} CPUs and {need_gpus:g} GPUs at once ({settings.actors} actors "
            f"x {settings.cpus_per_actor:g} CPU + {settings.gpus_per_actor:g} GPU, plus "
            f"{settings.cpus_per_decode_task:g} CPU for a decoding task) but the local Ray has {cpus:g} CPUs and "
            f"{gpus:g} GPUs; lower prelabel.ray.actors "
            "or the per-actor/per-task CPUs (fractions such as 0.5 are fine), or raise prelabel.ray.num_cpus"
        )


def _dataset(ray: Any, work: Work, batches: list[list[ImageRef]], settings: RayParams) -> Any:
    """The Ray Data plan: one row per model batch -> decoding CPU tasks -> the model actor pool."""
    rows = [
        {
            "batch": k,
            "path": [ref.path for ref in batch],
            "sha256": [ref.sha256 for ref in batch],
            "orientation": [ref.exif_orientation for ref in batch],
            "row": [ref.row for ref in batch],
        }
        for k, batch in enumerate(batches)
    ]
    return (
        ray.data.from_items(rows, override_num_blocks=len(rows))
        # flat_map (one row in, one row out) rather than map: Ray never fuses a step that may change the row count
        # into a batched step after it, so decoding stays in its own CPU tasks instead of running inside the model
        # actors whenever both ask for the same resources (tests/test_prelabel_ray.py checks the plan).
        .flat_map(_Decode(work.spec, work.preprocess), num_cpus=settings.cpus_per_decode_task)
        .map_batches(
            _ModelActor,
            fn_constructor_kwargs={"recipe": work.recipe, "method": work.method, "kwargs": work.kwargs},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=settings.actors),
            num_gpus=settings.gpus_per_actor or None,
            num_cpus=settings.cpus_per_actor,
        )
    )


class _Decode:
    """Read, check and prepare images for one input spec (a callable object, so Ray can ship it to tasks).

    Our own errors (a file gone or changed since ingest) travel as data in the ``error`` column: Ray would wrap a
    raised one in its UserCodeException, losing the type and the message the user needs.
    """

    def __init__(self, spec: InputSpec | FeatureSpec, preprocess: PreprocessParams) -> None:
        self.spec = spec
        self.preprocess = preprocess

    def one(self, ref: ImageRef) -> np.ndarray:
        if isinstance(self.spec, FeatureSpec):
            return anomaly_input(ref, self.spec, self.preprocess)
        return load_and_prepare(ref, (self.spec,), self.preprocess)[0]

    def __call__(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        refs = [
            ImageRef(str(p), str(s), int(o), int(r))
            for p, s, o, r in zip(row["path"], row["sha256"], row["orientation"], row["row"], strict=True)
        ]
        try:
            pixels, error = np.stack([self.one(ref) for ref in refs]), b""
        except CurationError as err:
            pixels, error = np.zeros((0, 0, 0, 0), np.float32), pickle.dumps(err)
        return [{"batch": row["batch"], "pixels": pixels, "error": error}]


class _ModelActor:
    """One model replica: built once per actor, then called on one batch of pixels per row."""

    def __init__(self, recipe: ModelRecipe, method: str, kwargs: dict[str, Any]) -> None:
        self.kwargs = kwargs
        self.empty: Any = [] if method == "caption" else np.zeros((0, 0), np.float32)
        self.failure = b""
        try:
            self.call = getattr(recipe.build(), method)
        except CurationError as err:  # e.g. the checkpoint folder is missing on this node: say so on every row
            self.failure = pickle.dumps(err)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        (pixels,), (error,) = batch["pixels"], batch["error"]  # batch_size=1: one model batch per row
        error = error or self.failure
        output: Any = self.empty
        if not error:
            try:
                # Ray hands out read-only views of its object store; torch wants writable arrays.
                output = self.call(np.require(pixels, np.float32, ["W"]), **self.kwargs)
            except CurationError as err:
                error = pickle.dumps(err)
        column = np.empty(1, dtype=object)
        column[0] = output
        return {"batch": batch["batch"], "outputs": column if isinstance(output, list) else [output], "error": [error]}


@contextlib.contextmanager
def ray_session(settings: RayParams) -> Iterator[None]:
    """Connect to ``settings.address``, or start a local Ray for the run (stopped afterwards); reuse a Ray this
    process already started (tests call ``ray.init(num_cpus=2)`` themselves).

    Raises:
        ModelUnavailableError: Ray is not installed, or the cluster cannot be reached.
    """
    # Air-gapped sites: Ray must not try to report usage statistics to the internet.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as err:
        raise ModelUnavailableError(_INSTALL_HINT) from err
    _quiet_ray_data()
    if ray.is_initialized():
        yield
        return
    options: dict[str, Any] = {"include_dashboard": False, "configure_logging": False}
    if settings.address is not None:
        options["address"] = settings.address
    elif settings.num_cpus is not None:
        options["num_cpus"] = settings.num_cpus
    where = f"the Ray cluster at {settings.address}" if settings.address else "a local Ray"
    fix = "check prelabel.ray.address (or set it to null for a local Ray, or engine: local)"
    if settings.address not in (None, "auto"):
        _check_reachable(settings.address, where, fix)
    try:
        ray.init(**options)
    except Exception as err:
        raise ModelUnavailableError(f"cannot start or reach {where} ({type(err).__name__}: {err}); {fix}") from err
    try:
        yield
    finally:
        ray.shutdown()


def _check_reachable(address: str, where: str, fix: str) -> None:
    """Fail in seconds on an address nothing listens on: ``ray.init`` would keep retrying it for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ModelUnavailableError(f"prelabel.ray.address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise ModelUnavailableError(f"cannot reach {where} ({err}); {fix}") from err


def _quiet_ray_data() -> None:
    """Our own progress bar reports the run; Ray Data's per-operator bars and INFO lines would interleave with it."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # incl. its warning that progress bars are off


class Engine:
    """Runs :class:`Work` on the engine the params chose. Ray is started (or connected to) on first use only, so a
    run whose outputs are all cached never waits for it; it is stopped when the engine closes."""

    def __init__(self, engine: Literal["local", "ray"], ray_settings: RayParams, *, decode_workers: int) -> None:
        self.engine = engine
        self.ray_settings = ray_settings
        self.decode_workers = decode_workers
        self._stack = contextlib.ExitStack()
        self._ray_started = False

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def batches(self, model: ImageModel, work: Work, refs: Sequence[ImageRef]) -> Batches:
        if self.engine == "local" or not refs:
            return local_batches(model, work, refs, decode_workers=self.decode_workers)
        if not self._ray_started:
            self._stack.enter_context(ray_session(self.ray_settings))
            self._ray_started = True
        return ray_batches(work, refs, self.ray_settings)
