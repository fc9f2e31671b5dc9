"""The HTTP service with tiny random CLIP/BLIP checkpoints, over real loopback HTTP: /score maths and bands, lazy
per-model loading, batching under 50 parallel requests, Label Studio's /setup and /predict contract (parity with
the prelabel stage), and clear 4xx answers for bad input."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from curation.prelabel.images import prepare
from curation.prelabel.models import ClipScorer, Runtime, resolve_checkpoint
from curation.prelabel.stage import prelabel
from curation.serve import cli as serve_cli
from curation.serve.app import create_app
from curation.serve.auth import BackendSecret
from curation.serve.cli import running
from curation.serve.errors import ClientError
from curation.serve.scoring import band_of
from curation.studio.config import label_config
from schemas.params_prelabel import CaptionParams, ClipParams, PrelabelParams
from schemas.params_serve import Band, ServeModel, ServeParams
from tests.conftest import ingested_sample
from tests.studio_fixture import shown_version
from tests.tiny_models import build_blip, build_clip

TIMEOUT = httpx.Timeout(60.0)


@pytest.fixture(scope="module")
def world(tmp_path_factory, params):
    root = tmp_path_factory.mktemp("serve")
    _, manifest = ingested_sample(root, params, n_per_class=2, seed=0, size=64)
    return {
        "root": root,
        "manifest": manifest,
        "clip_en": build_clip(root / "clip-en", seed=0),
        "clip_ko": build_clip(root / "clip-ko", seed=1),
        "blip": build_blip(root / "blip"),
    }


def _prelabel(world) -> PrelabelParams:
    return PrelabelParams(
        clip=ClipParams(model=str(world["clip_en"])),
        captions=CaptionParams(model=str(world["blip"]), policy="none", max_new_tokens=3, num_beams=1),
        device="cpu",
    )


def _serve(world, **changes) -> ServeParams:
    models = [
        ServeModel(name="clip-en", kind="clip"),  # path null: prelabel.clip.model, as the prelabel stage uses
        ServeModel(name="clip-ko", kind="clip", path=str(world["clip_ko"]), languages=["ko"]),
        ServeModel(name="blip", kind="blip"),
    ]
    return ServeParams(**{"models": models, "max_batch": 16, "max_wait_ms": 20.0, **changes})


SECRET = BackendSecret(user="label-studio", password="a-test-secret-0123456789")


def _no_studio() -> tuple[str, str]:
    raise ClientError("no Label Studio server to fetch task images from (the tests give none)", 503)


def _app(world, params, serve: ServeParams | None = None, studio=_no_studio, prelabel: PrelabelParams | None = None):
    return create_app(
        serve or _serve(world), prelabel or _prelabel(world), params.ontology, secret=SECRET, studio=studio
    )


def _client(url: str, auth: BackendSecret | None = SECRET) -> httpx.Client:
    credentials = (auth.user, auth.password) if auth else None
    return httpx.Client(base_url=url, timeout=TIMEOUT, trust_env=False, auth=credentials)


@pytest.fixture(scope="module")
def service(world, params):
    studio = ("http://127.0.0.1:1", "studio-token")  # nothing listens there: these tests send inline images
    with running(_app(world, params, studio=lambda: studio)) as url, _client(url) as http:
        yield http


def _png(seed: int, size: tuple[int, int] = (40, 40)) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _flat_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")  # compresses to a few kB: tests the pixel limit
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _reference(folder: Path, data: bytes, prompts: list[str], prelabel: PrelabelParams) -> np.ndarray:
    """Cosine similarities computed directly with the model, one image at a time (no service, no batching)."""
    scorer = ClipScorer(
        resolve_checkpoint(str(folder), None, section="clip", allow_download=False), Runtime("cpu", "float32")
    )
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    image = scorer.encode_images(prepare(rgb, scorer.spec, prelabel.preprocess)[None])[0]
    return scorer.encode_texts(prompts) @ image


# ---------------------------------------------------------------------------------------------- /score


def test_models_load_lazily_and_health_reports_them(world, params):
    with running(_app(world, params)) as url, _client(url) as http:
        before = {m["name"]: m for m in http.get("/health").json()["models"]}
        assert set(before) == {"clip-en", "clip-ko", "blip"}
        assert not any(m["loaded"] for m in before.values())
        answer = http.post("/score", json={"image": _b64(_png(0)), "prompts": ["스크래치"], "model": "clip-ko"})
        assert answer.status_code == 200, answer.text
        after = {m["name"]: m for m in http.get("/health").json()["models"]}
    assert after["clip-ko"]["loaded"] and after["clip-ko"]["device"] == "cpu"
    assert not after["clip-en"]["loaded"] and not after["blip"]["loaded"]
    assert after["clip-ko"]["batching"]["jobs"] == 1


def test_score_matches_the_model_and_reads_bands(world, service):
    data = _png(1)
    prompts = ["a scratch on steel", "a clean metal surface", "oil stain"]
    answer = service.post("/score", json={"image": _b64(data), "prompts": prompts})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = _reference(world["clip_en"], data, prompts, _prelabel(world))
    got = np.array([s["similarity"] for s in body["scores"]])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    probabilities = np.array([s["probability"] for s in body["scores"]])
    assert abs(probabilities.sum() - 1) < 1e-4 and (probabilities >= 0).all()
    assert body["best"] == prompts[int(np.argmax(expected))]
    bands = ServeParams().bands
    assert [s["band"] for s in body["scores"]] == [band_of(float(e), bands).label for e in expected]
    assert body["model"] == "clip-en" and body["model_version"].startswith(str(world["clip_en"]) + "@local-")
    assert body["best"] in body["interpretation"] and body["note"] is None
    single = service.post("/score", json={"image": _b64(data), "prompts": ["a scratch on steel"]}).json()
    assert single["scores"][0]["probability"] is None  # a softmax over one prompt says nothing


def test_band_edges():
    bands = [
        Band(min_similarity=-1, label="a"),
        Band(min_similarity=0.2, label="b"),
        Band(min_similarity=0.3, label="c"),
    ]
    assert [band_of(v, bands).label for v in (-1.0, 0.1999, 0.2, 0.2999, 0.3, 1.0)] == ["a", "a", "b", "b", "c", "c"]
    with pytest.raises(ValueError, match="strictly increasing"):
        ServeParams(bands=[Band(min_similarity=-1, label="a"), Band(min_similarity=-1, label="b")])
    with pytest.raises(ValueError, match="predict_model"):
        ServeParams(predict_model="nope")


def test_model_is_selectable_and_korean_prompts_are_noted(world, service):
    image = _b64(_png(2))
    english = service.post("/score", json={"image": image, "prompts": ["스크래치", "찍힘"], "model": "clip-en"}).json()
    korean = service.post("/score", json={"image": image, "prompts": ["스크래치", "찍힘"], "model": "clip-ko"}).json()
    assert korean["model"] == "clip-ko" and korean["note"] is None
    assert "Korean" in english["note"]
    expected = _reference(world["clip_ko"], base64.b64decode(image), ["스크래치", "찍힘"], _prelabel(world))
    np.testing.assert_allclose([s["similarity"] for s in korean["scores"]], expected, atol=1e-4)
    assert korean["scores"][0]["similarity"] != english["scores"][0]["similarity"]


def test_fifty_parallel_requests_are_batched_and_answered_correctly(world, params):
    prelabel_settings = _prelabel(world)
    app = _app(world, params, prelabel=prelabel_settings)
    images = [_png(100 + i) for i in range(50)]
    prompts = [[f"defect number {i}", "a clean surface"] for i in range(50)]
    with running(app) as url, _client(url) as http:

        def ask(i: int) -> httpx.Response:
            return http.post("/score", json={"image": _b64(images[i]), "prompts": prompts[i]})

        with ThreadPoolExecutor(max_workers=50) as pool:
            answers = list(pool.map(ask, range(50), timeout=120))
        stats = next(m for m in http.get("/health").json()["models"] if m["name"] == "clip-en")["batching"]
    assert [a.status_code for a in answers] == [200] * 50
    for i in (0, 17, 49):  # each answer belongs to its own request
        expected = _reference(world["clip_en"], images[i], prompts[i], prelabel_settings)
        np.testing.assert_allclose([s["similarity"] for s in answers[i].json()["scores"]], expected, atol=1e-4)
    assert [a.json()["scores"][0]["prompt"] for a in answers] == [p[0] for p in prompts]
    assert stats["jobs"] == 50 and stats["batches"] < 50 and stats["largest_batch"] > 1


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        ({"image": "not base64 at all!!", "prompts": ["x"]}, 400, "not valid base64"),
        ({"image": "", "prompts": ["x"]}, 400, "empty"),
        ({"image": _b64(b"plain text, not an image"), "prompts": ["x"]}, 415, "not an image"),
        ({"image": _b64(_png(3)[:60]), "prompts": ["x"]}, 415, "could not be decoded"),
        ({"image": _b64(_png(3)), "prompts": ["x"], "model": "nope"}, 404, "unknown model 'nope'"),
        ({"image": _b64(_png(3)), "prompts": ["x"], "model": "blip"}, 404, "configured clip models"),
        ({"image": _b64(_png(3)), "prompts": []}, 422, "prompts is empty"),
        ({"image": _b64(_png(3)), "prompts": ["ok", "   "]}, 422, "prompts[1] is empty"),
        ({"image": _b64(_png(3)), "prompts": ["x"] * 33}, 413, "max_prompts"),
        ({"image": _b64(_png(3)), "prompts": ["x" * 301]}, 413, "max_prompt_chars"),
        ({"image": _b64(_flat_png(7000, 6000)), "prompts": ["x"]}, 413, "max_image_pixels"),
        ({"prompts": ["x"]}, 422, "image: Field required"),
        ({"image": _b64(_png(3)), "prompts": "x", "extra": 1}, 422, "invalid request"),
    ],
)
def test_bad_input_gets_a_clear_4xx(service, payload, status, words):
    answer = service.post("/score", json=payload)
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert words in detail
    assert "Traceback" not in detail and "iVBOR" not in detail  # no stack trace, no echoed image


def test_too_large_bodies_are_refused(world, params):
    with running(_app(world, params, _serve(world, max_request_bytes=4096))) as url, _client(url) as http:
        declared = http.post("/score", json={"image": "A" * 8000, "prompts": ["x"]})

        def chunks():
            yield b'{"image": "'
            for _ in range(10):
                yield b"A" * 1000
            yield b'", "prompts": ["x"]}'

        streamed = http.post("/score", content=chunks(), headers={"content-type": "application/json"})
        ok = http.get("/health")
    assert declared.status_code == 413 and "max_request_bytes" in declared.json()["detail"]
    assert streamed.status_code == 413 and "max_request_bytes" in streamed.json()["detail"]
    assert ok.status_code == 200


def test_unexpected_errors_are_500_without_details(world, params, monkeypatch):
    from curation.serve.registry import Registry

    def broken(self, name, jobs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(Registry, "_run_clip", broken)
    with running(_app(world, params)) as url, _client(url) as http:
        answer = http.post("/score", json={"image": _b64(_png(4)), "prompts": ["x"]})
        again = http.get("/health")
    assert answer.status_code == 500
    assert "secret" not in answer.text and "Traceback" not in answer.text and "RuntimeError" in answer.text
    assert again.status_code == 200


def test_missing_model_weights_are_503_with_the_fix(world, params, tmp_path):
    serve = ServeParams(models=[ServeModel(name="gone", path=str(tmp_path / "missing" / "clip"))])
    with running(_app(world, params, serve)) as url, _client(url) as http:
        answer = http.post("/score", json={"image": _b64(_png(5)), "prompts": ["x"]})
        health = http.get("/health").json()["models"][0]
    assert answer.status_code == 503 and "not a folder" in answer.json()["detail"]
    assert health["loaded"] is False and "not a folder" in health["error"]


# ---------------------------------------------------------------------------------------------- Label Studio contract


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + _b64(Path(path).read_bytes())


def test_setup_and_predict_match_the_prelabel_stage(world, params, service, tmp_path):
    manifest = world["manifest"]
    stage = prelabel(manifest, _prelabel(world), params.ontology, cache_dir=tmp_path / "cache").predictions
    config = label_config(params.ontology)
    setup = service.post("/setup", json={"project": "1.0", "schema": config, "hostname": "http://127.0.0.1:1"})
    assert setup.status_code == 200
    version = setup.json()["model_version"]
    assert version == shown_version(stage["model_version"].iloc[0])  # the title Label Studio shows, as push sends

    tasks = [{"id": i, "data": {"image": _data_uri(p)}} for i, p in enumerate(manifest["path"])]
    tasks.append({"id": 99, "data": {"image": "http://example.com/elsewhere.png"}})
    answer = service.post("/predict", json={"tasks": tasks, "project": "1.0", "label_config": config})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == len(tasks)
    for result, row in zip(results, stage.itertuples(), strict=False):
        assert result["model_version"] == version
        choice = next(r for r in result["result"] if r["from_name"] == "label")
        assert choice["value"]["choices"] == [row.label]
        assert abs(result["score"] - row.score) < 1e-4
        assert any(r["from_name"] == "description" and r["value"]["text"][0] for r in result["result"])
    assert "result" not in results[-1] and "not on the Label Studio server" in results[-1]["error"]


def test_predict_with_captions(world, params):
    path = world["manifest"]["path"].iloc[0]
    with running(_app(world, params, _serve(world, caption_model="blip"))) as url, _client(url) as http:
        answer = http.post("/predict", json={"tasks": [{"id": 1, "data": {"image": _data_uri(path)}}]})
        health = {m["name"]: m["loaded"] for m in http.get("/health").json()["models"]}
    assert answer.status_code == 200, answer.text
    text = next(r for r in answer.json()["results"][0]["result"] if r["from_name"] == "description")
    assert "Caption: none" not in text["value"]["text"][0]  # the BLIP caption went into the description
    assert health == {"clip-en": True, "clip-ko": False, "blip": True}


def test_setup_and_predict_refuse_foreign_projects(service, params):
    other = (
        '<View><Image name="image" value="$image"/>'
        '<Choices name="label" toName="image"><Choice value="x"/></Choices></View>'
    )
    assert "lack the ontology classes" in service.post("/setup", json={"schema": other}).json()["detail"]
    no_image = "<View><Text name='t' value='$text'/></View>"
    answer = service.post("/predict", json={"tasks": [{"id": 1, "data": {}}], "label_config": no_image})
    assert answer.status_code == 400 and "no <Image" in answer.json()["detail"]
    assert service.post("/predict", json={"tasks": []}).status_code == 400
    webhook = service.post("/webhook", json={"action": "TASKS_CREATED", "tasks": []})
    assert webhook.json() == {"status": "ok", "action": "TASKS_CREATED", "handled": False}


def test_serve_command_binds_loopback_by_default(world, params, monkeypatch, tmp_path):
    import uvicorn
    import yaml

    calls = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.update(kw))
    params_file = tmp_path / "params.yaml"
    data = params.model_dump(mode="json")
    data["prelabel"]["clip"]["model"] = str(world["clip_en"])
    data["labelstudio"]["home"] = str(tmp_path / ".studio")
    params_file.write_text(yaml.safe_dump(data, allow_unicode=True))
    app = typer.Typer()
    app.command("serve")(serve_cli.serve_command)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["serve", "--params", str(params_file)])
    assert result.exit_code == 0, result.output
    assert calls == {"host": "127.0.0.1", "port": 9090, "log_level": "info"}
    secret_file = tmp_path / ".studio" / "backend.json"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert str(secret_file) in result.output.replace("\n", "")
    secret = json.loads(secret_file.read_text())
    assert (
        secret["user"] == "label-studio" and len(secret["password"]) == 40 and secret["password"] not in result.output
    )
    result = CliRunner().invoke(app, ["serve", "--params", str(params_file), "--host", "0.0.0.0", "--port", "9100"])
    assert calls["host"] == "0.0.0.0" and calls["port"] == 9100
    assert "plain HTTP" in result.output
    assert json.loads(secret_file.read_text()) == secret  # made once, kept


def test_connect_names_the_ssrf_guard_not_the_token():
    from types import SimpleNamespace

    from label_studio_sdk.core.api_error import ApiError

    from curation.serve.cli import connect_backend
    from curation.studio.client import Connection
    from curation.studio.errors import StudioRequestError

    def refuse(**_kwargs):
        raise ApiError(
            status_code=403, body={"detail": "URL resolves to a reserved network address (block: 127.0.0.0/8)"}
        )

    client = SimpleNamespace(ml=SimpleNamespace(list=lambda project: [], create=refuse))
    conn = Connection("http://127.0.0.1:8080", "secret-token", "local")
    with pytest.raises(StudioRequestError, match="USE_DEFAULT_BANNED_SUBNETS") as caught:
        connect_backend(client, conn, 1, "http://127.0.0.1:9090", secret=SECRET)
    assert "API token" not in str(caught.value) and "secret-token" not in str(caught.value)


# ---------------------------------------------------------------------------------------------- security


class _Recorder(BaseHTTPRequestHandler):
    """A loopback HTTP server that records each request; serves ``files`` (path -> bytes), 404 otherwise."""

    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        body = self.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write(body or b"not here")

    def log_message(self, *_args) -> None:
        return None


@contextmanager
def _http_server(files: dict[str, bytes]) -> Iterator[ThreadingHTTPServer]:
    handler = type("Handler", (_Recorder,), {"files": files})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_every_route_but_health_needs_the_secret(service):
    url = str(service.base_url)
    wrong = BackendSecret(user="label-studio", password="a-test-secret-0123456788")
    requests = [
        ("POST", "/setup", {"project": "1.0", "hostname": "http://127.0.0.1:1"}),
        ("POST", "/predict", {"tasks": [{"id": 1, "data": {"image": "/data/local-files/?d=x.png"}}]}),
        ("POST", "/score", {"image": _b64(_png(6)), "prompts": ["x"]}),
        ("POST", "/webhook", {"action": "TASKS_CREATED"}),
        ("GET", "/docs", None),
        ("GET", "/nothing-here", None),
    ]
    for auth in (None, wrong):
        with _client(url, auth) as http:
            for method, path, body in requests:
                answer = http.request(method, path, json=body)
                assert answer.status_code == 401, (method, path, answer.text)
                assert answer.headers["www-authenticate"].startswith("Basic ")
                assert "backend.json" in answer.json()["detail"]
            assert http.get("/health").status_code == 200
    garbled = httpx.post(f"{url}/setup", json={}, headers={"Authorization": "Basic !!!"}, trust_env=False)
    assert garbled.status_code == 401
    assert service.post("/webhook", json={"action": "TASKS_CREATED"}).status_code == 200  # the right secret


def test_unexpected_host_headers_are_refused(service):
    port = service.base_url.port
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", f"127.0.0.1:{port + 1}"):
        answer = service.get("/health", headers={"Host": host})
        assert answer.status_code == 400, host
        assert "Host" in answer.json()["detail"]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        assert service.get("/health", headers={"Host": host}).status_code == 200, host
    # a rebinding page cannot use the service even with the secret (it would not have it), nor without
    assert service.post("/score", headers={"Host": f"evil.example:{port}"}, json={}).status_code == 400


def test_setup_cannot_point_image_fetches_at_another_host(world, params):
    image = _png(7)
    studio_files = {"/data/local-files/?d=line%201/a.png": image}
    with _http_server(studio_files) as studio, _http_server({"/internal/admin?x=1": b"admin page"}) as internal:
        target = (_url(studio), "settings-token")
        with running(_app(world, params, studio=lambda: target)) as url, _client(url) as http:
            setup = http.post(
                "/setup", json={"project": "7.1", "hostname": _url(internal), "access_token": "project-token"}
            )
            assert setup.status_code == 200
            tasks = [
                {"id": 1, "data": {"image": "/data/local-files/?d=line%201/a.png"}},
                {"id": 2, "data": {"image": "/internal/admin?x=1"}},
                {"id": 3, "data": {"image": f"{_url(internal)}/internal/admin?x=1"}},
                {"id": 4, "data": {"image": f"//127.0.0.1:{internal.server_address[1]}/internal/admin?x=1"}},
                {"id": 5, "data": {"image": "file:///etc/passwd"}},
            ]
            answer = http.post("/predict", json={"tasks": tasks, "project": "7.1"})
            other_project = http.post("/predict", json={"tasks": tasks[:1], "project": "9.9"})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert "result" in results[0] and results[0]["model_version"]
    assert "HTTP 404" in results[1]["error"]  # asked of Label Studio, which has no such file
    for result in results[2:]:
        assert "not on the Label Studio server" in result["error"], result
    assert internal.seen == []  # /setup's hostname was never contacted
    # the project's token from /setup; the settings' token for a project that never called /setup
    assert sorted(studio.seen[:2]) == [
        ("/data/local-files/?d=line%201/a.png", "Token project-token"),
        ("/internal/admin?x=1", "Token project-token"),
    ]
    assert studio.seen[2:] == [("/data/local-files/?d=line%201/a.png", "Token settings-token")]
    assert other_project.status_code == 200


def test_predict_where_every_task_failed_is_4xx_with_each_error(service):
    tasks = [
        {"id": 1, "data": {"image": "http://example.com/a.png"}},
        {"id": 2, "data": {"image": "http://example.com/b.png"}},
    ]
    answer = service.post("/predict", json={"tasks": tasks})
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert "every task failed (2)" in body["detail"]
    assert [r["task"] for r in body["results"]] == [1, 2]
    assert all("not on the Label Studio server" in r["error"] and "result" not in r for r in body["results"])
    mixed = [
        {"id": 1, "data": {"image": "http://example.com/a.png"}},
        {"id": 2, "data": {"image": "data:image/png;base64,bm90IGFuIGltYWdl"}},
    ]
    answer = service.post("/predict", json={"tasks": mixed})
    assert answer.status_code == 422 and [r["task"] for r in answer.json()["results"]] == [1, 2]


def test_connect_backend_gives_label_studio_the_secret():
    from types import SimpleNamespace

    from curation.serve.cli import connect_backend
    from curation.studio.client import Connection

    calls = []

    def record(name):
        def call(**kwargs):
            calls.append((name, kwargs))
            return SimpleNamespace(id=5, title="t", state="CO", model_version="v")

        return call

    registered = []
    client = SimpleNamespace(
        ml=SimpleNamespace(list=lambda project: registered, create=record("create"), update=record("update"))
    )
    conn = Connection("http://127.0.0.1:8080", "studio-token", "local")
    first = connect_backend(client, conn, 1, "http://127.0.0.1:9090/", secret=SECRET)
    registered.append(SimpleNamespace(id=5, url="http://127.0.0.1:9090"))
    again = connect_backend(client, conn, 1, "http://127.0.0.1:9090", secret=SECRET)
    auth = {"auth_method": "BASIC_AUTH", "basic_auth_user": SECRET.user, "basic_auth_pass": SECRET.password}
    assert calls[0] == (
        "create",
        {
            "project": 1,
            "url": "http://127.0.0.1:9090",
            "title": serve_cli.BACKEND_TITLE,
            "is_interactive": False,
            **auth,
        },
    )
    # an existing registration gets the secret too
    assert calls[1] == ("update", {"id": 5, "project": 1, "url": "http://127.0.0.1:9090", **auth})
    assert first["created"] and not again["created"]


def test_the_secret_is_made_once_private_and_explained_when_missing(tmp_path):
    from curation.serve.auth import authorized, ensure_secret, load_secret
    from curation.serve.errors import ServeError
    from curation.studio.errors import StudioError
    from curation.studio.server import StudioHome

    home = StudioHome(tmp_path / ".studio")
    with pytest.raises(ServeError, match=r"backend.json not found: start `curation serve` once"):
        load_secret(home)
    made = ensure_secret(home)
    path = home.root / "backend.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert ensure_secret(home) == made == load_secret(home)
    assert re.fullmatch(r"[0-9a-f]{40}", made.password) and made.password not in repr(made)
    assert authorized(made.header()["Authorization"], made)
    assert not authorized(BackendSecret(made.user, made.password[:-1] + "x").header()["Authorization"], made)
    assert not authorized(f"Bearer {made.password}", made) and not authorized(None, made)
    path.chmod(0o644)
    with pytest.raises(StudioError, match="chmod 600"):
        load_secret(home)
