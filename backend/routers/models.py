"""The loaded checkpoints: list, details, training history."""

import math
from typing import Any

from fastapi import APIRouter

from ..deps import ModelDep, SettingsDep, StoreDep
from ..schemas import History, MetricsSummary, ModelDetail, ModelList, ModelSummary, Serving
from ..store import LoadedModel

router = APIRouter(prefix="/models", tags=["models"])

_SUMMARY_KEYS = ("fpe", "fne", "ce", "e2ee", "density", "density_ratio", "n")


def _json_safe(value: Any) -> Any:
    """NaN / infinity (written by json.dumps into metrics and history) -> None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _number(value: Any) -> Any:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _summary(loaded: LoadedModel) -> ModelSummary:
    meta, metrics = loaded.checkpoint.meta, loaded.checkpoint.metrics
    return ModelSummary(
        id=loaded.id,
        domain=loaded.domain_id,
        sparsity=loaded.checkpoint.config.sparsity,
        density=_json_safe(_number(meta.get("density"))),
        samples_seen=_number(meta.get("samples_seen")),
        parameters=_number(meta.get("parameters")),
        metrics=None if metrics is None else MetricsSummary(
            **{k: _json_safe(_number(metrics.get(k))) for k in _SUMMARY_KEYS}),
    )


@router.get("", response_model=ModelList)
def list_models(store: StoreDep, settings: SettingsDep) -> ModelList:
    return ModelList(models=[_summary(m) for _, m in sorted(store.models.items())],
                     default=store.default_model(settings.default_model), errors=store.errors)


@router.get("/{model_id}", response_model=ModelDetail)
def model_detail(loaded: ModelDep) -> ModelDetail:
    meta, metrics = loaded.checkpoint.meta, loaded.checkpoint.metrics
    assignment, symbols = loaded.assignment, loaded.domain.symbols
    confusion = (metrics or {}).get("confusion")
    return ModelDetail(
        id=loaded.id,
        config=loaded.checkpoint.config.to_dict(),
        train=_json_safe(meta.get("train") if isinstance(meta.get("train"), dict) else {}),
        samples_seen=_number(meta.get("samples_seen")),
        density=_json_safe(_number(meta.get("density"))),
        metrics=_json_safe(metrics),
        domain=loaded.domain_id,
        vocabulary=list(loaded.domain.vocabulary),
        symbols=list(symbols),
        assignment_kind=loaded.domain.assignment_for(loaded.checkpoint.config.motif_channels),
        assignment=None if assignment is None else {
            str(c): symbols[d] for c, d in sorted(assignment.items())},
        confusion=confusion if _is_table(confusion) else None,
        serving=_serving(loaded),
    )


def _serving(loaded: LoadedModel) -> Serving:
    batcher = loaded.batcher
    stats = batcher.stats
    return Serving(forwards=stats.forwards, images=stats.images, largest=stats.largest,
                   mean_batch=stats.images / stats.forwards if stats.forwards else None,
                   max_batch=batcher.max_batch, max_wait_ms=batcher.max_wait_s * 1000)


def _is_table(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(row, list) and all(isinstance(v, int) for v in row) for row in value)


@router.get("/{model_id}/history", response_model=History)
def history(loaded: ModelDep) -> History:
    rows = [row for row in loaded.checkpoint.history if isinstance(row, dict)]
    return History(history=_json_safe(rows))
