"""docs/python-api.md, run: every ```python block of the Python API section, in order, from
the repository root; the REST client's block against a live service on a free port.

    .venv/bin/python -m pytest tests/test_public_api.py
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "python-api.md"
URL_IN_DOC = "http://127.0.0.1:8000"


def _blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", DOC.read_text(), re.S | re.M)


def _library_blocks() -> list[str]:
    return [b for b in _blocks() if "sparling_client" not in b]


def _client_blocks() -> list[str]:
    return [b for b in _blocks() if "sparling_client" in b]


def _imports(code: str) -> list[tuple[str, str]]:
    """(module, name) of every `from module import name` in a block."""
    return [(node.module or "", alias.name) for node in ast.walk(ast.parse(code))
            if isinstance(node, ast.ImportFrom) for alias in node.names]


def test_the_doc_has_every_example():
    library = "\n".join(_library_blocks())
    for name in ("load_checkpoint", "run", "run_batch", "align", "intervene", "evaluate",
                 "train_from_config"):
        assert re.search(rf"\b{name}\(", library), f"no example calls {name}"
    assert _client_blocks(), "no example of the REST client"


def test_the_doc_imports_only_documented_names():
    import sparling_client
    import sparling_core
    from sparling_core import api

    packages = {"sparling_core": sparling_core, "sparling_client": sparling_client}
    documented = [(packages[module], name) for block in _blocks()
                  for module, name in _imports(block) if module in packages]
    assert {p.__name__ for p, _ in documented} == set(packages)
    for package, name in documented:
        assert name in package.__all__, f"{package.__name__}.{name} is not in __all__"
    for package in (sparling_core, sparling_client):
        assert all(not name.startswith("_") for name in package.__all__)
    # the new API in full: exported, and every function and class documented
    assert set(api.__all__) <= set(sparling_core.__all__)
    for package, names in ((sparling_core, api.__all__), (sparling_client,
                                                          sparling_client.__all__)):
        for name in names:
            obj = getattr(package, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                assert inspect.getdoc(obj), f"{package.__name__}.{name} has no docstring"
                for attr, member in vars(obj).items() if inspect.isclass(obj) else ():
                    if inspect.isfunction(member) and not attr.startswith("_"):
                        assert inspect.getdoc(member), f"{name}.{attr} has no docstring"


@pytest.fixture
def one_thread():
    """torch on one thread (shared CI cores; many threads contend), restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_library_examples_run(tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(ROOT)  # the examples name checkpoints/ and configs/ relatively
    namespace: dict = {"__name__": "python_api_doc"}
    for i, block in enumerate(_library_blocks()):
        # write training runs to the test's folder, not the repository's runs/
        code = block.replace('"runs/', f'"{tmp_path}/')
        exec(compile(code, f"{DOC.name} block {i + 1}", "exec"), namespace)  # noqa: S102
    # what the comments in the doc promise
    assert namespace["result"].tokens == namespace["sample"].label
    assert namespace["edit"].changed
    assert namespace["trained"].meta["samples_seen"] == 64
    assert Path(namespace["trained"].path).is_relative_to(tmp_path)


def test_client_examples_run(shipped_service, capsys):
    for i, block in enumerate(_client_blocks()):
        assert URL_IN_DOC in block
        code = block.replace(URL_IN_DOC, shipped_service)
        exec(compile(code, f"{DOC.name} client block {i + 1}", "exec"),  # noqa: S102
             {"__name__": "python_api_doc"})
    out = capsys.readouterr().out
    assert "['digit-circle-mt']" in out
    assert "404 unknown model 'no-such-model'" in out
