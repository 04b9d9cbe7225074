"""Issue 16, item 12: scripts/install_torch.sh takes torch's CPU build from PyTorch's CPU
index, falls back within seconds to the configured index where that index is unreachable,
and installs the CUDA build only when asked (SPARLING_TORCH=cuda). A stub python records
the pip calls instead of installing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(tmp_path: Path, cpu_index_works: bool, **env) -> tuple[int, list[list[str]], str]:
    log = tmp_path / "calls"
    stub = tmp_path / "python"
    stub.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {log}
if [[ "$*" == *download.pytorch.org* ]] && [ "{int(cpu_index_works)}" = 0 ]; then exit 1; fi
exit 0
""")
    stub.chmod(0o755)
    result = subprocess.run(["bash", str(ROOT / "scripts" / "install_torch.sh"), str(stub)],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, **env})
    calls = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    return result.returncode, calls, result.stderr


def _version() -> str:
    (line,) = [ln for ln in (ROOT / "requirements" / "backend.txt").read_text().splitlines()
               if ln.startswith("torch==")]
    return line.split("==")[1]


def test_cpu_by_default_from_the_cpu_index_alone(tmp_path):
    code, calls, _ = run(tmp_path, cpu_index_works=True)
    assert code == 0 and len(calls) == 1
    call = calls[0]
    assert call[:3] == ["-m", "pip", "install"] and f"torch=={_version()}" in call
    assert call[call.index("--index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    assert "--extra-index-url" not in call and "--no-deps" in call  # one page fetched
    assert call[call.index("--retries") + 1] == "0"
    assert int(call[call.index("--timeout") + 1]) <= 10  # an unreachable index fails fast


def test_falls_back_to_the_configured_index_when_the_cpu_index_is_unreachable(tmp_path):
    code, calls, stderr = run(tmp_path, cpu_index_works=False)
    assert code == 0 and len(calls) == 2
    assert calls[1] == ["-m", "pip", "install", "-q", f"torch=={_version()}"]
    assert "unreachable" in stderr


def test_cuda_when_asked(tmp_path):
    code, calls, _ = run(tmp_path, cpu_index_works=True, SPARLING_TORCH="cuda")
    assert code == 0 and calls == [["-m", "pip", "install", "-q", f"torch=={_version()}"]]


@pytest.mark.parametrize("value", ["gpu", "rocm"])
def test_unknown_variants_are_refused(tmp_path, value):
    code, calls, stderr = run(tmp_path, cpu_index_works=True, SPARLING_TORCH=value)
    assert code == 2 and not calls and "cpu or cuda" in stderr


def test_the_locks_match_this_environment():
    """requirements/*.txt are what this environment has installed (install.sh builds it
    from requirements/dev.txt): a dependency change without `scripts/lock.py` fails here."""
    import sys

    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "lock.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
