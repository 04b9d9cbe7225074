"""Per-channel summaries over validation images (computed once per model, then cached)."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from ..deps import ModelDep, SettingsDep
from ..schemas import ChannelDetail, ChannelList, ErrorDetail
from ..store import LoadedModel

router = APIRouter(prefix="/models", tags=["channels"])
ERRORS = {code: {"model": ErrorDetail} for code in (401, 404, 409)}


def _summaries(loaded: LoadedModel, n: int) -> list[dict]:
    try:
        return loaded.summaries(n)
    except ValueError as e:  # e.g. a domain without a validation split
        raise HTTPException(409, f"cannot summarise this model on its domain "
                                 f"({loaded.domain_id}): {e}") from e


@router.get("/{model_id}/channels", response_model=ChannelList, responses=ERRORS)
def channels(loaded: ModelDep, settings: SettingsDep) -> dict:
    """Each channel's assigned symbol, density and histogram of its nonzero values, over
    SPARLING_CHANNEL_SUMMARY_N validation images."""
    return {"channels": _summaries(loaded, settings.channel_summary_n)}


@router.get("/{model_id}/channels/{channel}", response_model=ChannelDetail, responses=ERRORS)
def channel(loaded: ModelDep, settings: SettingsDep,
            channel: Annotated[int, Path(ge=0, description="motif channel")]) -> dict:
    """One channel's summary and its strongest activations as image crops (up to 12)."""
    summaries = _summaries(loaded, settings.channel_summary_n)
    if channel >= len(summaries):
        raise HTTPException(404, f"channel {channel} does not exist: the model has "
                                 f"{len(summaries)} channels (0..{len(summaries) - 1})")
    return summaries[channel]

