"""DigitCircle samples by seed: image, label and ground-truth motifs."""

import base64
import io
from typing import Annotated

from fastapi import APIRouter, Path
from PIL import Image

from sparling_core.domains import digit_circle as dc

from ..schemas import SEED_MAX, ErrorDetail, SampleOut

router = APIRouter(prefix="/samples", tags=["samples"])


def _png_base64(image) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image * 255, mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@router.get("/{seed}", response_model=SampleOut, responses={401: {"model": ErrorDetail}})
def sample(seed: Annotated[int, Path(ge=0, le=SEED_MAX)]) -> dict:
    s = dc.sample(seed)
    return {**s.to_dict(), "image": s.image.tolist(), "png_base64": _png_base64(s.image)}
