"""Liveness and readiness (no API key: compose and load balancers poll these)."""

from fastapi import APIRouter, HTTPException

from ..deps import DetailsDep, StoreDep
from ..schemas import ErrorDetail, Health, Ready

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health() -> Health:
    return Health()


@router.get("/ready", response_model=Ready, responses={503: {"model": ErrorDetail}})
async def ready(store: StoreDep, details: DetailsDep) -> Ready:
    """Model ids and load errors only without SPARLING_API_KEY or with the key."""
    if not store.models:
        raise HTTPException(503, (store.problem or "no model loaded") if details
                            else "no model loaded")
    if not details:
        return Ready(models=[], errors={})
    return Ready(models=sorted(store.models), errors=store.errors)
