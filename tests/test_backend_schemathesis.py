"""Property-based run over the OpenAPI schema (schemathesis): no input gives a 5xx.

Bounded: MAX_EXAMPLES valid and MAX_EXAMPLES invalid requests per operation. Three cases in
four go to the loaded model (real inference on generated bodies); the rest keep their
generated model id (the 404 paths).

schemathesis's own pytest loader (`schemathesis.pytest.from_fixture`) does not run on
pytest 9 (it sets `node._nodeid`), so operations are parametrized here and each one's
hypothesis strategy comes from schemathesis's Python API.
"""

from __future__ import annotations

import pathlib
import shutil
import sys
import zlib

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from helpers import shared_tiny_checkpoint  # noqa: E402

from backend.main import create_app  # noqa: E402
from backend.settings import Settings  # noqa: E402

MAX_EXAMPLES = 15
# The schema does not depend on loaded models: read the operations without loading any.
_PATHS = create_app(Settings(checkpoints="-")).openapi()["paths"]
OPERATIONS = [(method.upper(), path, "parameters" in op or "requestBody" in op)
              for path, methods in _PATHS.items() for method, op in methods.items()]
CASES = [pytest.param(method, path, mode, id=f"{name}-{method} {path}")
         for method, path, has_inputs in OPERATIONS
         for mode, name in [(schemathesis.GenerationMode.POSITIVE, "valid"),
                            (schemathesis.GenerationMode.NEGATIVE, "invalid")]
         if has_inputs or mode is schemathesis.GenerationMode.POSITIVE]  # nothing to break


@pytest.fixture(scope="module")
def api_app(tmp_path_factory):
    shared = shared_tiny_checkpoint(tmp_path_factory)
    root = tmp_path_factory.mktemp("fuzz-checkpoints")
    shutil.copytree(shared, root / "tiny")
    (root / "broken").mkdir()
    app = create_app(Settings(checkpoints=root, channel_summary_n=3))
    with TestClient(app):  # runs the lifespan: models load
        yield app


@pytest.fixture(scope="module")
def api_schema(api_app):
    return schemathesis.openapi.from_asgi("/openapi.json", api_app)


def test_operations_are_all_covered():
    # 12 before the domain routes: /v1/domains, a domain's samples and a model's samples
    assert len(OPERATIONS) == 15


@pytest.mark.parametrize("method, path, mode", CASES)
def test_no_server_errors(api_schema, method, path, mode):
    operation = api_schema[path][method]
    seen = []

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def check(case):
        params = case.path_parameters or {}
        draw = zlib.crc32(repr((params, case.query, case.body)).encode())
        if "model_id" in params and draw % 4:
            case.path_parameters["model_id"] = "tiny"
            if "/activations" in path and "fit" not in (case.query or {}):
                # generated images rarely have the model's size: let most of them through
                case.query = {**(case.query or {}), "fit": ("resize", "pad", "none")[draw % 3]}
        response = case.call()
        seen.append(response.status_code)
        assert response.status_code < 500, (case.method, case.formatted_path, case.query,
                                            repr(case.body)[:300], response.text[:500])

    check()
    assert seen  # something was sent
