"""Request batching: concurrent single-image requests to one model share one forward.

Each loaded model has a `Batcher` with one compute thread of its own. A request thread
`submit`s its prepared image and waits for its answer. The compute thread takes what is
queued (up to `max_batch`), and when requests are arriving together (more than one queued
now, or the last batch had more than one) what arrives within `max_wait_s`, and runs it as
one batch under the model's lock. A lone request is run at once: the hand-over costs a
thread wake-up (tens of microseconds).

Why one thread: torch's CPU kernels run on OpenMP, and every thread that calls into torch
gets its own OpenMP team, thread-local caches and allocator arena. When any request thread
could run the forwards (an earlier design: the first waiting request led), each of the
server's pool threads built its own team, and a lone request that landed on a thread that
had not run a forward lately was up to 2x slower than the bare forward for the next
seconds (measured with bench/api.py: c=1 right after c=8 at 20 req/s against 40-50
otherwise). One compute thread keeps one warm team.

What is shared is the decoder: a small transformer decoding up to 7 steps costs more in
per-call and per-step overhead than in arithmetic (on the 2026-12-07 host, `bench/decode.py`:
about 6.6 ms for 1 map and 9.8 ms for 8). The motif model's convolutions are compute-bound
and run one image at a time: 4 images cost 26 ms each with the motif model batched and
17 ms each with it run one at a time (the activations of several 100 x 100 x 32 maps no
longer fit the caches).

Results are the ones each image gets alone, bit for bit, by construction: every motif map
is computed as for a lone image, and the decoder runs batch-invariantly
(`run_images(..., batch_invariant=True)`, `sparling_core.models.batch_invariant`: every
matrix multiply is one product per map, whose shape does not depend on the batch). Before
2026-12-07 the decoder ran in fixed chunks of 8 maps instead, padded with copies, and a lone
request paid for 8. A batch that fails is retried one image at a time, so one bad image
fails only itself.

Settings (environment): SPARLING_BATCH_MAX (default 8; 1 turns batching off),
SPARLING_BATCH_WAIT_MS (default 2).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from sparling_core.analysis.inspect import run_images

__all__ = ["Batcher", "BatchStats", "PROCESS_THREADS"]

log = logging.getLogger(__name__)

# torch's thread count when the service is imported (in the main thread, before any model
# work). Each compute thread sets its own count to it when it starts: torch gives a thread
# that first calls into it the count set last by any thread, and a batch-invariant decode
# elsewhere sets 1 while it runs (`sparling_core.models.batch_invariant`), so a compute
# thread started meanwhile would otherwise run every forward on one thread, with other
# bits than the same image gets from a thread on two.
PROCESS_THREADS = torch.get_num_threads()

T = TypeVar("T")
Runner = Callable[..., Any]  # run(fn, images, dense, **kw) -> fn(model, images, dense, **kw)


@dataclass
class _Item:
    image: np.ndarray  # (H, W) float32, already prepared
    dense: bool
    future: Future = field(default_factory=Future)


@dataclass
class _Call:
    """Any other model work (`Batcher.call`): run alone, in queue order."""
    fn: Callable[..., Any]
    args: tuple
    kwargs: dict
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    """Counts since start: forwards run and images served (images / forwards = mean batch)."""
    forwards: int = 0
    images: int = 0
    largest: int = 0


class Batcher:
    def __init__(self, run: Runner, max_batch: int | None = None,
                 max_wait_s: float | None = None, name: str = "model",
                 threads: int | None = None):
        env = os.environ
        self.threads = PROCESS_THREADS if threads is None else threads  # the compute thread's
        if self.threads < 1:
            raise ValueError(f"a compute thread needs at least 1 torch thread, got {threads}")
        self.max_batch = max(1, int(env.get("SPARLING_BATCH_MAX", "8"))
                             if max_batch is None else max_batch)
        self.max_wait_s = (float(env.get("SPARLING_BATCH_WAIT_MS", "2")) / 1000
                           if max_wait_s is None else max_wait_s)
        self.name = name
        self.stats = BatchStats()
        self._run = run
        self._queue: deque[_Item | _Call] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._last_size = 0
        self._pending = 0  # submitted, not yet answered
        self._thread: threading.Thread | None = None  # the compute thread, started on demand

    def pending(self) -> int:
        """Requests submitted and not yet answered (queued or in a running forward)."""
        with self._cond:
            return self._pending

    def submit(self, image: np.ndarray, dense: bool = False) -> dict:
        """The `run_images` result of one prepared (H, W) image; blocks until it is done
        (run by this batcher's compute thread, possibly together with other requests)."""
        return self._wait(self._enqueue(_Item(np.asarray(image, dtype=np.float32), bool(dense))))

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """fn(*args, **kwargs) on this batcher's compute thread, alone, between batches;
        blocks until it is done. All of a model's torch work should run on that one thread:
        every thread that calls into torch gets an OpenMP team of its own, and with more
        OpenMP threads than cores libgomp stops spinning between parallel regions, after
        which the decoder's many small ops wait for futex wake-ups (a lone request took
        44-54 ms instead of 26 after one /activations/batch call had run in a pool thread)."""
        if threading.current_thread() is self._thread:  # already there: queueing would
            return fn(*args, **kwargs)                  # wait for itself
        return self._wait(self._enqueue(_Call(fn, args, kwargs)))

    def _enqueue(self, item: _Item | _Call) -> _Item | _Call:
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if self._thread is None or not self._thread.is_alive():
                thread = threading.Thread(target=self._loop, daemon=True,
                                          name=f"batcher-{self.name}")
                thread.start()  # kept only once started: a failed start is retried
                self._thread = thread
            self._queue.append(item)
            self._pending += 1
            self._cond.notify_all()
        return item

    def _wait(self, item: _Item | _Call) -> Any:
        try:
            return item.future.result()
        finally:
            with self._cond:
                self._pending -= 1

    def close(self, timeout: float | None = None) -> None:
        """Refuse new requests; those submitted are answered, then the compute thread ends
        (waited for up to `timeout` seconds when given)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if timeout is not None and thread is not None:
            thread.join(timeout)

    def _loop(self) -> None:
        batch: list = []  # images, or one call
        torch.get_num_threads()  # torch's first call sets this thread's count: before ours
        torch.set_num_threads(self.threads)
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._closed:
                        self._cond.wait()
                    if not self._queue:  # closed and drained
                        return
                batch = self._collect()
                try:
                    if isinstance(batch[0], _Call):
                        self._call(batch[0])
                    else:
                        self._execute(batch)
                except Exception as e:  # never leave a request waiting
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(e)
        except BaseException as e:  # the thread dies (SystemExit, ...): fail what waits;
            with self._cond:        # the next submit starts a new thread
                waiting, self._queue = batch + list(self._queue), deque()
                self._thread = None
            error = RuntimeError(f"the batcher's compute thread stopped: {e!r}")
            for item in waiting:
                if not item.future.done():
                    item.future.set_exception(error)
            raise

    def _take(self, batch: list) -> None:
        """Images from the head of the queue into `batch`, up to max_batch; a call is taken
        only alone (into an empty batch), and ends what an image batch takes."""
        if not batch and self._queue and isinstance(self._queue[0], _Call):
            batch.append(self._queue.popleft())
            return
        while (self._queue and len(batch) < self.max_batch
               and isinstance(self._queue[0], _Item)):
            batch.append(self._queue.popleft())

    def _collect(self) -> list:
        """The next batch (or a lone call, `_take`): what is queued, and when requests are
        arriving together (more than one queued, or the last batch had more than one) what
        comes in max_wait_s."""
        with self._cond:
            batch: list = []
            self._take(batch)
            if isinstance(batch[0], _Call):
                return batch
            concurrent = len(batch) > 1 or self._last_size > 1
            if concurrent and self.max_wait_s > 0 and len(batch) < self.max_batch:
                deadline = time.monotonic() + self.max_wait_s
                while len(batch) < self.max_batch:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                    self._take(batch)
            self._last_size = len(batch)
            return batch

    @staticmethod
    def _call(job: _Call) -> None:
        try:
            result = job.fn(*job.args, **job.kwargs)
        except Exception as e:
            job.future.set_exception(e)
        else:
            job.future.set_result(result)

    def _execute(self, batch: list[_Item]) -> None:
        try:
            images = np.stack([item.image for item in batch])
            results = self._run(run_images, images, [item.dense for item in batch],
                                batch_invariant=True, motif_batch=1)
        except Exception as e:
            if len(batch) == 1:
                batch[0].future.set_exception(e)
                return
            log.warning("batch of %d failed (%s); running its images one by one",
                        len(batch), e)
            for item in batch:
                self._execute([item])
            return
        self.stats.forwards += 1
        self.stats.images += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        for item, result in zip(batch, results, strict=True):
            item.future.set_result(result)
