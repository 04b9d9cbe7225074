"""The service's one Settings object, read from SPARLING_* environment variables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPARLING_", extra="ignore")

    checkpoints: Path = Path("checkpoints")  # a folder of checkpoint folders; each is a model
    host: str = "127.0.0.1"  # for `python -m backend`; uvicorn's CLI takes --host
    port: int = Field(8000, ge=1, le=65535)
    max_upload_bytes: int = Field(2_000_000, ge=1)  # any request body; larger -> 413
    max_image_pixels: int = Field(4_000_000, ge=1)  # decoded uploads; checked before decoding
    # JSON list (["http://localhost:8501"]) or comma-separated; empty: no CORS headers
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    api_key: str | None = None  # when set, /v1 routes except health / ready need X-API-Key
    channel_summary_n: int = Field(500, ge=1, le=100_000)  # validation images per summary
    # compute every model's channel summaries at start-up, in a background thread (the
    # default model first); off: on the first request for a model's channels
    precompute_channels: bool = True
    default_model: str | None = None  # the model the explorer opens on (else digit-circle-mt)
    # numbers one response may carry (a dense 10x100x100 map is 100,000); more: 413
    max_response_values: int = Field(500_000, ge=1)
    # requests waiting or running per model (and for /v1/samples); more: 503 + Retry-After
    max_queue_per_model: int = Field(8, ge=1)
    # sent back as X-Sparling-Instance on every response (scripts/demo.sh's run token)
    instance_id: str | None = Field(None, max_length=200, pattern=r"^[A-Za-z0-9._-]*$")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value):
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value):
        return None if isinstance(value, str) and not value.strip() else value
