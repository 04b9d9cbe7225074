"""Request and response bodies of the /v1 API: the contract with the frontend."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from .images import ImageError, check_shape

MAX_BATCH = 32
SEED_MAX = 2**32 - 1

def _image_shape(rows: Any) -> Any:
    """Side and side-ratio caps (backend.images.check_shape) for JSON images, checked on the
    raw rows before a million numbers are validated one by one."""
    if isinstance(rows, list) and rows and all(isinstance(row, list) for row in rows):
        try:
            check_shape(len(rows), max(len(row) for row in rows))
        except ImageError as e:
            raise ValueError(str(e)) from None
    return rows


# The range is documented in the schema but checked by prepare_image: one clear message
# instead of one validation error per pixel.
Ink = Annotated[float, WithJsonSchema({"type": "number", "minimum": 0, "maximum": 1})]
Image = Annotated[
    list[list[Ink]],
    Field(description="rows of ink values in [0, 1] (1 = ink), e.g. 100 rows of 100 numbers",
          examples=[[[0, 1, 0], [1, 1, 1]]]),
    BeforeValidator(_image_shape),
]
Seed = Annotated[int, Field(ge=0, le=SEED_MAX, description="a DigitCircle seed")]
Channel = Annotated[int, Field(ge=0, description="motif channel")]
Pixel = Annotated[int, Field(ge=0, description="row or column in the motif map")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- health -----------------------------------------------------------------------------

class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    status: Literal["ready"] = "ready"
    models: list[str]
    errors: dict[str, str] = Field(description="checkpoint folder -> why it did not load")


class ErrorDetail(BaseModel):
    detail: Any


# --- models -----------------------------------------------------------------------------

class MetricsSummary(BaseModel):
    fpe: float | None = Field(None, description="false-positive error, percent")
    fne: float | None = Field(None, description="false-negative error, percent")
    ce: float | None = Field(None, description="confusion error, percent")
    e2ee: float | None = Field(None, description="end-to-end error, percent")
    density: float | None = Field(None, description="realised density of the motif map")
    density_ratio: float | None = Field(None, description="density / theoretical minimum")
    n: int | None = Field(None, description="evaluated images")


class ModelSummary(BaseModel):
    id: str
    sparsity: str = Field(description="bottleneck kind: mt, st, l1, kl, topk or none")
    density: float | None = Field(description="nominal density the bottleneck targets")
    samples_seen: int | None
    parameters: int | None
    metrics: MetricsSummary | None


class ModelList(BaseModel):
    models: list[ModelSummary]
    errors: dict[str, str] = Field(description="checkpoint folder -> why it did not load")


class ModelDetail(BaseModel):
    id: str
    config: dict[str, Any] = Field(description="the model config (ModelConfig)")
    train: dict[str, Any] = Field(description="the training config")
    samples_seen: int | None
    density: float | None
    metrics: dict[str, Any] | None = Field(description="metrics.json, or null")
    channel_to_digit: dict[str, int] | None
    confusion: list[list[int]] | None = Field(description="rows: true digit, columns: channel")


class History(BaseModel):
    history: list[dict[str, Any]]


# --- activations ------------------------------------------------------------------------

class ImageIn(_Strict):
    image: Image


class BatchIn(_Strict):
    images: list[Image] = Field(min_length=1, max_length=MAX_BATCH)


class Activation(BaseModel):
    channel: int
    row: int
    col: int
    value: float


class ActivationsOut(BaseModel):
    model: str
    height: int
    width: int
    channels: int
    activations: list[Activation]
    n_active: int
    density: float
    sequence: list[int]
    probabilities: list[float] = Field(description="per emitted token, end token included")
    dense: list[list[list[float]]] | None = Field(description="C x H x W map when dense=true")


class BatchOut(BaseModel):
    results: list[ActivationsOut]


# --- samples ----------------------------------------------------------------------------

class MotifOut(BaseModel):
    digit: int
    center: list[int] = Field(description="[row, col]")
    box: list[int] = Field(description="[row0, col0, row1, col1], end-exclusive")


class SampleOut(BaseModel):
    seed: int
    image: list[list[int]]
    png_base64: str
    label: list[int]
    motifs: list[MotifOut]


# --- analysis ---------------------------------------------------------------------------

class MotifIn(_Strict):
    digit: int = Field(ge=0, le=9)
    box: list[int] = Field(min_length=4, max_length=4,
                           description="[row0, col0, row1, col1], end-exclusive")


class AnalysisBySeed(_Strict):
    seed: Seed


class AnalysisByImage(_Strict):
    image: Image
    motifs: list[MotifIn] = Field(max_length=64, description="the image's ground truth")
    label: list[Annotated[int, Field(ge=0, le=9)]] | None = Field(
        None, max_length=16, description="the true sequence, if known")


AnalysisIn = Annotated[AnalysisBySeed | AnalysisByImage, Field(
    description='{"seed": n}, or {"image": [[...]], "motifs": [...]} with an optional label')]


class DigitOut(BaseModel):
    digit: int
    box: list[int]
    status: Literal["hit", "missed", "confused"]
    channel: int | None
    value: float
    row: int | None
    col: int | None


class AnalysisOut(BaseModel):
    sequence: list[int]
    probabilities: list[float]
    label: list[int] | None
    digits: list[DigitOut]
    false_positives: list[Activation]
    fpe: float | None = Field(description="percent; null when nothing was predicted")
    fne: float | None = Field(description="percent; null without digits")
    ce: float | None = Field(description="percent; null when no digit was matched")
    n_active: int
    density: float


# --- channels ---------------------------------------------------------------------------

class Histogram(BaseModel):
    edges: list[float]
    counts: list[int]


class Crop(BaseModel):
    seed: int
    row: int
    col: int
    value: float
    crop: list[list[int]] = Field(description="image pixels around (row, col), clipped")
    crop_origin: list[int] = Field(description="[row, col] of the crop's top-left pixel")


class ChannelOut(BaseModel):
    channel: int
    digit: int | None
    density: float
    histogram: Histogram


class ChannelDetail(ChannelOut):
    top_crops: list[Crop]


class ChannelList(BaseModel):
    channels: list[ChannelOut]


# --- interventions ----------------------------------------------------------------------

class Position(BaseModel):
    """One map entry. Other keys (an activation's `value`) are ignored, so activations can
    be sent back as they came."""

    channel: Channel
    row: Pixel
    col: Pixel


class Addition(Position):
    model_config = ConfigDict(extra="forbid")
    value: float = Field(gt=0, le=1e6, allow_inf_nan=False)


class _Edits(_Strict):
    remove: list[Position] = Field(default_factory=list, max_length=100_000,
                                   description="entries to zero, applied first")
    add: list[Addition] = Field(default_factory=list, max_length=100_000,
                                description="entries to set, applied after the removals")


class InterveneBySeed(_Edits):
    seed: Seed


class InterveneByImage(_Edits):
    image: Image


InterveneIn = Annotated[InterveneBySeed | InterveneByImage, Field(
    description='{"seed": n} or {"image": [[...]]}, with "remove" and "add" lists')]


class Decoding(BaseModel):
    sequence: list[int]
    probabilities: list[float]


class InterveneOut(BaseModel):
    before: Decoding
    after: Decoding
    removed: int = Field(description="removals that hit a nonzero activation")
    added: int
    activations_after: list[Activation]
