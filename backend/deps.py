"""Dependencies shared by the routers, as named `Annotated` aliases."""

from __future__ import annotations

import json
import secrets
from typing import Annotated

import numpy as np
from fastapi import Depends, HTTPException, Path, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from .images import ImageError, ImageTooLarge, decode_upload
from .schemas import ImageIn
from .settings import Settings
from .store import LoadedModel, ModelStore

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                               description="needed when the server sets SPARLING_API_KEY")


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_store(request: Request) -> ModelStore:
    store = getattr(request.app.state, "store", None)
    if store is None:
        raise HTTPException(503, "models are not loaded yet; the server is starting")
    return store


StoreDep = Annotated[ModelStore, Depends(get_store)]


def _key_ok(settings: Settings, key: str | None) -> bool:
    return settings.api_key is None or (
        key is not None and secrets.compare_digest(key.encode(), settings.api_key.encode()))


async def require_api_key(settings: SettingsDep,
                    key: Annotated[str | None, Security(_api_key_header)] = None) -> None:
    if not _key_ok(settings, key):
        raise HTTPException(401, "missing or wrong API key: send it in the X-API-Key header",
                            headers={"WWW-Authenticate": "APIKey"})


async def may_see_details(settings: SettingsDep, key: Annotated[
        str | None, Security(_api_key_header)] = None) -> bool:
    """Whether an open route (readiness) may show model ids and load errors: always without
    SPARLING_API_KEY, else only with the key."""
    return _key_ok(settings, key)


DetailsDep = Annotated[bool, Depends(may_see_details)]


async def get_model(store: StoreDep,
              model_id: Annotated[str, Path(description="a checkpoint folder name")]
              ) -> LoadedModel:
    loaded = store.get(model_id)  # ids come only from the folder listing, never from paths
    if loaded is None:  # the ids are listed by GET /v1/models (behind the key, if any)
        shown = model_id if len(model_id) <= 100 else model_id[:100] + "..."
        raise HTTPException(404, f"unknown model {shown!r}; GET /v1/models lists the models")
    return loaded


ModelDep = Annotated[LoadedModel, Depends(get_model)]


async def read_image(request: Request, settings: SettingsDep) -> np.ndarray:
    """The image of a request: JSON {"image": [[...]]} or a multipart `file` (PNG, JPEG or
    .npy), as a 2-D float array (any size: `fit` is applied by the route)."""
    body = await request.body()
    if not body:
        raise HTTPException(422, "the request body is empty: send JSON {\"image\": [[...]]} "
                                 "or a multipart form with a `file` field")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        # json.loads, then validation: pydantic's own JSON parser holds ~100 bytes of Rust
        # memory per number while it validates (100 MB for a 2 MB body of zeros)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
            raise RequestValidationError([{
                "type": "json_invalid", "loc": ("body",), "msg": "JSON decode error",
                "input": {}, "ctx": {"error": str(e)[:200]}}]) from e
        try:
            return np.asarray(ImageIn.model_validate(data).image, dtype=np.float64)
        except ValidationError as e:
            errors = e.errors(include_url=False, include_input=False)
            for error in errors:
                error["loc"] = ("body", *error["loc"])
            raise RequestValidationError(errors) from e
        except ValueError as e:  # ragged rows
            raise HTTPException(422, f"the image must be a rectangular array ({e})") from e
    if content_type == "multipart/form-data":
        async with request.form(max_files=1, max_fields=4) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise HTTPException(422, "the multipart form needs a file in the `file` field")
            data = await upload.read()
        try:
            return await run_in_threadpool(decode_upload, data, settings.max_image_pixels)
        except ImageTooLarge as e:
            raise HTTPException(413, str(e)) from e
        except ImageError as e:
            raise HTTPException(422, str(e)) from e
    raise HTTPException(415, f"unsupported content type {content_type or 'none'!r}: send "
                             "application/json or multipart/form-data")


UploadedImage = Annotated[np.ndarray, Depends(read_image)]

# OpenAPI for routes that take `UploadedImage` (the body is read by hand, so FastAPI cannot
# describe it on its own).
IMAGE_BODY_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": ImageIn.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary",
                                            "description": "PNG, JPEG or .npy"}},
                    "required": ["file"],
                },
            },
        },
    },
}
