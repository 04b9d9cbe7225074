"""The Streamlit caches over the Sparling REST client.

The client itself is `sparling_client.Client` (importable on its own, needs only requests):
every method returns the decoded JSON or raises `ApiError` with a message a person can act
on. The functions below wrap it for the pages: one client per process
(`st.cache_resource`), responses cached with a TTL (`st.cache_data`). Exceptions are never
cached, so a page recovers on the next rerun once the backend is back.
"""

from __future__ import annotations

import os

import streamlit as st

from sparling_client import DEFAULT_URL as DEFAULT_API_URL
from sparling_client import ApiError as ApiError  # re-exported: the pages catch api.ApiError
from sparling_client import Client

API_URL_ENV = "SPARLING_API_URL"
API_KEY_ENV = "SPARLING_API_KEY"

# Seconds a cached response stays fresh. Lists and histories change while a run trains;
# samples are deterministic; model outputs only change when a checkpoint is replaced.
TTL_LIST = 30
TTL_RESULT = 300
TTL_SAMPLE = 3600

SparlingClient = Client  # the name the pages and tests knew it by


# --- Streamlit caches --------------------------------------------------------------------
def api_url() -> str:
    return os.environ.get(API_URL_ENV, DEFAULT_API_URL).rstrip("/")


@st.cache_resource
def get_client() -> SparlingClient:
    """One client per Streamlit process, configured from SPARLING_API_URL / SPARLING_API_KEY."""
    return SparlingClient(api_url(), os.environ.get(API_KEY_ENV) or None)


@st.cache_data(ttl=TTL_LIST, show_spinner=False)
def list_models() -> dict:
    return get_client().models()


@st.cache_data(ttl=TTL_LIST, show_spinner=False)
def get_model(model_id: str) -> dict:
    return get_client().model(model_id)


@st.cache_data(ttl=TTL_LIST, show_spinner=False)
def get_history(model_id: str) -> dict:
    return get_client().history(model_id)


class _StillComputing(Exception):  # noqa: N818 - carries the progress answer past the cache
    def __init__(self, body: dict):
        super().__init__("the channel summaries are still being computed")
        self.body = body


def _ready(body: dict) -> dict:
    if isinstance(body, dict) and body.get("status") == "computing":
        raise _StillComputing(body)  # exceptions are never cached: the next run asks again
    return body


@st.cache_data(ttl=TTL_RESULT, show_spinner=False)
def _channels(model_id: str) -> dict:
    return _ready(get_client().channels(model_id, wait=0))


@st.cache_data(ttl=TTL_RESULT, show_spinner=False)
def _channel(model_id: str, channel: int) -> dict:
    return _ready(get_client().channel(model_id, channel, wait=0))


def get_channels(model_id: str) -> dict:
    """The channel summaries ({"status": "ready", "channels", ...}, cached), or while the
    backend computes them {"status": "computing", "progress": {done, total}} (not cached).
    Never waits for the computation."""
    try:
        return _channels(model_id)
    except _StillComputing as e:
        return e.body


def get_channel(model_id: str, channel: int) -> dict:
    """One channel's summary and crops (cached), or the progress answer as for
    `get_channels`."""
    try:
        return _channel(model_id, channel)
    except _StillComputing as e:
        return e.body


@st.cache_data(ttl=TTL_LIST, show_spinner=False)
def list_domains() -> dict:
    return get_client().domains()


@st.cache_data(ttl=TTL_SAMPLE, show_spinner=False)
def get_sample(model_id: str, seed: int) -> dict:
    """A sample of the domain the model reads."""
    return get_client().sample(seed, model_id)


@st.cache_data(ttl=TTL_RESULT, show_spinner="Running the model...")
def activations_for_sample(model_id: str, seed: int) -> dict:
    return get_client().activations(model_id, image=get_sample(model_id, seed)["image"])


@st.cache_data(ttl=TTL_RESULT, show_spinner="Running the model...")
def activations_for_upload(model_id: str, name: str, data: bytes, mime: str, fit: str) -> dict:
    return get_client().activations(model_id, file=(name, data, mime), fit=fit)


@st.cache_data(ttl=TTL_RESULT, show_spinner="Aligning motifs with the ground truth...")
def analysis_for_sample(model_id: str, seed: int) -> dict:
    return get_client().analysis(model_id, seed=seed)


@st.cache_data(ttl=TTL_RESULT, show_spinner="Decoding with the edited motif map...")
def intervene_on_sample(model_id: str, seed: int, remove: tuple, add: tuple) -> dict:
    """`remove` / `add` are tuples of (channel, row, col[, value]) so they hash cheaply."""
    return get_client().intervene(
        model_id, seed=seed,
        remove=[{"channel": c, "row": r, "col": k} for c, r, k in remove],
        add=[{"channel": c, "row": r, "col": k, "value": v} for c, r, k, v in add])
