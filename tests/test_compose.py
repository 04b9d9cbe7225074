"""docker-compose.yml and the Dockerfiles, checked without a Docker engine: the YAML is
parsed, the two services wired as the README says, the healthcheck commands actually run
against a local HTTP server, and the Dockerfiles copy what exists and install pinned torch.
`docker compose config` is used as well where the compose plugin is installed."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def dockerfile(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined, current = [], ""
    for line in (ROOT / name).read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        joined.append(current + stripped)
        current = ""
    assert not current, f"{name} ends inside a continued line"
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "")
            for ln in joined]


def instructions(name: str, kind: str) -> list[str]:
    return [args for inst, args in dockerfile(name) if inst == kind]


def exec_form(args: str) -> list[str]:
    """The JSON (exec) form of CMD / HEALTHCHECK CMD."""
    return json.loads(args)


def torch_pin() -> str:
    (pin,) = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch")]
    return pin


# --- docker-compose.yml ----------------------------------------------------------------------
def test_services_and_builds(compose):
    assert set(compose["services"]) == {"backend", "frontend"}
    for service, file in (("backend", "Dockerfile.backend"), ("frontend", "Dockerfile.frontend")):
        build = compose["services"][service]["build"]
        assert build["dockerfile"] == file and (ROOT / build.get("context", ".") / file).is_file()


def _published(service: dict) -> list[tuple[str, int, int]]:
    out = []
    for port in service["ports"]:
        parts = str(port).split(":")
        host_ip = parts[0] if len(parts) == 3 else ""
        out.append((host_ip, int(parts[-2]), int(parts[-1])))
    return out


def test_ports_are_published_on_localhost(compose):
    assert _published(compose["services"]["backend"]) == [("127.0.0.1", 8000, 8000)]
    assert _published(compose["services"]["frontend"]) == [("127.0.0.1", 8501, 8501)]


def test_backend_mounts_checkpoints_read_only(compose):
    backend = compose["services"]["backend"]
    assert "./checkpoints:/app/checkpoints:ro" in backend["volumes"]
    assert backend["environment"]["SPARLING_CHECKPOINTS"] == "/app/checkpoints"


def test_frontend_waits_for_a_healthy_backend(compose):
    frontend = compose["services"]["frontend"]
    assert frontend["environment"]["SPARLING_API_URL"] == "http://backend:8000"
    assert frontend["depends_on"] == {"backend": {"condition": "service_healthy"}}
    assert "volumes" not in frontend  # the app needs no checkpoints, only the API


def test_api_key_is_passed_through_not_hard_coded(compose):
    for service in compose["services"].values():
        assert service["environment"]["SPARLING_API_KEY"] == "${SPARLING_API_KEY:-}"


class _Health(BaseHTTPRequestHandler):
    ok_paths = {"/v1/health", "/_stcore/health"}

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        status = 200 if self.path in self.ok_paths else 404
        body = b'{"status":"ok"}' if status == 200 else b"{}"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def health_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def _run_healthcheck(test: list[str], container_port: int, port: int) -> int:
    """Run a compose / Dockerfile healthcheck here, aimed at a local port instead."""
    assert test[0] in ("CMD", "python"), test
    argv = test[1:] if test[0] == "CMD" else test
    assert argv[0] == "python", "the slim images have python but no curl or wget"
    argv = [sys.executable] + [a.replace(f"127.0.0.1:{container_port}", f"127.0.0.1:{port}")
                               for a in argv[1:]]
    return subprocess.run(argv, capture_output=True, timeout=30).returncode


@pytest.mark.parametrize("service, port, path", [("backend", 8000, "/v1/health"),
                                                 ("frontend", 8501, "/_stcore/health")])
def test_healthchecks_run_and_detect_failure(compose, health_server, service, port, path):
    check = compose["services"][service]["healthcheck"]
    assert path in " ".join(check["test"])
    assert not any("curl" in part or "wget" in part for part in check["test"])
    assert _run_healthcheck(check["test"], port, health_server) == 0
    # a server that answers 404 on that path, and no server at all, both fail the check
    _Health.ok_paths = {"/elsewhere"}
    try:
        assert _run_healthcheck(check["test"], port, health_server) != 0
    finally:
        _Health.ok_paths = {"/v1/health", "/_stcore/health"}
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert _run_healthcheck(check["test"], port, closed) != 0
    for key in ("interval", "timeout", "retries"):
        assert key in check


def test_docker_compose_config_when_available():
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client here; the static checks above still ran")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the docker client has no compose plugin (`docker compose` is unknown); "
                    "the static checks above still ran")
    result = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr


# --- Dockerfiles ---------------------------------------------------------------------------
DOCKERFILES = {"Dockerfile.backend": ("serve", 8000, "/v1/health"),
               "Dockerfile.frontend": ("app", 8501, "/_stcore/health")}


CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"


def lock(name: str) -> dict[str, str]:
    """requirements/NAME.txt as {package: version}."""
    pins = {}
    for line in (ROOT / "requirements" / f"{name}.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            package, _, version = line.partition("==")
            assert version, f"requirements/{name}.txt: {line!r} is not pinned"
            pins[package] = version
    return pins


def test_backend_image_torch_cpu_first_then_the_lock_then_the_package():
    assert instructions("Dockerfile.backend", "FROM") == ["python:3.11-slim"]
    runs = instructions("Dockerfile.backend", "RUN")
    pin = torch_pin()
    assert pin == f"torch=={lock('backend')['torch']}"  # the lock agrees with pyproject
    torch_runs = [r for r in runs if "torch" in r]
    assert torch_runs == [f"pip install --no-deps {pin} {CPU_INDEX}"]
    locked = runs.index("pip install -r requirements/backend.txt")
    package = runs.index("pip install --no-deps .")
    assert runs.index(torch_runs[0]) < locked < package, (
        "torch (CPU wheel) first, or the lock's torch==2.13.0 pulls the CUDA one")


def test_frontend_image_has_its_own_lock_and_no_library():
    assert instructions("Dockerfile.frontend", "FROM") == ["python:3.11-slim"]
    text = (ROOT / "Dockerfile.frontend").read_text()
    assert "torch" not in "\n".join(instructions("Dockerfile.frontend", "RUN"))
    assert instructions("Dockerfile.frontend", "RUN")[0] == \
        "pip install -r requirements/frontend.txt"
    copies = [args.split()[0] for args in instructions("Dockerfile.frontend", "COPY")]
    # the app and the REST client it imports (requests only), never the library
    assert copies == ["requirements/frontend.txt", "sparling_client", "frontend"], copies
    assert "sparling_core" not in text and "pyproject" not in text
    pins = lock("frontend")
    assert "torch" not in pins and not any(p.startswith("nvidia") for p in pins)


def _frontend_imports() -> set[str]:
    import ast

    names = set()
    for path in (ROOT / "frontend").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_the_frontend_lock_covers_everything_the_frontend_imports():
    from importlib.metadata import packages_distributions

    from packaging.utils import canonicalize_name

    dists = packages_distributions()
    pins = {canonicalize_name(p) for p in lock("frontend")}
    own = {"frontend", "sparling_client"}  # copied into the image, not installed
    for module in sorted(_frontend_imports() - own - set(sys.stdlib_module_names)):
        owners = {canonicalize_name(d) for d in dists.get(module, [])}
        assert owners & pins, f"frontend imports {module}, which requirements/frontend.txt " \
                              f"lacks ({sorted(owners) or 'not installed'})"
        assert module not in ("torch", "sparling_core", "backend"), module


@pytest.mark.parametrize("lock_name, extras", [("backend", ["serve"]), ("frontend", ["app"]),
                                               ("dev", ["serve", "app", "dev"])])
def test_locks_pin_every_declared_dependency_within_its_range(lock_name, extras):
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {canonicalize_name(p): v for p, v in lock(lock_name).items()}
    declared = [] if lock_name == "frontend" else list(PYPROJECT["project"]["dependencies"])
    for extra in extras:
        declared += PYPROJECT["project"]["optional-dependencies"][extra]
    for text in declared:
        req = Requirement(text)
        version = pins.get(canonicalize_name(req.name))
        assert version is not None, f"requirements/{lock_name}.txt lacks {req.name}"
        assert req.specifier.contains(version, prereleases=True), (req, version)


def test_install_script_uses_the_lock_and_torch_cpu_first():
    script = (ROOT / "scripts" / "install.sh").read_text()
    assert "-r requirements/dev.txt" in script
    assert script.index("install_torch.sh") < script.index("-r requirements/dev.txt")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_runs_as_non_root(name):
    users = instructions(name, "USER")
    assert users and users[-1] not in ("root", "0")
    assert any("useradd" in r and users[-1] in r for r in instructions(name, "RUN"))


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_copies_what_exists_and_is_not_ignored(name):
    ignored = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
    for args in instructions(name, "COPY"):
        *sources, _dest = args.split()
        for source in sources:
            assert (ROOT / source).exists(), f"{name}: COPY {source}: no such path"
            assert source not in ignored, f"{name}: COPY {source}, but .dockerignore drops it"
    for needed in (".venv", ".git", "checkpoints", "runs", "test-artifacts"):
        assert needed in ignored, f".dockerignore should keep {needed} out of the build context"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_port_command_and_healthcheck(name, health_server):
    _extra, port, path = DOCKERFILES[name]
    assert instructions(name, "EXPOSE") == [str(port)]
    (cmd,) = instructions(name, "CMD")
    argv = exec_form(cmd)
    assert "--port" in argv or "--server.port" in argv
    assert str(port) in argv and "0.0.0.0" in argv  # reachable from the other container
    if name == "Dockerfile.backend":
        assert argv[:2] == ["uvicorn", "backend.main:app"]
        assert (ROOT / "backend" / "main.py").is_file()
    else:
        assert argv[:3] == ["streamlit", "run", "frontend/streamlit_app.py"]
        assert (ROOT / "frontend" / "streamlit_app.py").is_file()
    (health,) = instructions(name, "HEALTHCHECK")
    options, _, command = health.partition(" CMD ")
    assert re.search(r"--interval=\d+s", options) and path in command
    assert _run_healthcheck(["CMD", *exec_form(command)], port, health_server) == 0
