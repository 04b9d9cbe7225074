"""docker-compose.scale.yml (several backend replicas behind nginx), checked without a
Docker engine: parsed, wired as docs/scale-out.md says, and kept in step with
docker-compose.yml where the two describe the same thing."""

from __future__ import annotations

from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def scaled() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.scale.yml").read_text())


@pytest.fixture(scope="module")
def single() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_replicas_have_no_host_port_and_the_balancer_has_the_api_port(scaled):
    backend, lb = scaled["services"]["backend"], scaled["services"]["lb"]
    assert "ports" not in backend and "container_name" not in backend  # --scale needs both
    assert backend["expose"] == ["8000"]
    assert lb["ports"] == ["127.0.0.1:8000:8000"]
    assert lb["depends_on"] == {"backend": {"condition": "service_healthy"}}
    frontend = scaled["services"]["frontend"]
    assert frontend["environment"]["SPARLING_API_URL"] == "http://lb:8000"
    assert frontend["depends_on"] == {"lb": {"condition": "service_healthy"}}


def test_shared_parts_match_the_single_replica_file(scaled, single):
    for service in ("backend", "frontend"):
        a, b = scaled["services"][service], single["services"][service]
        for key in ("build", "image", "volumes", "healthcheck", "restart"):
            assert a.get(key) == b.get(key), (service, key)
        extra = set(a["environment"]) - set(b["environment"])
        assert extra <= {"OMP_NUM_THREADS"}
        for key in set(b["environment"]) - {"SPARLING_API_URL"}:
            assert a["environment"][key] == b["environment"][key], (service, key)


def test_nginx_config_points_at_the_backend_service(scaled):
    volume = scaled["services"]["lb"]["volumes"][0]
    source = ROOT / volume.split(":")[0]
    text = source.read_text()
    assert "server backend:8000;" in text and "proxy_pass http://sparling_backend;" in text
    assert "listen 8000;" in text and "location = /lb-health" in text
    assert text.count("{") == text.count("}")
