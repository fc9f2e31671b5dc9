"""The HTTP service: Label Studio's ML backend contract (``/health``, ``/setup``, ``/predict``, ``/webhook``) and
``/score``.

FastAPI rather than the official ``label-studio-ml`` package: its PyPI release (1.0.9) pins Flask 1.1.2,
Werkzeug 2.0.2 and Jinja2 3.0.3, which would downgrade the Jinja2 that fiftyone uses, and it has no request
batching. The contract is the one Label Studio's ``ml/api_connector.py`` speaks: ``GET /health``; ``POST /setup``
with the project's label config, hostname and access token, answered with ``model_version``; ``POST /predict``
with serialized tasks, answered with ``{"results": [one prediction per task]}``.

Errors: a bad request gets a 4xx JSON ``{"detail": message}`` that names the problem and the fix; anything
unexpected gets a 500 with a generic message (the traceback goes to the server log only). A ``/predict`` where some
tasks fail answers 200 with an ``error`` in place of those tasks' predictions (Label Studio stores the others); one
where every task failed answers 4xx (the tasks' shared status, else 422) with the per-task errors in ``results``.

Security: every route but ``GET /health`` needs the service's HTTP Basic secret (:mod:`curation.serve.auth`),
the ``Host`` header must name this server (:class:`curation.localhttp.HostGuard`, against DNS rebinding), and task
images are fetched only from the Label Studio server in the project's settings (``LABEL_STUDIO_URL`` or the local
server), whatever ``/setup`` says: ``/setup`` only supplies the project's access token.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from curation.localhttp import HostGuard
from curation.prelabel.errors import ModelUnavailableError
from curation.serve.auth import BackendSecret, BasicAuthGuard
from curation.serve.errors import ClientError
from schemas.ontology import Ontology
from schemas.params_prelabel import PrelabelParams
from schemas.params_serve import ServeParams

log = logging.getLogger("curation.serve")
_FETCHES = 8  # task images fetched from Label Studio at once (it serves them from one Django process)


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: str = Field(description="The image file's bytes as base64 (a data: URI prefix is allowed).")
    prompts: list[str] = Field(description="One or more texts (English or Korean) to compare with the image.")
    model: str | None = Field(None, description="A configured CLIP model name; default serve.predict_model.")


class SetupRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    project: str | None = None
    schema_: str | None = Field(None, alias="schema")
    hostname: str | None = None
    access_token: str | None = Field(None, repr=False)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    tasks: list[dict[str, Any]]
    project: str | None = None
    label_config: str | None = None


class BodyLimit:
    """ASGI middleware: answer 413 once a request body passes ``limit`` bytes (declared or streamed); keep
    unexpected errors (already answered with a 500 by the app's handler) away from the HTTP server.

    The body is read here (at most ``limit`` bytes held) before the application sees it: FastAPI would turn an
    error raised while it reads the body into a 400.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._too_large(send)
            return
        parts, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            parts.append(message.get("body", b""))
            seen += len(parts[-1])
            if seen > self.limit:
                await self._too_large(send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}
            return await receive()

        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, replay, tracking_send)
        except Exception:  # Starlette re-raises after its 500 handler answered: logged there, ends here
            if not started:
                log.exception("unexpected error while answering a request")
                await _send_json(send, 500, {"detail": "internal error; the details are in the service's log"})

    async def _too_large(self, send: Any) -> None:
        detail = f"request body is larger than {self.limit} bytes (serve.max_request_bytes); send a smaller image"
        await _send_json(send, 413, {"detail": detail})


async def _send_json(send: Any, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


StudioTarget = Callable[[], tuple[str, str]]


def create_app(
    settings: ServeParams,
    prelabel: PrelabelParams,
    ontology: Ontology,
    *,
    secret: BackendSecret,
    studio: StudioTarget,
    description_language: str = "both",
) -> Any:
    """The service as an ASGI application (models load lazily, on their first request).

    Args:
        settings: The ``serve`` section.
        prelabel: The ``prelabel`` section (prompts, preprocessing, descriptions).
        ontology: The classes.
        secret: HTTP Basic credentials every route but ``GET /health`` requires.
        studio: Returns ``(url, token)`` of the Label Studio server in the project's settings, the only host task
            images are fetched from (called per ``/predict``; raises :class:`ClientError` when there is none).
        description_language: Language of the pre-filled descriptions.
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    from curation.serve import scoring
    from curation.serve.images import decode_base64, image_key, open_rgb
    from curation.serve.registry import ClipJob, Registry
    from curation.studio.mapping import prediction_title

    registry = Registry(settings, prelabel, ontology)
    # project uid -> the project's access token from /setup; kept in memory only. /setup's hostname is not used:
    # images come only from the Label Studio in the project's settings.
    tokens: dict[str, str] = {}

    @asynccontextmanager
    async def lifespan(_app: Any):
        yield
        await registry.close()

    app = FastAPI(title="defect-curation pre-labeler", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(ClientError)
    async def _client_error(_request: Request, err: ClientError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=err.status)

    @app.exception_handler(ModelUnavailableError)
    async def _unavailable(_request: Request, err: ModelUnavailableError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        # FastAPI's default answer echoes the input (a whole base64 image): give field and problem only
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg', 'invalid')}"
            for e in err.errors()[:10]
        ]
        return JSONResponse({"detail": "invalid request: " + "; ".join(problems)}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error while answering a request")
        return JSONResponse(
            {"detail": f"internal error ({type(err).__name__}); the details are in the service's log"},
            status_code=500,
        )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "UP", "model_class": "curation.serve", "models": registry.health()}

    @app.post("/setup")
    async def setup(request: SetupRequest) -> dict[str, Any]:
        if request.schema_:
            _check_config(request.schema_, ontology)
        if request.project and request.access_token:
            tokens[request.project] = request.access_token
        return {"model_version": prediction_title(await run_in_threadpool(registry.predict_version))}

    @app.post("/webhook")
    async def webhook(event: dict[str, Any]) -> dict[str, Any]:
        # Label Studio registers <backend>/webhook for every project event when a backend is connected; this
        # backend does not train, so events are acknowledged and dropped
        return {"status": "ok", "action": event.get("action"), "handled": False}

    @app.post("/score")
    async def score(request: ScoreRequest) -> dict[str, Any]:
        name = request.model or settings.predict_clip
        entry = registry.entry(name, "clip")
        prompts = _check_prompts(request.prompts, settings)
        data = decode_base64(request.image)
        rgb = await run_in_threadpool(open_rgb, data, max_pixels=settings.max_image_pixels)
        scorer = await run_in_threadpool(registry.model, name, "clip")
        pixels = await run_in_threadpool(_prepare, rgb, scorer.spec, prelabel)
        answer = await registry.batcher(name).submit(ClipJob(pixels, tuple(prompts)))
        result = scoring.score_prompts(answer, prompts, settings.bands)
        note = scoring.language_note(prompts, list(entry.spec.languages))
        return {"model": name, "model_version": scorer.key, **result, "note": note}

    @app.post("/predict", response_model=None)
    async def predict(request: PredictRequest) -> dict[str, Any] | JSONResponse:
        if not request.tasks:
            raise ClientError("no tasks to predict")
        if len(request.tasks) > settings.max_predict_tasks:
            raise ClientError(
                f"{len(request.tasks)} tasks in one request, more than serve.max_predict_tasks "
                f"({settings.max_predict_tasks}); select fewer tasks",
                413,
            )
        key = image_key(request.label_config)
        if request.label_config:
            _check_config(request.label_config, ontology)
        target: list[tuple[str, str]] = []  # resolved once, on the first task that needs a fetch
        lock = asyncio.Lock()

        async def where() -> tuple[str, str]:
            async with lock:
                if not target:
                    url, token = await run_in_threadpool(studio)
                    target.append((url, tokens.get(request.project or "", token)))
            return target[0]

        name = settings.predict_clip
        scorer = await run_in_threadpool(registry.model, name, "clip")
        version = await run_in_threadpool(registry.predict_version)
        gate = asyncio.Semaphore(_FETCHES)

        async def fetch(task: dict[str, Any]) -> Any:
            async with gate:
                return await _task_image(task, key, where, settings)

        images = await asyncio.gather(*(fetch(task) for task in request.tasks), return_exceptions=True)
        good = [i for i, image in enumerate(images) if not isinstance(image, BaseException)]
        for image in images:
            if isinstance(image, BaseException) and not isinstance(image, ClientError):
                raise image
        results: list[dict[str, Any]] = [
            # no "result" key: Label Studio logs this answer and stores no prediction for the task
            {"task": request.tasks[i].get("id"), "error": str(images[i])}
            for i in range(len(images))
        ]
        if not good:
            statuses = {image.status for image in images if isinstance(image, ClientError)}
            status = statuses.pop() if len(statuses) == 1 else 422
            detail = f"every task failed ({len(images)}); the first: {results[0]['error']}"
            title = prediction_title(version)
            return JSONResponse({"detail": detail, "results": results, "model_version": title}, status_code=status)
        pixels = await asyncio.gather(*(run_in_threadpool(_prepare, images[i], scorer.spec, prelabel) for i in good))
        answers = await asyncio.gather(*(registry.batcher(name).submit(ClipJob(p, (), True)) for p in pixels))
        captions: list[str | None] = [None] * len(good)
        if settings.caption_model:
            captioner = await run_in_threadpool(registry.model, settings.caption_model, "blip")
            caption_pixels = await asyncio.gather(
                *(run_in_threadpool(_prepare, images[i], captioner.spec, prelabel) for i in good)
            )
            batcher = registry.batcher(settings.caption_model)
            captions = list(await asyncio.gather(*(batcher.submit(p) for p in caption_pixels)))
        made = scoring.predictions(
            list(answers),
            captions,
            text_classes=registry.text_classes,
            ontology=ontology,
            prelabel=prelabel,
            version=version,
            description_language=description_language,
        )
        for i, prediction in zip(good, made, strict=True):
            results[i] = prediction
        return {"results": results, "model_version": prediction_title(version)}

    names = [*settings.allowed_hosts, *([] if settings.host in ("0.0.0.0", "::", "") else [settings.host])]
    guarded = BasicAuthGuard(BodyLimit(app, settings.max_request_bytes), secret)
    return HostGuard(guarded, names=names)


def _check_prompts(prompts: list[str], settings: ServeParams) -> list[str]:
    cleaned = [" ".join(p.split()) for p in prompts]
    if not cleaned:
        raise ClientError("prompts is empty; send at least one text to compare with the image", 422)
    if len(cleaned) > settings.max_prompts:
        raise ClientError(f"{len(cleaned)} prompts, more than serve.max_prompts ({settings.max_prompts})", 413)
    for index, prompt in enumerate(cleaned):
        if not prompt:
            raise ClientError(f"prompts[{index}] is empty or only whitespace; remove it or write the text", 422)
        if len(prompt) > settings.max_prompt_chars:
            raise ClientError(
                f"prompts[{index}] has {len(prompt)} characters, more than serve.max_prompt_chars "
                f"({settings.max_prompt_chars})",
                413,
            )
    return cleaned


def _check_config(label_config: str, ontology: Ontology) -> None:
    """The project's interface must have the ``label`` Choices on the image with every ontology class."""
    import xml.etree.ElementTree as ET

    from curation.studio.config import IMAGE, LABEL

    try:
        root = ET.fromstring(label_config)
    except ET.ParseError as err:
        raise ClientError(f"the project's label_config is not valid XML ({err})") from None
    for node in root.iter("Choices"):
        if node.get("name") == LABEL and node.get("toName") == IMAGE:
            values = {choice.get("value") for choice in node.iter("Choice")}
            missing = [c for c in ontology.class_names if c not in values]
            if missing:
                raise ClientError(
                    f"the project's '{LABEL}' choices lack the ontology classes {missing}; run `curation push` "
                    "(it updates the labeling interface) before connecting the backend"
                )
            return
    raise ClientError(
        f'the project\'s labeling interface has no <Choices name="{LABEL}" toName="{IMAGE}">; connect the backend '
        "to a project made by `curation push`"
    )


def _prepare(rgb: Any, spec: Any, prelabel: PrelabelParams) -> Any:
    from curation.prelabel.images import prepare

    return prepare(rgb, spec, prelabel.preprocess)


async def _task_image(task: dict[str, Any], key: str, studio: Callable[[], Any], settings: ServeParams) -> Any:
    """A task's image as RGB: an inline data: URI, or fetched with the token from the Label Studio server that
    ``studio()`` names (the project's settings)."""
    from starlette.concurrency import run_in_threadpool

    from curation.serve.images import decode_base64, open_rgb, resolve_url

    task_id = task.get("id")
    value = (task.get("data") or {}).get(key)
    what = f"task {task_id} image"
    if not isinstance(value, str) or not value:
        raise ClientError(f"task {task_id} has no data.{key} with an image URL")
    if value.startswith("data:"):
        data = decode_base64(value, what=what)
    else:
        studio_url, token = await studio()
        url = resolve_url(value, studio_url)
        data = await _fetch(url, token, settings, what)
    return await run_in_threadpool(open_rgb, data, max_pixels=settings.max_image_pixels, what=what)


async def _fetch(url: str, token: str, settings: ServeParams, what: str) -> bytes:
    import httpx

    url = url.replace("://localhost:", "://127.0.0.1:", 1)  # Label Studio binds IPv4 loopback only
    headers = {"Authorization": f"Token {token}"} if token else {}
    try:
        http = httpx.AsyncClient(timeout=settings.fetch_timeout_s, trust_env=False, follow_redirects=False)
        async with http, http.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                raise ClientError(
                    f"{what}: Label Studio answered HTTP {response.status_code} for {url.split('?')[0]}; check "
                    "that the project has a storage serving this file"
                )
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > settings.max_request_bytes:
                    raise ClientError(f"{what} is larger than serve.max_request_bytes", 413)
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as err:
        raise ClientError(f"{what}: cannot fetch it from Label Studio ({type(err).__name__})", 502) from None
