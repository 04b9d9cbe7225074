"""A small HTTP client for the Sparling backend (REST under /v1), and its Streamlit caches.

`SparlingClient` knows nothing of Streamlit: every method returns the decoded JSON or raises
`ApiError` with a message a person can act on. The functions at the bottom wrap it for the
pages: one client per process (`st.cache_resource`), responses cached with a TTL
(`st.cache_data`). Exceptions are never cached, so a page recovers on the next rerun once
the backend is back.
"""

from __future__ import annotations

import os
from typing import Any

import requests
import streamlit as st

DEFAULT_API_URL = "http://127.0.0.1:8000"
API_URL_ENV = "SPARLING_API_URL"
API_KEY_ENV = "SPARLING_API_KEY"

# Seconds a cached response stays fresh. Lists and histories change while a run trains;
# samples are deterministic; model outputs only change when a checkpoint is replaced.
TTL_LIST = 30
TTL_RESULT = 300
TTL_SAMPLE = 3600


class ApiError(Exception):
    """A failed call: the backend is unreachable, timed out, or answered 4xx/5xx."""

    def __init__(self, message: str, *, url: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.url = url
        self.status = status

    @property
    def unreachable(self) -> bool:
        return self.status is None


def _detail(response: requests.Response) -> str:
    """The backend's {"detail": ...} as one line (FastAPI's 422 detail is a list)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason or "no detail"
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", []))
                parts.append(f"{where}: {item.get('msg', item)}" if where else str(item.get("msg")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


class SparlingClient:
    """Calls the backend's REST API. One `requests.Session` per client (keep-alive)."""

    def __init__(self, base_url: str = DEFAULT_API_URL, api_key: str | None = None,
                 timeout: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        if api_key:
            self._session.headers["X-API-Key"] = api_key

    def __repr__(self) -> str:
        return f"SparlingClient({self.base_url!r})"

    def _request(self, method: str, path: str, timeout: float | None = None,
                 **kwargs: Any) -> dict:
        url = f"{self.base_url}{path}"
        timeout = timeout or self.timeout
        try:
            response = self._session.request(method, url, timeout=timeout, **kwargs)
        except requests.Timeout:
            raise ApiError(f"The backend at {self.base_url} did not answer {method} {path} "
                           f"within {timeout:g} s.", url=url) from None
        except requests.ConnectionError:
            raise ApiError(f"Cannot reach the backend at {self.base_url} "
                           f"(connection failed for {method} {path}). Is it running?",
                           url=url) from None
        if response.status_code >= 400:
            raise ApiError(f"The backend answered {response.status_code} to {method} {path}: "
                           f"{_detail(response)}", url=url, status=response.status_code)
        try:
            return response.json()
        except ValueError:
            raise ApiError(f"The backend answered {method} {path} with something that is not "
                           f"JSON.", url=url, status=response.status_code) from None

    # --- service -----------------------------------------------------------------------
    def health(self) -> dict:
        return self._request("GET", "/v1/health", timeout=5)

    def ready(self) -> dict:
        return self._request("GET", "/v1/ready", timeout=5)

    # --- models ------------------------------------------------------------------------
    def models(self) -> dict:
        return self._request("GET", "/v1/models")

    def model(self, model_id: str) -> dict:
        return self._request("GET", f"/v1/models/{model_id}")

    def history(self, model_id: str) -> dict:
        return self._request("GET", f"/v1/models/{model_id}/history")

    def channels(self, model_id: str) -> dict:
        return self._request("GET", f"/v1/models/{model_id}/channels")

    def channel(self, model_id: str, channel: int) -> dict:
        return self._request("GET", f"/v1/models/{model_id}/channels/{int(channel)}")

    # --- inference ---------------------------------------------------------------------
    def activations(self, model_id: str, *, image: list[list[float]] | None = None,
                    file: tuple[str, bytes, str] | None = None, fit: str = "none",
                    dense: bool = False) -> dict:
        """Motifs for an image given as a nested list, or as an uploaded file
        (name, bytes, mime type) that the backend decodes (PNG / JPEG / NPY)."""
        if (image is None) == (file is None):
            raise ValueError("give exactly one of image= or file=")
        params = {"dense": str(bool(dense)).lower(), "fit": fit}
        path = f"/v1/models/{model_id}/activations"
        if file is not None:
            return self._request("POST", path, params=params, files={"file": file})
        return self._request("POST", path, params=params, json={"image": image})

    def domains(self) -> dict:
        return self._request("GET", "/v1/domains")

    def sample(self, seed: int, model_id: str | None = None, split: str = "train") -> dict:
        """A sample of the model's domain (DigitCircle without a model)."""
        path = (f"/v1/models/{model_id}/samples/{int(seed)}" if model_id is not None
                else f"/v1/samples/{int(seed)}")
        return self._request("GET", path, params={"split": split} if model_id else None)

    def analysis(self, model_id: str, *, seed: int | None = None,
                 image: list[list[float]] | None = None, motifs: list[dict] | None = None) -> dict:
        body: dict[str, Any] = {"seed": int(seed)} if seed is not None else {
            "image": image, "motifs": motifs or []}
        return self._request("POST", f"/v1/models/{model_id}/analysis", json=body)

    def intervene(self, model_id: str, *, seed: int | None = None,
                  image: list[list[float]] | None = None, remove: list[dict] | None = None,
                  add: list[dict] | None = None) -> dict:
        body: dict[str, Any] = {"seed": int(seed)} if seed is not None else {"image": image}
        body.update(remove=list(remove or []), add=list(add or []))
        return self._request("POST", f"/v1/models/{model_id}/intervene", json=body)


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


@st.cache_data(ttl=TTL_RESULT, show_spinner="Computing channel statistics...")
def get_channels(model_id: str) -> dict:
    return get_client().channels(model_id)


@st.cache_data(ttl=TTL_RESULT, show_spinner="Finding the top-activating crops...")
def get_channel(model_id: str, channel: int) -> dict:
    return get_client().channel(model_id, channel)


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
