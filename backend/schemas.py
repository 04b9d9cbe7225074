"""Request and response bodies of the /v1 API: the contract with the frontend."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

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
Seed = Annotated[int, Field(ge=0, le=SEED_MAX,
                            description="a seed of the model's domain (an index for folders)")]
Split = Literal["train", "val", "test"]
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
    domain: str = Field(description="the id of the domain it reads (GET /v1/domains)")
    sparsity: str = Field(description="bottleneck kind: mt, st, l1, kl, topk or none")
    density: float | None = Field(description="nominal density the bottleneck targets")
    samples_seen: int | None
    parameters: int | None
    metrics: MetricsSummary | None


class ModelList(BaseModel):
    models: list[ModelSummary]
    default: str | None = Field(description="the model to open first (SPARLING_DEFAULT_MODEL, "
                                            "else digit-circle-mt when loaded)")
    errors: dict[str, str] = Field(description="checkpoint folder -> why it did not load")


class Serving(BaseModel):
    """The request batcher of one model in this server process (each replica has its own)."""
    forwards: int = Field(description="batched forwards run")
    images: int = Field(description="single-image requests answered by them")
    largest: int = Field(description="the largest batch")
    mean_batch: float | None = Field(description="images / forwards (null before the first)")
    max_batch: int = Field(description="SPARLING_BATCH_MAX (1: batching off)")
    max_wait_ms: float = Field(description="SPARLING_BATCH_WAIT_MS")


class ModelDetail(BaseModel):
    id: str
    config: dict[str, Any] = Field(description="the model config (ModelConfig)")
    train: dict[str, Any] = Field(description="the training config")
    samples_seen: int | None
    density: float | None
    metrics: dict[str, Any] | None = Field(description="metrics.json, or null")
    domain: str
    vocabulary: list[str] = Field(description="output tokens")
    symbols: list[str] = Field(description="ground-truth motif kinds (confusion rows)")
    assignment_kind: Literal["one-to-one", "many-to-one"]
    assignment: dict[str, str] | None = Field(
        description="channel -> symbol from the evaluation (several channels may share one "
                    "symbol when many-to-one)")
    confusion: list[list[int]] | None = Field(description="rows: true symbol, columns: channel")
    serving: Serving = Field(description="this process's request batcher since start")


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


class Decoding(BaseModel):
    sequence: list[int]
    tokens: list[str]
    probabilities: list[float]


class ActivationsOut(BaseModel):
    model: str
    height: int
    width: int
    channels: int
    activations: list[Activation]
    n_active: int
    density: float
    sequence: list[int] = Field(description="decoded token ids")
    tokens: list[str] = Field(description="the decoded tokens")
    probabilities: list[float] = Field(description="per emitted token, end token included")
    dense: list[list[list[float]]] | None = Field(description="C x H x W map when dense=true")
    ink_fraction: float | None = Field(None, description="mean ink of the image the model saw")
    empty_map: Decoding | None = Field(
        None, description="what the decoder answers for an empty map: the baseline")
    warnings: list[str] = Field(default_factory=list, description=(
        "why this decode may not be supported by the motifs (empty map, more tokens than "
        "motifs, ink far from the training images, padding / cropping / resizing applied)"))


class BatchOut(BaseModel):
    results: list[ActivationsOut]


# --- samples ----------------------------------------------------------------------------

class MotifOut(BaseModel):
    symbol: str
    center: list[int] = Field(description="[row, col]")
    box: list[int] = Field(description="[row0, col0, row1, col1], end-exclusive")


class SampleOut(BaseModel):
    domain: str
    split: Split
    seed: int
    height: int
    width: int
    image: list[list[float]] = Field(description="ink values in [0, 1]")
    png_base64: str
    label: list[str] = Field(description="the answer's tokens")
    motifs: list[MotifOut]


class DomainOut(BaseModel):
    name: str
    description: str
    label_rule: str = Field("", description="how the label is read off the image")
    image_shape: list[int] = Field(description="[height, width]")
    vocabulary: list[str]
    max_label_length: int
    symbols: list[str]
    assignment: Literal["one-to-one", "many-to-one"]
    motif_channels: int
    has_motifs: bool
    splits: dict[str, dict[str, int]] = Field(description="split -> {start, stop} of its seeds")


class DomainList(BaseModel):
    domains: list[DomainOut]


# --- analysis ---------------------------------------------------------------------------

class MotifIn(_Strict):
    symbol: str = Field(min_length=1, max_length=64, description="one of the domain's symbols")
    box: list[int] = Field(min_length=4, max_length=4,
                           description="[row0, col0, row1, col1], end-exclusive")

    @model_validator(mode="before")
    @classmethod
    def _legacy_digit(cls, data: Any) -> Any:
        """{"digit": 3, ...} (the API before domains) is {"symbol": "3", ...}."""
        if isinstance(data, dict) and "digit" in data and "symbol" not in data:
            data = {**data, "symbol": str(data["digit"])}
            del data["digit"]
        return data


class AnalysisBySeed(_Strict):
    seed: Seed
    split: Split = Field("train", description="the split a folder domain's index is in")


class AnalysisByImage(_Strict):
    image: Image
    motifs: list[MotifIn] = Field(max_length=256, description="the image's ground truth")
    label: list[Annotated[str, Field(max_length=64)]] | None = Field(
        None, max_length=256, description="the true tokens, if known")

    @model_validator(mode="before")
    @classmethod
    def _legacy_label(cls, data: Any) -> Any:
        """Integer labels (the API before domains) are their strings."""
        if isinstance(data, dict) and isinstance(data.get("label"), list):
            data = {**data, "label": [str(t) if isinstance(t, int) and not isinstance(t, bool)
                                      else t for t in data["label"]]}
        return data


AnalysisIn = Annotated[AnalysisBySeed | AnalysisByImage, Field(
    description='{"seed": n}, or {"image": [[...]], "motifs": [...]} with an optional label')]


class MotifResult(BaseModel):
    symbol: str
    box: list[int] = Field(description="as evaluated (padded by the domain's box padding)")
    status: Literal["hit", "missed", "confused"]
    channel: int | None
    value: float
    row: int | None
    col: int | None


class AnalysisOut(BaseModel):
    sequence: list[int]
    tokens: list[str]
    probabilities: list[float]
    label: list[str] | None
    motifs: list[MotifResult]
    assignment: dict[str, str] = Field(description="channel -> symbol used for the statuses")
    false_positives: list[Activation]
    fpe: float | None = Field(description="percent; null when nothing was predicted")
    fne: float | None = Field(description="percent; null without motifs")
    ce: float | None = Field(description="percent; null when no motif was matched")
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
    crop: list[list[float]] = Field(description="image pixels around (row, col), clipped")
    crop_origin: list[int] = Field(description="[row, col] of the crop's top-left pixel")


class DecodeEffect(BaseModel):
    changed: int = Field(description="images whose decoded sequence changes when the channel "
                                     "is removed from their sparse map (zeroed)")
    n: int = Field(description="images looked at")


class ChannelOut(BaseModel):
    channel: int
    symbol: str | None = Field(description="the symbol it is assigned to, if any")
    density: float
    histogram: Histogram
    median: float | None = Field(description="median of its nonzero values (null: never fires)")
    precision: float | None = Field(
        description="fraction of its activations inside a box of its own symbol (boxes "
                    "padded as in evaluation); null when unassigned or it never fires")
    effect: DecodeEffect


class ChannelDetail(ChannelOut):
    top_crops: list[Crop] = Field(description="where it fires hardest, one per image")
    middle_crops: list[Crop] = Field(description="activations nearest its median value, "
                                                 "one per image")
    outside_crops: list[Crop] = Field(description="where it fires hardest outside every "
                                                  "ground-truth box, one per image")


class SummaryProgress(BaseModel):
    done: int = Field(description="validation images summarised so far")
    total: int = Field(description="validation images in all (SPARLING_CHANNEL_SUMMARY_N)")


class ChannelsComputing(BaseModel):
    """The answer (HTTP 202) while a model's channel summaries are being computed."""
    status: Literal["computing"] = "computing"
    progress: SummaryProgress


class ChannelList(BaseModel):
    status: Literal["ready"] = "ready"
    progress: SummaryProgress
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
    split: Split = "train"


class InterveneByImage(_Edits):
    image: Image


InterveneIn = Annotated[InterveneBySeed | InterveneByImage, Field(
    description='{"seed": n} or {"image": [[...]]}, with "remove" and "add" lists')]


class InterveneOut(BaseModel):
    before: Decoding
    after: Decoding
    removed: int = Field(description="removals that hit a nonzero activation")
    added: int
    activations_after: list[Activation]
