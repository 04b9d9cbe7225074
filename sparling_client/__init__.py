"""A Python client for the Sparling Motif Explorer REST API (`/v1`).

Needs only `requests` (`pip install "sparling-motif-explorer[client]"`); no torch, no model
code. Every method returns the service's JSON as Python objects, or raises `ApiError` with
the service's own message.

    from sparling_client import ApiError, Client

    client = Client("http://127.0.0.1:8000")
    client.wait_until_ready()
    result = client.activations("digit-circle-mt", image=client.sample(7)["image"])
    result["tokens"], result["activations"]
"""

from .client import DEFAULT_URL, ApiError, Client, Json, error_detail

__all__ = ["ApiError", "Client", "DEFAULT_URL", "Json", "error_detail"]
