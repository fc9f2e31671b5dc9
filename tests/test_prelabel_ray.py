"""The Ray engine (Ray Data actors on a local ``ray.init(num_cpus=2)``) against the local engine: the same outputs,
bit for bit with deterministic tiny models, and the same cache."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from tiny_models import build_blip, build_clip

from curation.prelabel.engines import Work, _dataset, local_batches, ray_batches
from curation.prelabel.errors import ManifestError, ModelUnavailableError
from curation.prelabel.images import ImageRef
from curation.prelabel.models import ClipScorer, Runtime, resolve_checkpoint
from curation.prelabel.stage import prelabel
from schemas.params_anomaly import AnomalyParams
from schemas.params_prelabel import CaptionParams, ClipParams, PrelabelParams, RayParams
from tests.conftest import ingested_sample

ray = pytest.importorskip("ray")
CPU = Runtime("cpu", "float32")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def world(tmp_path_factory, params):
    root = tmp_path_factory.mktemp("prelabel-ray")
    _, manifest = ingested_sample(root, params, n_per_class=3, seed=1, size=80)
    return {
        "root": root,
        "manifest": manifest,
        "clip": build_clip(root / "clip"),
        "blip": build_blip(root / "blip"),
    }


def _settings(world, engine: str, **changes) -> PrelabelParams:
    base = {
        "clip": ClipParams(model=str(world["clip"]), batch_size=4),
        "captions": CaptionParams(model=str(world["blip"]), policy="all", max_new_tokens=3, num_beams=1, batch_size=3),
        "device": "cpu",
        "engine": engine,
        "ray": RayParams(actors=1, cpus_per_actor=1, cpus_per_decode_task=0.5),
        "decode_workers": 2,
        "anomaly": AnomalyParams(enabled=False),  # on in its own test below (same thread count needed)
    }
    return PrelabelParams(**{**base, **changes})


def _embeddings(result) -> np.ndarray:
    return np.stack(result.embeddings["embedding"].to_list())


def test_ray_engine_gives_the_local_outputs_bit_for_bit(world, params, tmp_path, local_ray):
    local = prelabel(world["manifest"], _settings(world, "local"), params.ontology, cache_dir=tmp_path / "a")
    remote = prelabel(world["manifest"], _settings(world, "ray"), params.ontology, cache_dir=tmp_path / "b")
    n = len(world["manifest"])
    assert n > 8  # several batches of 4 (embeddings) and 3 (captions), the last ones short
    assert remote.cache_stats["embeddings_computed"] == n and remote.cache_stats["captions_computed"] == n
    assert np.array_equal(_embeddings(local), _embeddings(remote))
    assert local.predictions["caption"].notna().all()
    pd.testing.assert_frame_equal(local.predictions, remote.predictions, check_exact=True)
    assert local.report == remote.report


def test_ray_after_local_recomputes_nothing_and_local_after_ray_neither(world, params, tmp_path, local_ray):
    manifest = world["manifest"]
    first = prelabel(manifest, _settings(world, "local"), params.ontology, cache_dir=tmp_path / "cache")
    again = prelabel(manifest, _settings(world, "ray"), params.ontology, cache_dir=tmp_path / "cache")
    assert again.cache_stats["embeddings_computed"] == 0 and again.cache_stats["captions_computed"] == 0
    assert again.cache_stats["embeddings_cached"] == len(manifest)
    pd.testing.assert_frame_equal(first.predictions, again.predictions, check_exact=True)

    half = manifest.iloc[: len(manifest) // 2]
    prelabel(half, _settings(world, "ray"), params.ontology, cache_dir=tmp_path / "ray-first")
    rest = prelabel(manifest, _settings(world, "local"), params.ontology, cache_dir=tmp_path / "ray-first")
    assert rest.cache_stats["embeddings_cached"] == len(half)
    assert rest.cache_stats["embeddings_computed"] == len(manifest) - len(half)
    # Not bit-identical here, with either engine: the images after the first half form other batches than in a
    # full run, and a float32 forward's last bits depend on which rows share a batch.
    pd.testing.assert_frame_equal(first.predictions, rest.predictions, check_exact=False, rtol=1e-5)


def test_decoding_runs_in_its_own_cpu_tasks_before_the_model_actors(world, local_ray):
    scorer = ClipScorer(resolve_checkpoint(str(world["clip"]), None, section="clip", allow_download=False), CPU)
    manifest = world["manifest"]
    refs = [ImageRef(p, s, 1, i) for i, (p, s) in enumerate(zip(manifest["path"], manifest["sha256"], strict=True))]
    work = Work(scorer.recipe("cpu"), "encode_images", scorer.spec, PrelabelParams().preprocess, 4)
    settings = RayParams(cpus_per_actor=1, cpus_per_decode_task=1)  # same resources: Ray would fuse a plain map
    stats = _dataset(ray, work, [refs[:4], refs[4:8]], settings).materialize().stats()
    assert "FlatMap(_Decode)" in stats and "MapBatches(_ModelActor)" in stats
    assert "FlatMap(_Decode)->MapBatches" not in stats

    remote = {tuple(ref.row for ref in batch): outputs for batch, outputs in ray_batches(work, refs, settings)}
    local = {
        tuple(ref.row for ref in batch): outputs
        for batch, outputs in local_batches(scorer, work, refs, decode_workers=2)
    }
    assert sorted(remote) == sorted(local) and len(local) == -(-len(refs) // 4)
    for rows, outputs in local.items():
        assert np.array_equal(remote[rows], outputs)


def _local_at_one_thread_and_ray(world, params, tmp_path, settings):
    """The same prelabel run locally at one thread (the actor's CPU count: convolutions pick their kernels by
    thread count) into cache ``a`` and on Ray into cache ``b``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = prelabel(
            world["manifest"], _settings(world, "local", **settings), params.ontology, cache_dir=tmp_path / "a"
        )
    finally:
        torch.set_num_threads(threads)
    remote = prelabel(world["manifest"], _settings(world, "ray", **settings), params.ontology, cache_dir=tmp_path / "b")
    return local, remote


def test_offline_backbone_on_ray_matches_local_at_the_same_thread_count(world, params, tmp_path, local_ray):
    """Convolutions pick their kernels by thread count: the actor has one CPU, so the local run gets one thread."""

    settings = {"clip": ClipParams(model=str(tmp_path / "no-such-clip"), batch_size=4)}
    local, remote = _local_at_one_thread_and_ray(world, params, tmp_path, settings)
    assert remote.report["embedding_model"].startswith("efficientnet-lite0@")
    assert remote.cache_stats["embeddings_computed"] == len(world["manifest"])
    assert np.array_equal(_embeddings(local), _embeddings(remote))


def test_anomaly_rows_and_maps_on_ray_match_local_and_share_the_cache(world, params, tmp_path, local_ray):
    """Patch features on Ray actors: the same rows, maps and report as a local run at one thread (see above), and
    the cache either engine filled serves the other."""

    settings = {
        "clip": ClipParams(model=str(tmp_path / "no-such-clip"), batch_size=4),
        "anomaly": AnomalyParams(map_max_side=64),
    }
    local, remote = _local_at_one_thread_and_ray(world, params, tmp_path, settings)
    n = len(world["manifest"])
    assert remote.cache_stats["patches_computed"] == n and set(remote.predictions["source"]) == {"anomaly"}
    pd.testing.assert_frame_equal(local.predictions, remote.predictions, check_exact=True)
    assert local.report == remote.report and local.maps == remote.maps and len(remote.maps) == n
    again = prelabel(world["manifest"], _settings(world, "ray", **settings), params.ontology, cache_dir=tmp_path / "a")
    assert again.cache_stats["patches_computed"] == 0 and again.cache_stats["patches_cached"] == n
    pd.testing.assert_frame_equal(local.predictions, again.predictions, check_exact=True)


def test_a_changed_image_fails_the_ray_run_with_the_file_named(world, params, tmp_path, local_ray):
    manifest = world["manifest"].copy()
    victim = tmp_path / "changed.png"
    shutil.copyfile(manifest["path"].iloc[5], victim)
    victim.write_bytes(victim.read_bytes() + b"tail")
    manifest.loc[manifest.index[5], "path"] = str(victim)
    with pytest.raises(ManifestError, match=r"changed\.png \(manifest row 5\): the file changed since ingest"):
        prelabel(manifest, _settings(world, "ray"), params.ontology, cache_dir=tmp_path / "cache")


def test_actors_that_leave_no_cpu_for_decoding_are_refused(world, params, tmp_path, local_ray):
    settings = _settings(world, "ray", ray=RayParams(actors=2, cpus_per_actor=1, cpus_per_decode_task=0.5))
    with pytest.raises(
        ModelUnavailableError, match=r"asks for 2\.5 CPUs .* local Ray has 2 CPUs and 0 GPUs; lower prelabel\.ray"
    ):
        prelabel(world["manifest"], settings, params.ontology, cache_dir=tmp_path / "cache")


def test_an_unreachable_cluster_is_a_clear_error(world, params, tmp_path):
    if ray.is_initialized():
        ray.shutdown()
    settings = _settings(world, "ray", ray=RayParams(address="127.0.0.1:9"))
    with pytest.raises(
        ModelUnavailableError, match=r"cannot reach the Ray cluster at 127\.0\.0\.1:9.*prelabel\.ray\.address"
    ):
        prelabel(world["manifest"], settings, params.ontology, cache_dir=tmp_path / "cache")
