"""Per-channel summaries over validation images, computed ahead.

At start-up a background thread computes every model's summaries (the default model first;
SPARLING_PRECOMPUTE_CHANNELS=false turns it off). A request for a model whose summaries are
not ready starts computing them (never twice: one future per model) and waits at most
`wait` seconds: then it is answered 202 with the progress, which a client polls.
"""

from concurrent.futures import Future
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from starlette.responses import JSONResponse

from ..deps import ModelDep, SettingsDep
from ..errors import ResponseTooLarge
from ..schemas import ChannelDetail, ChannelList, ChannelsComputing, ErrorDetail
from ..store import LoadedModel, SummariesStopped, count_values

router = APIRouter(prefix="/models", tags=["channels"])
RESPONSES = {202: {"model": ChannelsComputing,
                   "description": "the summaries are being computed: poll again"},
             **{code: {"model": ErrorDetail} for code in (401, 404, 409, 413, 503)}}
Wait = Annotated[float, Query(ge=0, le=60, description=(
    "seconds to wait for summaries still being computed before answering 202"))]


def _progress(loaded: LoadedModel) -> dict:
    done, total = loaded.summary_progress
    return {"done": done, "total": total}


def _summaries(loaded: LoadedModel, n: int, wait: float) -> list[dict] | None:
    """The model's summaries, or None while they are being computed (after `wait` s)."""
    future: Future = loaded.summaries_future(n)
    try:
        return future.result(timeout=wait)
    except TimeoutError:
        return None
    except SummariesStopped as e:
        raise HTTPException(503, "the server is stopping") from e
    except ValueError as e:  # e.g. a domain without a validation split, another image size
        raise HTTPException(409, f"cannot summarise this model on its domain "
                                 f"({loaded.domain_id}): {e}") from e
    except Exception as e:  # noqa: BLE001 - a failure is kept: say what it was, not 500
        raise HTTPException(409, f"computing the channel summaries failed: "
                                 f"{type(e).__name__}: {e}") from e


def _computing(loaded: LoadedModel) -> JSONResponse:
    return JSONResponse(ChannelsComputing(progress=_progress(loaded)).model_dump(),
                        status_code=202)


@router.get("/{model_id}/channels", response_model=ChannelList, responses=RESPONSES)
def channels(loaded: ModelDep, settings: SettingsDep, wait: Wait = 0):
    """Each channel's assigned symbol, density, histogram and median of its nonzero values,
    precision (activations inside a box of its symbol) and decode effect (images whose
    decode changes without it), over SPARLING_CHANNEL_SUMMARY_N validation images.

    200 with `status: "ready"` once computed. Until then 202 with `status: "computing"` and
    `progress` {done, total} (validation images): poll again (a request starts the work
    when the start-up precompute has not reached the model yet)."""
    summaries = _summaries(loaded, settings.channel_summary_n, wait)
    if summaries is None:
        return _computing(loaded)
    return {"status": "ready", "progress": _progress(loaded), "channels": summaries}


@router.get("/{model_id}/channels/{channel}", response_model=ChannelDetail,
            responses=RESPONSES)
def channel(loaded: ModelDep, settings: SettingsDep,
            channel: Annotated[int, Path(ge=0, description="motif channel")], wait: Wait = 0):
    """One channel's summary with image crops: where it fires hardest (`top_crops`, up to
    12), nearest its median value (`middle_crops`, up to 8) and hardest outside every
    ground-truth box (`outside_crops`, up to 8). 202 with the progress while the
    summaries are being computed, as for the list."""
    c = loaded.checkpoint.config.motif_channels
    if channel >= c:
        raise HTTPException(404, f"channel {channel} does not exist: the model has "
                                 f"{c} channels (0..{c - 1})")
    summaries = _summaries(loaded, settings.channel_summary_n, wait)
    if summaries is None:
        return _computing(loaded)
    cap = settings.max_response_values
    if (count := count_values(summaries[channel], cap)) > cap:
        raise ResponseTooLarge(f"channel {channel}'s summary would carry more than {cap} "
                               f"values ({count}); SPARLING_MAX_RESPONSE_VALUES")
    return summaries[channel]
