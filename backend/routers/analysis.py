"""Per-image motif analysis against ground truth, and interventions on the sparse map."""

import numpy as np
from fastapi import APIRouter, HTTPException

from sparling_core.analysis.inspect import analyze, intervene, prepare_image
from sparling_core.domains import digit_circle as dc

from ..deps import ModelDep
from ..schemas import (
    AnalysisBySeed,
    AnalysisIn,
    AnalysisOut,
    ErrorDetail,
    InterveneBySeed,
    InterveneIn,
    InterveneOut,
)

router = APIRouter(prefix="/models", tags=["analysis"])
ERRORS = {code: {"model": ErrorDetail} for code in (401, 404, 413, 422)}


@router.post("/{model_id}/analysis", response_model=AnalysisOut, responses=ERRORS)
def analysis(loaded: ModelDep, body: AnalysisIn) -> dict:
    """`{"seed": n}` or `{"image": [[...]], "motifs": [{"digit", "box"}, ...]}`: which digits
    were hit, confused or missed, the false positives, per-image FPE / FNE / CE (percent)."""
    size = loaded.checkpoint.config.image_size
    try:
        if isinstance(body, AnalysisBySeed):
            s = dc.sample(body.seed)
            image, motifs, label = prepare_image(s.image, size), s.motifs, s.label
        else:
            image = prepare_image(np.asarray(body.image, dtype=np.float64), size)
            motifs = [m.model_dump() for m in body.motifs]
            label = body.label
        return loaded.run(analyze, image, motifs, loaded.channel_to_digit, label)
    except ValueError as e:
        raise HTTPException(422, str(e)) from e


@router.post("/{model_id}/intervene", response_model=InterveneOut, responses=ERRORS)
def intervention(loaded: ModelDep, body: InterveneIn) -> dict:
    """Remove and add activations on the sparse map of a seed or image, decode again."""
    size = loaded.checkpoint.config.image_size
    try:
        if isinstance(body, InterveneBySeed):
            image = prepare_image(dc.sample(body.seed).image, size)
        else:
            image = prepare_image(np.asarray(body.image, dtype=np.float64), size)
        return loaded.run(intervene, image, [p.model_dump() for p in body.remove],
                          [a.model_dump() for a in body.add])
    except ValueError as e:
        raise HTTPException(422, str(e)) from e
