"""The HTTP surface of `mdl serve` (FastAPI): routes, request parsing and one-line errors.

    POST /v1/predict   JSON {"items": [{"domain": D, "image": BASE64}, ...], "top_k": 5}
                       (or one item at the top level), or multipart/form-data with one or more ``image``
                       files and one ``domain`` field (for all of them) or one per file, optional ``top_k``
                       -> {"predictions": [{"image", "domain", "version", "top": [{class, index, probability}]}]}
    GET  /v1/domains   the registry's current versions as `mdl list --json` gives them, plus
                       ``served_version`` and ``refused`` (why a version is not served)
    GET  /healthz      liveness and what is served
    GET  /metrics      Prometheus text format

A request is checked whole before any of its items enter a batch: an unknown domain (404), a domain
whose version was refused (503), malformed JSON or fields, bad base64, an undecodable image (400), a
body over the upload limit (413) or an unsupported content type (415) answer with ``{"error": "one
line"}`` and never reach the batcher, so they cannot disturb other requests' items. A domain removed
while its request waited for a batch answers 410 (gone).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from mdl.core.data.errors import DataError

MAX_ITEMS = 256            # items in one request
MAX_PIXELS = 64_000_000    # decoded pixels of one image (a small file can decode to a huge image)
MAX_TOP_K = 1000


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split())


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(400, f"invalid Content-Length {declared!r}")
        if int(declared) > limit:
            raise BadRequest(413, f"request body of {int(declared)} bytes is over the {limit}-byte limit (--max-upload-mb)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"request body is over the {limit}-byte limit (--max-upload-mb)")
        chunks.append(chunk)
    return b"".join(chunks)


def _top_k(value) -> int:
    if value is None:
        return 5
    try:
        k = int(value) if not isinstance(value, bool) and str(value).strip().lstrip("-").isdigit() else None
    except (TypeError, ValueError):
        k = None
    if k is None or not 1 <= k <= MAX_TOP_K:
        raise BadRequest(400, f"top_k must be an integer from 1 to {MAX_TOP_K}, got {value!r}")
    return k


def _b64(value: str, label: str) -> bytes:
    if value.startswith("data:") and "," in value:  # a data URL: data:image/png;base64,....
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(400, f"{label}: image is not valid base64") from None


def parse_json(body: bytes) -> tuple[list[tuple[str, str, bytes]], int]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, f"malformed JSON: {exc}") from None
    if isinstance(doc, dict) and "items" in doc:
        items = doc["items"]
    elif isinstance(doc, dict) and "domain" in doc:
        items = [doc]
    else:
        raise BadRequest(400, 'expected {"items": [{"domain": ..., "image": BASE64}, ...]}')
    if not isinstance(items, list) or not items:
        raise BadRequest(400, '"items" must be a non-empty list')
    if len(items) > MAX_ITEMS:
        raise BadRequest(413, f"{len(items)} items in one request; at most {MAX_ITEMS}")
    parsed = []
    for i, it in enumerate(items):
        label = f"item {i}"
        if not isinstance(it, dict) or not isinstance(it.get("domain"), str) or not isinstance(it.get("image"), str):
            raise BadRequest(400, f'{label}: expected {{"domain": string, "image": base64 string}}')
        parsed.append((label, it["domain"], _b64(it["image"], label)))
    return parsed, _top_k(doc.get("top_k"))


async def parse_multipart(request: Request, body: bytes) -> tuple[list[tuple[str, str, bytes]], int]:
    async def replay():  # the body was already read (under the size limit): hand it to the form parser
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=MAX_ITEMS, max_fields=MAX_ITEMS + 8)
    except Exception as exc:  # noqa: BLE001 - the multipart parser's complaints are the client's problem
        raise BadRequest(400, f"malformed multipart body: {getattr(exc, 'detail', None) or exc}") from None
    files = [f for f in form.getlist("image") if hasattr(f, "read")]
    domains = [d for d in form.getlist("domain") if isinstance(d, str)]
    if not files:
        raise BadRequest(400, "multipart request has no 'image' file")
    if len(domains) == 1:
        domains = domains * len(files)
    if len(domains) != len(files):
        raise BadRequest(400, f"give one 'domain' field for all images or one per image "
                              f"(got {len(domains)} for {len(files)} images)")
    parsed = []
    for i, (f, d) in enumerate(zip(files, domains)):
        parsed.append((f.filename or f"item {i}", d, await f.read()))
    return parsed, _top_k(form.get("top_k"))


def _decode(parsed, snap) -> list:
    """Check every item's domain, decode and preprocess its image (in a worker thread): Items, or the
    first problem as a BadRequest. Nothing is enqueued until the whole request is good."""
    from mdl.core.data.dataset import eval_batch
    from mdl.core.data.transforms import decode_rgb_bytes
    from mdl.serve.batcher import Item

    for label, domain, _ in parsed:
        if domain not in snap.domains:
            refused = [f"{k}: {why}" for k, why in snap.refused.items() if k.rsplit(" v", 1)[0] == domain]
            if refused:
                raise BadRequest(503, f"{label}: domain {domain!r} is not served ({refused[0]})")
            served = ", ".join(sorted(snap.domains)) or "(none)"
            raise BadRequest(404, f"{label}: unknown domain {domain!r}; served domains: {served}")
    items = []
    for label, domain, data in parsed:
        try:
            img, _ = decode_rgb_bytes(data, label)
        except DataError as exc:
            raise BadRequest(400, str(exc)) from None
        if img.shape[-1] * img.shape[-2] > MAX_PIXELS:
            raise BadRequest(413, f"{label}: image of {img.shape[-1]}x{img.shape[-2]} pixels is over the "
                                  f"{MAX_PIXELS:,}-pixel limit")
        prep = snap.domains[domain].preprocessing
        items.append(Item(domain=domain, raw=img, x=eval_batch([img], *prep)[0], prep=prep, top_k=0))
    return items


def create_app(pool, batcher, metrics, *, max_upload_bytes: int = 8 << 20) -> FastAPI:
    from mdl.serve.batcher import DomainGone

    @asynccontextmanager
    async def lifespan(_app):
        batcher.start()
        pool.start_polling()
        try:
            yield
        finally:
            pool.stop()
            batcher.stop()

    app = FastAPI(title="mdl serve", summary="Every registered domain from one multi-domain network.",
                  lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):  # 404/405 for unknown routes
        metrics.observe_request(request.url.path if request.url.path in KNOWN else "other", exc.status_code)
        return _error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):  # a bug, not the client's fault: still one line
        metrics.observe_request(request.url.path if request.url.path in KNOWN else "other", 500)
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.post("/v1/predict")
    async def predict(request: Request):
        t0 = time.perf_counter()
        try:
            body = await _read_body(request, max_upload_bytes)
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype == "application/json":
                parsed, top_k = parse_json(body)
            elif ctype == "multipart/form-data":
                parsed, top_k = await parse_multipart(request, body)
            else:
                raise BadRequest(415, f"unsupported content type {ctype or '(none)'!r}: send application/json "
                                      "or multipart/form-data")
            items = await run_in_threadpool(_decode, parsed, pool.snapshot)
            for it in items:
                it.top_k = top_k
            results = await asyncio.gather(*(asyncio.wrap_future(f) for f in batcher.submit(items)),
                                           return_exceptions=True)
            gone = [r for r in results if isinstance(r, BaseException)]
            if gone:
                status = gone[0].status if isinstance(gone[0], DomainGone) else 500
                raise BadRequest(status, str(gone[0]) or type(gone[0]).__name__)
        except BadRequest as exc:
            metrics.observe_request("/v1/predict", exc.status)
            return _error(exc.status, exc.message)
        predictions = [{"image": label, "domain": version.name, "version": version.version, "top": top}
                       for (label, _, _), (version, top) in zip(parsed, results)]
        metrics.observe_request("/v1/predict", 200, time.perf_counter() - t0)
        return {"predictions": predictions}

    @app.get("/v1/domains")
    async def domains():
        metrics.observe_request("/v1/domains", 200)
        return pool.snapshot.rows

    @app.get("/healthz")
    async def healthz():
        snap = pool.snapshot
        ok = batcher.alive
        metrics.observe_request("/healthz", 200 if ok else 503)
        body = {"status": ("ok" if not snap.refused and not pool.last_error else "degraded") if ok else "down",
                "generation": snap.generation, "domains": sorted(snap.domains),
                "refused": snap.refused, "poll_error": pool.last_error}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus():
        metrics.observe_request("/metrics", 200)
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    return app


KNOWN = {"/v1/predict", "/v1/domains", "/healthz", "/metrics"}
