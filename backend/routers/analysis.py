"""Per-image motif analysis against ground truth, and interventions on the sparse map."""

import numpy as np
from fastapi import APIRouter, HTTPException

from sparling_core.analysis.inspect import analyze, intervene, prepare_image

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
from ..store import LoadedModel

router = APIRouter(prefix="/models", tags=["analysis"])
ERRORS = {code: {"model": ErrorDetail} for code in (401, 404, 413, 422)}


def _domain_sample(loaded: LoadedModel, seed: int, split: str):
    try:
        return loaded.domain.sample(seed, split)
    except IndexError as e:
        raise HTTPException(404, str(e)) from e


@router.post("/{model_id}/analysis", response_model=AnalysisOut, responses=ERRORS)
def analysis(loaded: ModelDep, body: AnalysisIn) -> dict:
    """`{"seed": n}` (a sample of the model's domain) or `{"image": [[...]], "motifs":
    [{"symbol", "box"}, ...], "label": [...]}`: which motifs were hit, confused or missed,
    the false positives, per-image FPE / FNE / CE (percent)."""
    shape = loaded.checkpoint.config.image_shape
    try:
        if isinstance(body, AnalysisBySeed):
            s = _domain_sample(loaded, body.seed, body.split)
            image, motifs, label = prepare_image(s.image, shape), s.motifs, s.label
        else:
            image = prepare_image(np.asarray(body.image, dtype=np.float64), shape)
            motifs = [m.model_dump() for m in body.motifs]
            label = body.label
        return loaded.run(analyze, image, motifs, loaded.assignment, label)
    except ValueError as e:
        raise HTTPException(422, str(e)) from e


@router.post("/{model_id}/intervene", response_model=InterveneOut, responses=ERRORS)
def intervention(loaded: ModelDep, body: InterveneIn) -> dict:
    """Remove and add activations on the sparse map of a seed or image, decode again."""
    shape = loaded.checkpoint.config.image_shape
    try:
        if isinstance(body, InterveneBySeed):
            image = prepare_image(_domain_sample(loaded, body.seed, body.split).image, shape)
        else:
            image = prepare_image(np.asarray(body.image, dtype=np.float64), shape)
        return loaded.run(intervene, image, [p.model_dump() for p in body.remove],
                          [a.model_dump() for a in body.add])
    except ValueError as e:
        raise HTTPException(422, str(e)) from e
