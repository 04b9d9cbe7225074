"""backend/batching.py: concurrent single-image requests share forwards and get exactly
what each gets alone, in-process and over HTTP (a real uvicorn, 2 torch threads: with
several threads a batched matrix multiply may split its sums differently)."""

from __future__ import annotations

import pathlib
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from helpers import shared_tiny_checkpoint, tiny_config  # noqa: E402

from backend.batching import Batcher  # noqa: E402
from backend.errors import ResponseTooLarge  # noqa: E402
from backend.process import free_port, start_server, stop_server  # noqa: E402
from backend.store import ModelStore, count_values  # noqa: E402
from sparling_core.analysis.inspect import run_images  # noqa: E402
from sparling_core.domains import digit_circle as dc  # noqa: E402

N = 8


def _images(n: int = N) -> list[np.ndarray]:
    return [dc.sample(500_000 + i).image.astype(np.float32) for i in range(n)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("batching-checkpoints")
    shutil.copytree(shared_tiny_checkpoint(tmp_path_factory), root / "tiny")
    return root


@pytest.fixture
def loaded(checkpoints):
    model = ModelStore.load(checkpoints).get("tiny")
    yield model
    model.batcher.close()


def _wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _concurrently(fn, args: list) -> list:
    start = threading.Barrier(len(args))

    def call(a):
        start.wait()
        return fn(*a)

    with ThreadPoolExecutor(len(args)) as pool:
        return list(pool.map(call, args))


def test_concurrent_requests_are_batched_and_equal_alone(loaded):
    images = _images()
    dense = [i % 3 == 0 for i in range(N)]
    alone = [loaded.batcher.submit(image, d) for image, d in zip(images, dense, strict=True)]
    stats = loaded.batcher.stats
    assert stats.largest == 1 and stats.forwards == N
    # hold the model while the requests arrive, so that they queue up behind the first
    with loaded.lock:
        results: list = []
        runner = threading.Thread(target=lambda: results.extend(
            _concurrently(loaded.batcher.submit, list(zip(images, dense, strict=True)))))
        runner.start()
        _wait_for(lambda: loaded.batcher.pending() == N)
    runner.join(60)
    assert results == alone  # bit for bit, dense maps included where asked
    assert [r["dense"] is not None for r in results] == dense
    assert stats.forwards - N <= 2 and stats.largest >= N // 2  # 1 + 7, 3 + 5, ...
    # the sparse maps are the unbatched path's for one image (motif maps are computed one
    # image at a time: the tiny model is small enough for torch to pick another
    # convolution kernel for a lone image than for several)
    direct = [run_images(loaded.model, image[None])[0] for image in images]
    assert [r["activations"] for r in results] == [r["activations"] for r in direct]


def test_batch_limits_and_a_bad_image_fails_alone(loaded):
    batcher = Batcher(loaded.run, max_batch=3, max_wait_s=0.05, name="small")
    try:
        images = _images(6)
        images[4] = np.zeros((7, 7), dtype=np.float32)  # not the model's shape
        outcomes = []

        def call(image):
            try:
                return batcher.submit(image)
            except ValueError as e:
                return e

        with loaded.lock:
            runner = threading.Thread(target=lambda: outcomes.extend(
                _concurrently(call, [(image,) for image in images])))
            runner.start()
            _wait_for(lambda: batcher.pending() == 6)
        runner.join(60)
        assert isinstance(outcomes[4], ValueError)
        good = [i for i in range(6) if i != 4]
        assert all(isinstance(outcomes[i], dict) for i in good)
        assert batcher.stats.largest <= 3
        assert [outcomes[i] for i in good] == [loaded.batcher.submit(images[i]) for i in good]
    finally:
        batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(images[0])


def test_the_response_cap_applies_to_each_batched_answer(loaded):
    """The server's cap on the values of one response (SPARLING_MAX_RESPONSE_VALUES) holds
    for each request of a batch, not for the batch: a batch of small answers is not one
    large answer. (It once counted every image of a batch as asking for its dense map, so
    every batch failed and was retried one image at a time: no batching over HTTP.)"""
    images = _images(4)
    dense = [True, False, True, False]
    alone = [loaded.batcher.submit(image, d) for image, d in zip(images, dense, strict=True)]
    loaded.max_response_values = max(count_values(r, 10**9) for r in alone)  # one fits
    config = loaded.checkpoint.config
    assert 2 * config.motif_channels * images[0].size > loaded.max_response_values
    stats = loaded.batcher.stats
    forwards = stats.forwards
    with loaded.lock:
        results: list = []
        runner = threading.Thread(target=lambda: results.extend(
            _concurrently(loaded.batcher.submit, list(zip(images, dense, strict=True)))))
        runner.start()
        _wait_for(lambda: loaded.batcher.pending() == 4)
    runner.join(60)
    assert results == alone
    assert stats.forwards - forwards <= 2 and stats.largest >= 2
    loaded.max_response_values = config.motif_channels * images[0].size - 1
    with pytest.raises(ResponseTooLarge, match="dense maps"):
        loaded.batcher.submit(images[0], True)
    assert loaded.batcher.submit(images[0], False) == {**alone[0], "dense": None}  # sparse: fits


def _echo(calls: list):
    """A stub runner: one answer per image (its first pixel), no model."""
    def run(fn, images, dense, **kwargs):
        calls.append(len(images))
        if calls[0] == "die":
            raise SystemExit("stub")
        return [{"first": float(image[0, 0]), "dense": d}
                for image, d in zip(images, dense, strict=True)]
    return run


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_compute_thread_fails_its_requests_and_is_replaced():
    calls: list = ["die"]
    batcher = Batcher(_echo(calls), max_batch=4, max_wait_s=0.0, name="stub")
    try:
        with pytest.raises(RuntimeError, match="compute thread stopped"):
            batcher.submit(np.ones((2, 2), np.float32))  # answered, not left waiting
        calls[0] = "ok"
        assert batcher.submit(np.full((2, 2), 3.0, np.float32)) == {"first": 3.0, "dense": False}
        assert batcher.pending() == 0
    finally:
        batcher.close(timeout=10)


def test_close_drains_and_ends_the_thread_and_the_store_closes_its_batchers(checkpoints):
    batcher = Batcher(_echo([None]), name="stub")
    assert batcher.submit(np.zeros((2, 2), np.float32))["first"] == 0.0
    thread = batcher._thread
    batcher.close(timeout=10)
    assert thread is not None and not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(np.zeros((2, 2), np.float32))
    store = ModelStore.load(checkpoints)
    model = store.get("tiny")
    model.batcher.submit(_images(1)[0])
    store.stop(timeout=30)
    assert not model.batcher._thread.is_alive()


def test_other_model_work_runs_alone_on_the_compute_thread(loaded):
    """LoadedModel.run (analysis, interventions, /activations/batch) runs on the batcher's
    thread, so one OpenMP team serves the model (a second one, in a pool thread, had made
    later lone requests 2x slower)."""
    where = loaded.run(lambda model: threading.current_thread().name)
    assert where == loaded.batcher._thread.name and where.startswith("batcher-")
    with pytest.raises(ZeroDivisionError):
        loaded.run(lambda model: 1 / 0)  # the caller gets the error; the thread lives on
    results = run_images(loaded.model, np.stack(_images(2)))
    assert loaded.run(run_images, np.stack(_images(2))) == results
    assert loaded.batcher.pending() == 0


def test_calls_are_never_batched_with_images():
    calls: list = [None]
    batcher = Batcher(_echo(calls), max_batch=8, max_wait_s=0.05, name="stub")
    try:
        jobs = [(lambda: batcher.submit(np.ones((2, 2), np.float32)))] * 3 + [
            (lambda: batcher.call(lambda: "called"))] + [
            (lambda: batcher.submit(np.ones((2, 2), np.float32)))] * 3
        answers = _concurrently(lambda job: job(), [(job,) for job in jobs])
        assert answers[3] == "called" and all(a["first"] == 1.0 for a in answers[:3])
        assert sum(calls[1:]) == 6 and max(calls[1:]) <= 6  # images only, in batches
    finally:
        batcher.close(timeout=10)


def test_a_call_from_the_compute_thread_runs_at_once():
    """Batcher.call from inside a call (the compute thread) runs in place instead of
    queueing behind itself forever."""
    batcher = Batcher(_echo([None]), name="stub")
    try:
        outer = batcher.call(lambda: (threading.current_thread().name,
                                      batcher.call(lambda: threading.current_thread().name)))
        assert outer == ("batcher-stub", "batcher-stub")
    finally:
        batcher.close(timeout=10)


def test_channel_summaries_run_their_torch_work_on_the_compute_thread(loaded, monkeypatch):
    """Every forward and decode of a model's channel summaries runs on its batcher's
    compute thread (one OpenMP team per model), under its lock; the result equals the
    summaries computed directly."""
    from sparling_core.analysis import inspect as inspect_module

    threads, real = [], inspect_module._decode_invariant
    real_forward = loaded.model.sparse_motifs

    def decode(*args, **kwargs):
        threads.append((threading.current_thread().name, loaded.lock.locked()))
        return real(*args, **kwargs)

    def forward(*args, **kwargs):
        threads.append((threading.current_thread().name, loaded.lock.locked()))
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(inspect_module, "_decode_invariant", decode)
    monkeypatch.setattr(loaded.model, "sparse_motifs", forward)
    served = loaded.summaries(3)
    assert threads and set(threads) == {("batcher-tiny", True)}, threads
    threads.clear()
    direct = inspect_module.channel_summaries(loaded.model, 3, None, loaded.assignment)
    assert {name for name, _ in threads} == {threading.current_thread().name}
    assert served == direct


def test_a_dense_request_over_the_cap_is_refused_before_it_joins_a_batch(loaded):
    from backend.routers.activations import _run_one

    image = _images(1)[0]
    loaded.max_response_values = loaded.checkpoint.config.motif_channels * image.size - 1
    forwards = loaded.batcher.stats.forwards
    with pytest.raises(ResponseTooLarge, match="dense maps"):
        _run_one(loaded, image, "none", True)
    assert loaded.batcher.stats.forwards == forwards  # no forward, no failed batch
    assert _run_one(loaded, image, "none", False)["dense"] is None


@pytest.fixture(scope="module")
def server(checkpoints, tmp_path_factory):
    port = free_port()
    env = {"SPARLING_CHECKPOINTS": str(checkpoints), "SPARLING_API_KEY": "",
           "SPARLING_MAX_UPLOAD_BYTES": "2000000", "OMP_NUM_THREADS": "2",
           "OMP_WAIT_POLICY": "PASSIVE"}  # 2 spinning threads crawl on a busy machine
    log = tmp_path_factory.mktemp("batching-log") / "uvicorn.log"
    proc = start_server([sys.executable, "-m", "uvicorn", "backend.main:app",
                         "--host", "127.0.0.1", "--port", str(port)], env, log, port)
    try:
        yield f"http://127.0.0.1:{port}/v1/models/tiny/activations"
    finally:
        stop_server(proc)
    text = log.read_text()
    assert "Traceback" not in text and "failed" not in text, text  # no batch was retried


def test_concurrent_http_requests_equal_alone(server):
    images = _images()
    with httpx.Client(timeout=120) as client:
        alone = [client.post(server, json={"image": image.tolist()}).json() for image in images]
    assert all("sequence" in r for r in alone)

    def post(image, dense):
        with httpx.Client(timeout=120) as client:
            r = client.post(server, params={"dense": str(dense).lower()},
                            json={"image": image.tolist()})
            r.raise_for_status()
            return r.json()

    for _ in range(2):  # two rounds: batches form differently each time
        together = _concurrently(post, [(image, False) for image in images])
        assert together == alone
    dense = _concurrently(post, [(image, True) for image in images[:4]])
    assert [{**r, "dense": None} for r in dense] == alone[:4]


SPIN_PROBE = """
import builtins, os, sys
real_import, seen = builtins.__import__, {}
def spy(name, *args, **kwargs):
    if name.split(".")[0] == "torch" and "torch" not in sys.modules:
        seen.setdefault("torch", os.environ.get("GOMP_SPINCOUNT"))
    return real_import(name, *args, **kwargs)
builtins.__import__ = spy
import backend.main
print(seen.get("torch", "torch never imported"))
"""


@pytest.mark.parametrize("given, expected", [(None, "30000"), ("123", "123")])
def test_the_service_sets_the_openmp_spin_before_torch_loads(given, expected):
    """backend/__init__.py sets GOMP_SPINCOUNT (read once by libgomp when torch loads)
    before any module of the service imports torch, so that `uvicorn backend.main:app`
    serves with short spins; a value from the environment wins."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if given is not None:
        env["GOMP_SPINCOUNT"] = given
    out = subprocess.run([sys.executable, "-c", SPIN_PROBE], env=env, capture_output=True,
                         text=True, timeout=120, check=True,
                         cwd=pathlib.Path(__file__).resolve().parents[1])
    assert out.stdout.strip().splitlines()[-1] == expected


def test_a_compute_thread_started_during_an_invariant_decode_runs_on_its_own_count():
    """A batch-invariant decode runs torch on one thread, and torch starts a thread that
    first calls into it meanwhile on that count; a compute thread sets its own when it
    starts, so that its forwards do not silently run on one thread (they had, in a CI run:
    the service's answers then differed from the same computation in the test's thread)."""
    import torch

    from sparling_core.models.sparling import SparlingModel

    model = SparlingModel(tiny_config()).eval()
    maps = torch.zeros(2, 10, 100, 100)
    maps[1, 3, 50, 50] = 1.0
    stop = threading.Event()

    def decode_forever():
        with torch.inference_mode():
            while not stop.is_set():
                model.decode_motifs(maps, batch_invariant=True)

    decoder = threading.Thread(target=decode_forever)
    decoder.start()
    batchers: list[Batcher] = []
    try:
        fresh: list[int] = []
        deadline = time.monotonic() + 30
        while 1 not in fresh and time.monotonic() < deadline:  # plain new threads start
            t = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
            t.start()                                           # on 1 while it decodes
            t.join()
        batchers += [Batcher(_echo([None]), name=f"t{i}", threads=3) for i in range(5)]
        counts = [b.call(torch.get_num_threads) for b in batchers]
    finally:
        stop.set()
        decoder.join()
        for b in batchers:
            b.close(timeout=10)
    assert 1 in fresh  # the hazard is there
    assert counts == [3] * 5
    with pytest.raises(ValueError, match="at least 1"):
        Batcher(_echo([None]), threads=0)
