"""`Client`: one method per route of the Sparling REST API (`/v1`), and `ApiError`.

The client knows nothing of torch or of the model code: images go out as nested lists (or
as uploaded PNG / JPEG / .npy files) and results come back as the service's JSON.
"""

from __future__ import annotations

import mimetypes
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeAlias

import requests

__all__ = ["ApiError", "Client", "DEFAULT_URL", "Json", "error_detail"]

DEFAULT_URL = "http://127.0.0.1:8000"

Json: TypeAlias = dict[str, Any]
"""A decoded JSON object, as the service answered it."""
Image: TypeAlias = Sequence[Sequence[float]] | Any
"""Rows of ink values in [0, 1] (1 = ink): nested lists, or anything with `.tolist()` (a numpy
array, a torch tensor)."""
Upload: TypeAlias = str | os.PathLike | tuple[str, bytes, str]
"""A file to upload: a path (PNG, JPEG or .npy), or (file name, bytes, MIME type)."""
Fit = Literal["none", "pad", "resize"]
Split = Literal["train", "val", "test"]
Edit: TypeAlias = Mapping[str, Any]
"""{"channel", "row", "col"} to remove, {"channel", "row", "col", "value"} to add."""


class ApiError(Exception):
    """A failed call: the service is unreachable, timed out, or answered 4xx / 5xx.

    `message` says what happened and carries the service's own explanation (its
    `{"detail": ...}`); `detail` is that explanation alone (None when it never answered),
    `status` the HTTP status (None when unreachable), `url` the URL called."""

    def __init__(self, message: str, *, url: str, status: int | None = None,
                 detail: str | None = None):
        super().__init__(message)
        self.message = message
        self.url = url
        self.status = status
        self.detail = detail

    @property
    def unreachable(self) -> bool:
        """True when the service never answered (connection refused, timeout)."""
        return self.status is None


def error_detail(response: requests.Response) -> str:
    """The service's {"detail": ...} of an error response as one line (FastAPI's 422 detail
    is a list of {"loc", "msg"})."""
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


def _image(image: Image) -> list:
    """Nested lists for JSON: numpy arrays and torch tensors through `.tolist()`."""
    tolist = getattr(image, "tolist", None)
    if callable(tolist):
        if hasattr(image, "detach"):  # a torch tensor that may need grad
            image = image.detach()
            tolist = image.tolist
        return tolist()
    return [list(row) for row in image]


def _upload(file: Upload) -> tuple[str, bytes, str]:
    if isinstance(file, tuple):
        return file
    path = Path(file)
    kind = ("application/octet-stream" if path.suffix.lower() == ".npy"
            else mimetypes.guess_type(path.name)[0] or "application/octet-stream")
    return path.name, path.read_bytes(), kind


def _bool(value: bool) -> str:
    return str(bool(value)).lower()


class Client:
    """Calls the Sparling REST API at `url` (e.g. http://127.0.0.1:8000). `api_key` is sent
    as `X-API-Key` (needed when the service sets SPARLING_API_KEY); `timeout` is in seconds
    per request. One `requests.Session` (keep-alive) per client; use it as a context
    manager or call `close()` to release it."""

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None,
                 timeout: float = 60.0):
        self.base_url = url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        if api_key:
            self._session.headers["X-API-Key"] = api_key

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying HTTP session (its kept-alive connections)."""
        self._session.close()

    def request(self, method: str, path: str, timeout: float | None = None,
                **kwargs: Any) -> Any:
        """One call: `path` under the base URL (e.g. "/v1/models"), keyword arguments as for
        `requests`. Returns the decoded JSON; raises ApiError."""
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
            detail = error_detail(response)
            raise ApiError(f"The backend answered {response.status_code} to {method} {path}: "
                           f"{detail}", url=url, status=response.status_code, detail=detail)
        try:
            return response.json()
        except ValueError:
            raise ApiError(f"The backend answered {method} {path} with something that is not "
                           f"JSON.", url=url, status=response.status_code) from None

    # --- service -------------------------------------------------------------------------
    def health(self) -> Json:
        """GET /v1/health: {"status": "ok"} while the process is up."""
        return self.request("GET", "/v1/health", timeout=5)

    def ready(self) -> Json:
        """GET /v1/ready: {"status": "ready", "models", "errors"}; ApiError 503 until a model
        has loaded."""
        return self.request("GET", "/v1/ready", timeout=5)

    def wait_until_ready(self, timeout: float = 60.0, interval: float = 0.3) -> Json:
        """Poll /v1/ready until it answers 200 (a service that is starting); the last
        ApiError when it does not within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.ready()
            except ApiError:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(interval)

    # --- models --------------------------------------------------------------------------
    def models(self) -> Json:
        """GET /v1/models: {"models": [{id, domain, sparsity, density, samples_seen,
        parameters, metrics}], "default", "errors"}."""
        return self.request("GET", "/v1/models")

    def model(self, model_id: str) -> Json:
        """GET /v1/models/{id}: config, training config, metrics, vocabulary, symbols,
        channel -> symbol assignment and confusion table."""
        return self.request("GET", f"/v1/models/{model_id}")

    def history(self, model_id: str) -> Json:
        """GET /v1/models/{id}/history: {"history": [one row per validation]}."""
        return self.request("GET", f"/v1/models/{model_id}/history")

    def _summaries(self, path: str, wait: float) -> Json:
        """GET a channel summary route; while the service answers `status: "computing"`,
        poll it (each call waits at most 30 s on the server) until `wait` s have passed."""
        deadline = time.monotonic() + wait
        while True:
            left = max(0.0, deadline - time.monotonic())
            body = self.request("GET", path, params={"wait": round(min(left, 30.0), 3)},
                                timeout=self.timeout + min(left, 30.0))
            if not (isinstance(body, dict) and body.get("status") == "computing") or not left:
                return body

    def channels(self, model_id: str, wait: float = 600.0) -> Json:
        """GET /v1/models/{id}/channels: {"status": "ready", "progress", "channels":
        [{channel, symbol, density, histogram, median, precision, effect}]} over validation
        images. The service computes them once per model (at start-up, in the background);
        until they are ready it answers {"status": "computing", "progress": {done, total}},
        which this method polls for up to `wait` seconds (0: return it at once)."""
        return self._summaries(f"/v1/models/{model_id}/channels", wait)

    def channel(self, model_id: str, channel: int, wait: float = 600.0) -> Json:
        """GET /v1/models/{id}/channels/{c}: one channel's summary and its crops
        (top_crops, middle_crops, outside_crops); `wait` as for `channels`."""
        return self._summaries(f"/v1/models/{model_id}/channels/{int(channel)}", wait)

    # --- domains and samples -------------------------------------------------------------
    def domains(self) -> Json:
        """GET /v1/domains: {"domains": [{name, image_shape, vocabulary, symbols, ...}]}."""
        return self.request("GET", "/v1/domains")

    def sample(self, seed: int, model_id: str | None = None, split: Split = "train", *,
               domain: str | None = None) -> Json:
        """A sample (image, png_base64, label, motifs): of the model's domain with
        `model_id` (GET /v1/models/{id}/samples/{seed}), of a named `domain` (GET
        /v1/domains/{domain}/samples/{seed}), else DigitCircle's (GET /v1/samples/{seed})."""
        if model_id is not None and domain is not None:
            raise ValueError("give model_id= or domain=, not both")
        if model_id is not None:
            return self.request("GET", f"/v1/models/{model_id}/samples/{int(seed)}",
                                params={"split": split})
        if domain is not None:
            return self.request("GET", f"/v1/domains/{domain}/samples/{int(seed)}",
                                params={"split": split})
        return self.request("GET", f"/v1/samples/{int(seed)}")

    # --- inference -----------------------------------------------------------------------
    def activations(self, model_id: str, *, image: Image | None = None,
                    file: Upload | None = None, fit: Fit = "none",
                    dense: bool = False) -> Json:
        """POST /v1/models/{id}/activations for one image, given as rows of ink values
        (`image=`) or as a file the service decodes (`file=`: a path or (name, bytes, MIME
        type); PNG, JPEG or .npy). Returns {"activations": [{channel, row, col, value}],
        "tokens", "sequence", "probabilities", "n_active", "density", ...}; the whole
        C x H x W map as "dense" when `dense`."""
        if (image is None) == (file is None):
            raise ValueError("give exactly one of image= or file=")
        params = {"dense": _bool(dense), "fit": fit}
        path = f"/v1/models/{model_id}/activations"
        if file is not None:
            return self.request("POST", path, params=params, files={"file": _upload(file)})
        return self.request("POST", path, params=params, json={"image": _image(image)})

    def activations_batch(self, model_id: str, images: Sequence[Image], *,
                          fit: Fit = "none", dense: bool = False) -> Json:
        """POST /v1/models/{id}/activations/batch: up to 32 images; {"results": [one
        activations result per image]}."""
        return self.request("POST", f"/v1/models/{model_id}/activations/batch",
                            params={"dense": _bool(dense), "fit": fit},
                            json={"images": [_image(i) for i in images]})

    def analysis(self, model_id: str, *, seed: int | None = None, image: Image | None = None,
                 motifs: Sequence[Mapping[str, Any]] | None = None,
                 label: Sequence[str] | None = None, split: Split | None = None) -> Json:
        """POST /v1/models/{id}/analysis: a sample of the model's domain by `seed` (and
        `split`), or an `image` with its `motifs` ([{"symbol", "box"}], e.g. a sample's) and
        optional `label`.
        Returns each motif's status (hit / confused / missed), the false positives and the
        per-image FPE / FNE / CE (percent)."""
        if (seed is None) == (image is None):
            raise ValueError("give exactly one of seed= or image=")
        body: dict[str, Any]
        if seed is not None:
            body = {"seed": int(seed)}
            if split is not None:
                body["split"] = split
        else:
            # only what the service reads: a sample's motifs also carry their centre
            body = {"image": _image(image), "motifs": [
                {k: m[k] for k in ("symbol", "digit", "box") if k in m} for m in motifs or []]}
            if label is not None:
                body["label"] = list(label)
        return self.request("POST", f"/v1/models/{model_id}/analysis", json=body)

    def intervene(self, model_id: str, *, seed: int | None = None, image: Image | None = None,
                  remove: Sequence[Edit] | None = None, add: Sequence[Edit] | None = None,
                  split: Split | None = None) -> Json:
        """POST /v1/models/{id}/intervene: zero the `remove` entries ({"channel", "row",
        "col"}) and set the `add` entries ({..., "value" > 0}) of the sparse map of a seed's
        sample or an image, and decode again: {"before", "after", "removed", "added",
        "activations_after"}."""
        if (seed is None) == (image is None):
            raise ValueError("give exactly one of seed= or image=")
        body: dict[str, Any] = {"seed": int(seed)} if seed is not None else {
            "image": _image(image)}
        if seed is not None and split is not None:
            body["split"] = split
        body.update(remove=[dict(e) for e in remove or []], add=[dict(e) for e in add or []])
        return self.request("POST", f"/v1/models/{model_id}/intervene", json=body)
