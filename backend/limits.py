"""Backpressure: at most `max_queue` requests per model (running or waiting for it) are let
in; the next one is answered 503 with Retry-After at once, before its body is read.

A request counts against the model in its path (/v1/models/{id}/...: inference, channel
summaries, history); /v1/samples/... share one more queue. Health, readiness, the model
list and the docs are never queued: they stay fast however busy the models are (they are
`async` and never wait for a thread; the models run in the thread pool, one forward at a
time per model under LoadedModel.lock).
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["InferenceQueue", "queue_key"]


def queue_key(path: str) -> str | None:
    """The queue a path waits in: a model id, "samples", or None (never queued)."""
    parts = path.strip("/").split("/")
    if len(parts) >= 4 and parts[0] == "v1" and parts[1] == "models":
        return "model:" + parts[2]
    if len(parts) >= 3 and parts[0] == "v1" and parts[1] == "samples":
        return "samples"
    return None


class InferenceQueue:
    def __init__(self, app: ASGIApp, max_queue: int, retry_after: int = 1):
        self.app, self.max_queue, self.retry_after = app, max_queue, retry_after
        self.active: dict[str, int] = {}  # touched only on the event loop: no lock needed
        self.rejected = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = queue_key(scope.get("path", "")) if scope["type"] == "http" else None
        if key is None:
            return await self.app(scope, receive, send)
        if self.active.get(key, 0) >= self.max_queue:
            self.rejected += 1
            what = key.removeprefix("model:")
            response = JSONResponse(
                {"detail": f"busy: {self.max_queue} requests for {what!r} are already queued "
                           f"(SPARLING_MAX_QUEUE_PER_MODEL); retry in {self.retry_after} s"},
                status_code=503, headers={"Retry-After": str(self.retry_after)})
            return await response(scope, receive, send)
        self.active[key] = self.active.get(key, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active[key] -= 1
            if not self.active[key]:
                del self.active[key]
