"""Run by tests/test_backend_memory.py in a fresh process: send every kind of large image
through the app and print, as JSON, each status and the peak RSS growth over a warm
baseline (ru_maxrss: the high-water mark, so the last value bounds every request's peak).
Not a test module itself (no test_ prefix)."""

from __future__ import annotations

import gc
import io
import json
import resource
import sys
import time

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from backend.main import create_app
from backend.settings import Settings


def png(h: int, w: int, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (w, h), 0).save(buffer, format="PNG")
    return buffer.getvalue()


def npy(h: int, w: int) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((h, w), dtype=np.uint8))
    return buffer.getvalue()


def json_image(h: int, w: int) -> bytes:
    row = "[" + ",".join(["0"] * w) + "]"
    return ('{"image": [' + ",".join([row] * h) + "]}").encode()


CASES = [  # (name, kind, payload maker, fit)
    ("png 1-bit 1x4,000,000", "file", lambda: png(1, 4_000_000, "1"), "resize"),
    ("png 1-bit 4,000,000x1", "file", lambda: png(4_000_000, 1, "1"), "pad"),
    ("png 1x5,000", "file", lambda: png(1, 5_000), "resize"),
    ("png 400x10000", "file", lambda: png(400, 10_000, "1"), "none"),
    *[(f"png {h}x{w}", "file", (lambda h=h, w=w: png(h, w, "1")), fit)
      for h, w in ((400, 10_000), (10_000, 400), (2_000, 2_000)) for fit in ("pad", "resize")],
    ("npy 1000x1000", "file", lambda: npy(1000, 1000), "resize"),
    ("json 1x990,000", "json", lambda: json_image(1, 990_000), "resize"),
    *[(f"json {h}x{w}", "json", (lambda h=h, w=w: json_image(h, w)), fit)
      for h, w in ((100, 9_900), (9_900, 100)) for fit in ("pad", "resize")],
]


def main(checkpoints: str) -> None:
    settings = Settings(checkpoints=checkpoints)
    results = {}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        url = "/v1/models/tiny/activations"
        client.post(url, params={"fit": "resize"}, files={"file": ("a.png", png(50, 50))})
        gc.collect()
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for name, kind, make, fit in CASES:
            t0 = time.perf_counter()
            payload = make()
            if kind == "file":
                r = client.post(url, params={"fit": fit}, files={"file": ("x", payload)})
            else:
                r = client.post(url, params={"fit": fit}, content=payload,
                                headers={"content-type": "application/json"})
            del payload
            gc.collect()
            grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline
            results[f"{name} fit={fit}"] = {"status": r.status_code, "rss_mib": grown / 1024,
                                            "s": round(time.perf_counter() - t0, 2),
                                            "detail": r.json().get("detail") if
                                            r.status_code != 200 else None}
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
