"""Samples of a domain by seed (or index, for folder domains): image, label tokens and
ground-truth motifs. Also the domains themselves."""

import base64
import io
from typing import Annotated

import numpy as np
from fastapi import APIRouter, HTTPException, Path, Query
from PIL import Image

from sparling_core.domains import Domain

from ..deps import ModelDep, StoreDep
from ..schemas import SEED_MAX, DomainList, ErrorDetail, SampleOut, Split

router = APIRouter(tags=["samples"])
ERRORS = {code: {"model": ErrorDetail} for code in (401, 404, 422)}
SeedPath = Annotated[int, Path(ge=0, le=SEED_MAX, description="seed (index for folders)")]
SplitQuery = Annotated[Split, Query(description="train | val | test (folder domains index "
                                                "within the split)")]


def _png_base64(image: np.ndarray) -> str:
    pixels = np.clip(np.round(np.asarray(image, dtype=np.float64) * 255), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def sample_payload(domain: Domain, domain_id: str, seed: int, split: str) -> dict:
    try:
        s = domain.sample(seed, split)
    except (ValueError, IndexError) as e:
        raise HTTPException(404 if isinstance(e, IndexError) else 422, str(e)) from e
    image = np.asarray(s.image)
    return {"domain": domain_id, "split": split, **s.to_dict(), "height": image.shape[0],
            "width": image.shape[1], "image": image.astype(float).tolist(),
            "png_base64": _png_base64(image)}


@router.get("/domains", response_model=DomainList, responses=ERRORS)
def domains(store: StoreDep) -> dict:
    """The registered domains and those of the loaded models."""
    return {"domains": [{**d.describe(), "name": name} for name, d in store.domains().items()]}


@router.get("/domains/{domain}/samples/{seed}", response_model=SampleOut, responses=ERRORS)
def domain_sample(store: StoreDep, domain: str, seed: SeedPath,
                  split: SplitQuery = "train") -> dict:
    """One sample of a domain: the image, its label tokens and its motifs."""
    known = store.domains()
    if domain not in known:
        raise HTTPException(404, f"unknown domain {domain!r}; GET /v1/domains lists them")
    return sample_payload(known[domain], domain, seed, split)


@router.get("/models/{model_id}/samples/{seed}", response_model=SampleOut, responses=ERRORS)
def model_sample(loaded: ModelDep, seed: SeedPath, split: SplitQuery = "train") -> dict:
    """A sample of the domain this model reads."""
    return sample_payload(loaded.domain, loaded.domain_id, seed, split)


@router.get("/samples/{seed}", response_model=SampleOut, responses=ERRORS)
def sample(store: StoreDep, seed: SeedPath) -> dict:
    """DigitCircle's sample for a seed (an alias of /v1/domains/digit-circle/samples/{seed})."""
    return domain_sample(store, "digit-circle", seed, "train")
