"""Exception handlers: validation errors as safe, bounded 422s; overload as 503 with
Retry-After; responses over the value cap as 413.

FastAPI's own 422 handler echoes each error's `input` back through `jsonable_encoder`: a
NaN or Infinity in the body (Python's json module accepts them) then fails to serialise
(500), and a large input is echoed once per failing union branch. Here an `input` is kept
only when it is a short scalar; containers are summarised, long strings cut, non-finite
numbers written as strings, and at most MAX_ERRORS errors are listed.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse

__all__ = ["MAX_ERRORS", "Overloaded", "ResponseTooLarge", "install_handlers", "safe_errors"]

MAX_ERRORS = 20
MAX_TEXT = 200  # characters of a string input or message kept


class Overloaded(Exception):  # noqa: N818 (an HTTP outcome, not a programming error)
    """The model's request queue is full: 503 with Retry-After."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class ResponseTooLarge(Exception):  # noqa: N818
    """The response would carry more values than SPARLING_MAX_RESPONSE_VALUES: 413."""


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"... ({len(text)} characters)"


def _safe_value(value: Any) -> Any:
    """A JSON-safe, bounded stand-in for one error's `input` or `ctx` value."""
    if value is None or isinstance(value, bool | int):
        return value if not isinstance(value, int) or abs(value) < 10**18 else _cut(str(value))
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # "nan", "inf", "-inf"
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, list | tuple):
        return f"<array of {len(value)} items>"
    if isinstance(value, dict):
        return f"<object with {len(value)} keys>"
    return _cut(type(value).__name__)


def safe_errors(errors: list[dict]) -> list[dict]:
    out = []
    for error in errors[:MAX_ERRORS]:
        item = {"type": error.get("type"), "loc": [_safe_value(p) for p in error.get("loc", ())],
                "msg": _cut(str(error.get("msg", "")))}
        if "input" in error:
            item["input"] = _safe_value(error["input"])
        if isinstance(error.get("ctx"), dict):
            item["ctx"] = {str(k): _safe_value(v) if not isinstance(v, Exception)
                           else _cut(str(v)) for k, v in error["ctx"].items()}
        out.append(item)
    if len(errors) > MAX_ERRORS:
        out.append({"type": "too_many_errors", "loc": [],
                    "msg": f"{len(errors) - MAX_ERRORS} more errors not listed"})
    return out


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": safe_errors(list(exc.errors()))}, status_code=422)


async def _overloaded(request: Request, exc: Overloaded) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503,
                        headers={"Retry-After": str(exc.retry_after)})


async def _too_large(request: Request, exc: ResponseTooLarge) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=413)


def install_handlers(app) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(Overloaded, _overloaded)
    app.add_exception_handler(ResponseTooLarge, _too_large)
