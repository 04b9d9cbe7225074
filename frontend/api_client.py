"""The Streamlit caches over the Sparling REST client.

The client itself is `sparling_client.Client` (importable on its own, needs only requests):
every method returns the decoded JSON or raises `ApiError` with a message a person can act
on. The functions below wrap it for the pages: one client per process
(`st.cache_resource`), responses cached with a TTL (`st.cache_data`). Exceptions are never
cached, so a page recovers on the next rerun once the backend is back.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

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


# --- the last good answers, shown (marked stale) while the backend cannot be reached ------
STALE_KEY = "_stale_since"  # session state: when the oldest stale answer shown was fetched
LAST_GOOD_SIZE = 64  # answers kept (activations of a few images, lists, samples)
_last_good: OrderedDict[tuple, tuple[float, Any]] = OrderedDict()
_last_good_lock = threading.Lock()
F = TypeVar("F", bound=Callable[..., Any])


def forget_last_good() -> None:
    """Drop every remembered answer ("Refresh data", tests)."""
    with _last_good_lock:
        _last_good.clear()


def _stale_fallback(fn: F) -> F:
    """When the backend cannot be reached, answer with the last good answer to the same
    call (if any) and note its age in the session state, so the app can show a badge;
    every other error, and an unreachable backend with nothing remembered, is raised."""

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        key = (fn.__name__, args)
        try:
            value = fn(*args)
        except ApiError as error:
            with _last_good_lock:
                remembered = _last_good.get(key)
            if not error.unreachable or remembered is None:
                raise
            fetched, value = remembered
            try:
                since = st.session_state.get(STALE_KEY)
                st.session_state[STALE_KEY] = min(since, fetched) if since else fetched
            except Exception:  # noqa: BLE001 - outside a Streamlit run there is no session
                pass
            return value
        with _last_good_lock:
            _last_good[key] = (time.time(), value)
            _last_good.move_to_end(key)
            while len(_last_good) > LAST_GOOD_SIZE:
                _last_good.popitem(last=False)
        return value

    return wrapper  # type: ignore[return-value]


# --- Streamlit caches --------------------------------------------------------------------
def api_url() -> str:
    return os.environ.get(API_URL_ENV, DEFAULT_API_URL).rstrip("/")


@st.cache_resource
def get_client() -> SparlingClient:
    """One client per Streamlit process, configured from SPARLING_API_URL / SPARLING_API_KEY."""
    return SparlingClient(api_url(), os.environ.get(API_KEY_ENV) or None)


@_stale_fallback
@st.cache_data(ttl=TTL_LIST, show_spinner=False)
def list_models() -> dict:
    return get_client().models()


@_stale_fallback
@st.cache_data(ttl=TTL_LIST, show_spinner=False)
def get_model(model_id: str) -> dict:
    return get_client().model(model_id)


@_stale_fallback
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


@_stale_fallback
@st.cache_data(ttl=TTL_RESULT, show_spinner=False)
def _channels(model_id: str) -> dict:
    return _ready(get_client().channels(model_id, wait=0))


@_stale_fallback
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


@_stale_fallback
@st.cache_data(ttl=TTL_LIST, show_spinner=False)
def list_domains() -> dict:
    return get_client().domains()


@_stale_fallback
@st.cache_data(ttl=TTL_SAMPLE, show_spinner=False)
def get_sample(model_id: str, seed: int) -> dict:
    """A sample of the domain the model reads."""
    return get_client().sample(seed, model_id)


@_stale_fallback
@st.cache_data(ttl=TTL_RESULT, show_spinner="Running the model...")
def activations_for_sample(model_id: str, seed: int) -> dict:
    return get_client().activations(model_id, image=get_sample(model_id, seed)["image"])


@_stale_fallback
@st.cache_data(ttl=TTL_RESULT, show_spinner="Running the model...")
def activations_for_upload(model_id: str, name: str, data: bytes, mime: str, fit: str) -> dict:
    return get_client().activations(model_id, file=(name, data, mime), fit=fit)


@_stale_fallback
@st.cache_data(ttl=TTL_RESULT, show_spinner="Aligning motifs with the ground truth...")
def analysis_for_sample(model_id: str, seed: int) -> dict:
    return get_client().analysis(model_id, seed=seed)


@_stale_fallback
@st.cache_data(ttl=TTL_RESULT, show_spinner="Decoding with the edited motif map...")
def intervene_on_sample(model_id: str, seed: int, remove: tuple, add: tuple) -> dict:
    """`remove` / `add` are tuples of (channel, row, col[, value]) so they hash cheaply."""
    return get_client().intervene(
        model_id, seed=seed,
        remove=[{"channel": c, "row": r, "col": k} for c, r, k in remove],
        add=[{"channel": c, "row": r, "col": k, "value": v} for c, r, k, v in add])
