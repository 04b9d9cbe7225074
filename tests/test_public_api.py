"""README.md's "Use it from Python" section, run: every ```python block of it, in order,
from the repository root; the REST client's block against a live service on a free port.

    .venv/bin/python -m pytest tests/test_public_api.py
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "README.md"
SECTION = "## Use it from Python"
URL_IN_DOC = "http://127.0.0.1:8000"


def _section() -> str:
    """The README's Python API section: from its heading to the next level-2 heading."""
    text = DOC.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start:end if end >= 0 else len(text)]


def _blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", _section(), re.S | re.M)


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


# --- the API's edges, on the tests' tiny model -------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from helpers import shared_tiny_checkpoint

    from sparling_core import load_checkpoint

    return load_checkpoint(shared_tiny_checkpoint(tmp_path_factory)).model  # density 0.01


def test_images_in_every_form_give_the_same_result(tiny):
    import numpy as np
    import torch

    from sparling_core import get_domain, run, run_batch

    samples = [get_domain("digit-circle").sample(s) for s in (3, 4, 5)]
    stack = np.stack([s.image for s in samples]).astype(np.float32)
    expected = [r.records() for r in run_batch(tiny, stack)]
    assert expected[0], "the tiny model has some activations"
    for batch in (torch.from_numpy(stack), torch.from_numpy(stack)[:, None], list(stack),
                  samples, [s.image.tolist() for s in samples]):
        assert [r.records() for r in run_batch(tiny, batch)] == expected
    chunked = run_batch(tiny, stack, batch_size=2)  # 2 forward passes: the same up to float
    for r, e in zip(chunked, expected, strict=True):
        assert np.allclose(r.activations.value, [a["value"] for a in e], atol=1e-5)
    alone = run(tiny, samples[0]).records()  # a batch of one: the same up to float
    assert np.allclose([a["value"] for a in alone], [a["value"] for a in expected[0]],
                       atol=1e-5)
    for one in (samples[0].image, torch.from_numpy(stack[0])[None], stack[0].tolist()):
        assert run(tiny, one).records() == alone
    result = run(tiny, samples[0], dense=True)
    assert result == run(tiny, samples[0].image, dense=True) != run(tiny, samples[1], dense=True)
    assert np.array_equal(result.activations.to_dense(),
                          np.where(result.dense != 0, result.dense, 0))
    assert result.n_active == len(result.activations) == len(result.records())
    small = run(tiny, stack[0][10:-10, 5:-5], fit="pad")
    assert small.activations.shape == (10, 100, 100)
    with pytest.raises(ValueError, match="expected a 100x100 image, got 80x90"):
        run(tiny, stack[0][10:-10, 5:-5])
    with pytest.raises(ValueError, match="use run for one"):
        run_batch(tiny, stack[0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        run(tiny, stack[0] * 2)


def test_align_intervene_and_their_inputs(tiny):
    from sparling_core import SparseActivations, align, get_domain, intervene, run

    sample = get_domain("digit-circle").sample(3)
    by_sample = align(tiny, sample)
    by_image = align(tiny, sample.image, [m.to_dict() for m in sample.motifs],
                     label=sample.label)
    assert by_sample == by_image and len(by_sample.motifs) == len(sample.motifs)
    assert {m.status for m in by_sample.motifs} <= {"hit", "confused", "missed"}
    with pytest.raises(ValueError, match="motifs"):
        align(tiny, sample.image)

    acts = run(tiny, sample).activations
    first = acts.records()[0]
    removed = [intervene(tiny, sample, remove=r).removed for r in (
        acts.select(first["channel"]), [first], [(first["channel"], first["row"], first["col"])])]
    assert removed[1] == removed[2] == 1 and removed[0] == len(acts.select(first["channel"]))
    edit = intervene(tiny, sample.image, add=[(0, 50, 50, 5.0)])
    assert edit.added == 1 and (0, 50, 50) in zip(edit.activations_after.channel,
                                                  edit.activations_after.row,
                                                  edit.activations_after.col, strict=True)
    with pytest.raises(ValueError, match="channel, row, col, value"):
        intervene(tiny, sample, add=[(0, 50, 50)])
    with pytest.raises(ValueError, match="outside the map"):
        intervene(tiny, sample, remove=[(10, 0, 0)])
    empty = SparseActivations.from_records([], (10, 100, 100))
    assert len(empty) == 0 and not empty.to_dense().any()


def test_training_mode_and_bad_configs_are_refused(tiny, tmp_path):
    from sparling_core import get_domain, load_train_config, run

    tiny.train()
    try:
        with pytest.raises(ValueError, match="training mode"):
            run(tiny, get_domain("digit-circle").sample(1))
    finally:
        tiny.eval()
    with pytest.raises(ValueError, match="does not exist"):
        load_train_config(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text('{"batch_sise": 3}')
    with pytest.raises(ValueError, match="unknown training config keys"):
        load_train_config(tmp_path / "bad.json")
    config = load_train_config(ROOT / "configs" / "digit-circle-tiny.json", lr=0.5,
                               model={"motif_width": 4})
    assert config.lr == 0.5 and config.model.motif_width == 4 and config.model.d_model == 16
