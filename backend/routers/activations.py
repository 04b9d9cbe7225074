"""Sparse (and optionally dense) motif activations of uploaded or posted images."""

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool

from sparling_core.analysis.inspect import prepare_image, run_images

from ..deps import IMAGE_BODY_OPENAPI, ModelDep, UploadedImage
from ..schemas import ActivationsOut, BatchIn, BatchOut, ErrorDetail
from ..store import LoadedModel

router = APIRouter(prefix="/models", tags=["activations"])

Dense = Annotated[bool, Query(description="also return the whole C x H x W map")]
Fit = Annotated[Literal["none", "pad", "resize"], Query(
    description="none: the image must have the model's size; pad: pad / crop centrally; "
                "resize: nearest-neighbour resize")]
ERRORS = {code: {"model": ErrorDetail} for code in (401, 404, 413, 415, 422)}


def _fit_warning(original: tuple[int, ...], shape: tuple[int, int], fit: str) -> list[str]:
    if tuple(original) == tuple(shape):
        return []
    h, w = original[:2]
    how = ("resized (nearest neighbour)" if fit == "resize"
           else "padded and cropped, centred" if h > shape[0] or w > shape[1]
           else "padded, centred")
    return [f"The image was {h}x{w}; it was {how} to the model's {shape[0]}x{shape[1]} "
            f"(fit={fit}): motifs near the edges may be lost or distorted."]


def _run(loaded: LoadedModel, images: list, fit: str, dense: bool) -> list[dict]:
    shape = loaded.checkpoint.config.image_shape
    prepared = np.stack([prepare_image(image, shape, fit) for image in images])
    # as the batcher computes a lone request: an image gets the same answer from either route
    results = loaded.run(run_images, prepared, dense, batch_invariant=True, motif_batch=1)
    return [{"model": loaded.id, **r,
             "warnings": _fit_warning(np.shape(image), shape, fit) + r.get("warnings", [])}
            for image, r in zip(images, results, strict=True)]


def _run_one(loaded: LoadedModel, image, fit: str, dense: bool) -> dict:
    """One image through the model's batcher: concurrent requests share a forward."""
    shape = loaded.checkpoint.config.image_shape
    prepared = prepare_image(image, shape, fit)
    if dense and loaded.max_response_values is not None:  # 413 before it joins a batch
        loaded.check_dense(1, [prepared], loaded.max_response_values)
    result = loaded.batcher.submit(prepared, dense)
    return {"model": loaded.id, **result,
            "warnings": _fit_warning(np.shape(image), shape, fit) + result.get("warnings", [])}


@router.post("/{model_id}/activations", response_model=ActivationsOut, responses=ERRORS,
             openapi_extra=IMAGE_BODY_OPENAPI)
async def activations(loaded: ModelDep, image: UploadedImage, dense: Dense = False,
                      fit: Fit = "none") -> dict:
    """One image as JSON `{"image": [[...]]}` or a multipart `file` (PNG, JPEG or .npy)."""
    try:
        return await run_in_threadpool(_run_one, loaded, image, fit, dense)
    except ValueError as e:
        raise HTTPException(422, str(e)) from e


@router.post("/{model_id}/activations/batch", response_model=BatchOut, responses=ERRORS)
def activations_batch(loaded: ModelDep, body: BatchIn, dense: Dense = False,
                      fit: Fit = "none") -> dict:
    """Up to 32 images as JSON `{"images": [image, ...]}`."""
    try:
        images = [np.asarray(image, dtype=np.float64) for image in body.images]
        return {"results": _run(loaded, images, fit, dense)}
    except ValueError as e:
        raise HTTPException(422, str(e)) from e
