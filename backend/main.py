"""The FastAPI app: `uvicorn backend.main:app` (settings from SPARLING_* variables) or
`create_app(Settings(...))` in tests. Checkpoints are loaded in the lifespan, never at import.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .deps import require_api_key
from .errors import install_handlers
from .limits import InferenceQueue
from .routers import activations, analysis, channels, health, models, samples
from .settings import Settings
from .store import ModelStore

log = logging.getLogger(__name__)


class BodyLimit:
    """413 for request bodies over `max_bytes`: by Content-Length when given, else while
    reading. The body is buffered (it is at most `max_bytes`) and replayed to the app."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._too_large(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await self._too_large(scope, receive, send)
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"the request body is larger than {self.max_bytes} bytes "
                       "(SPARLING_MAX_UPLOAD_BYTES)"}, status_code=413)
        await response(scope, receive, send)


class InstanceHeader:
    """`X-Sparling-Instance: ID` on every response when SPARLING_INSTANCE_ID is set, so that
    a launcher (scripts/demo.sh) can tell its own server from another one on the port."""

    def __init__(self, app: ASGIApp, instance_id: str):
        self.app, self.header = app, (b"x-sparling-instance", instance_id.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, tagged if scope["type"] == "http" else send)


def _add_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from the swagger-ui-bundle package's files (served under
    /docs-assets), not from a CDN. Without that package /docs says so and links the
    schema."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        swagger_ui_path = None
    if swagger_ui_path is not None:
        app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        if swagger_ui_path is None:
            return HTMLResponse(
                "<!doctype html><title>Sparling Motif Explorer API</title><p>The interactive "
                "docs need the <code>swagger-ui-bundle</code> package (pip install "
                "'.[serve]'); it is not installed on this server. The API's schema is at "
                "<a href='/openapi.json'>/openapi.json</a>.</p>")
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} - docs",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        store = await run_in_threadpool(ModelStore.load, settings.checkpoints)
        for loaded in store.models.values():
            loaded.max_response_values = settings.max_response_values
        log.info("loaded models %s from %s; errors: %s", sorted(store.models),
                 settings.checkpoints, store.errors)
        app.state.store = store
        if settings.precompute_channels:
            store.precompute_summaries(settings.channel_summary_n,
                                       store.default_model(settings.default_model))
        try:
            yield
        finally:
            await run_in_threadpool(store.stop)

    app = FastAPI(
        docs_url=None,  # served below from local assets: /docs must work without internet
        redoc_url=None,
        title="Sparling Motif Explorer API",
        version="1.0.0",
        description="Inspect Sparling models: sparse motif activations, per-image analysis "
                    "against ground truth, channel summaries and interventions.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = None

    _add_docs(app)
    v1 = APIRouter(prefix="/v1")
    v1.include_router(health.router)
    protected = APIRouter(dependencies=[Depends(require_api_key)])
    for module in (models, activations, channels, analysis, samples):
        protected.include_router(module.router)
    v1.include_router(protected)
    app.include_router(v1)

    install_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(InferenceQueue, max_queue=settings.max_queue_per_model)  # outermost
    if settings.instance_id:
        app.add_middleware(InstanceHeader, instance_id=settings.instance_id)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "X-API-Key"])
    return app


app = create_app()
