"""Latency and throughput of POST /v1/models/{id}/activations against a real uvicorn process,
next to the bare in-process forward (`model.generate`) in the same run.

    .venv/bin/python bench/api.py                      # checkpoints/digit-circle-mt if present
    .venv/bin/python bench/api.py --checkpoint PATH --requests 200
    OMP_NUM_THREADS=1 .venv/bin/python bench/api.py --workers 2   # 2 replicas, 1 thread each

Starts uvicorn on 127.0.0.1 (a free port) serving only the given checkpoint, waits for
/v1/ready, measures, stops it. Without a checkpoint it builds a tiny untrained model whose
thresholds are calibrated (training-mode forwards, no gradients) to density 1e-3, so the
sparse response has a realistic size. Client and server share this machine's cores: read
the numbers as relative (overhead ratios), not as capacity. The bare forward and the HTTP
requests at concurrency 1 alternate, and the throughput levels take turns over several
rounds, so that the compared numbers share whatever else the machine is doing. Thread
settings come from the environment for both the bare forward and the server (e.g.
OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE on a machine that is busy with something else).
`--workers N` serves through N uvicorn worker processes (the README's replicas on one
machine); server CPU is then summed over the workers. The client sends one JSON body,
encoded once: encoding it anew costs the load generator about 5 ms of Python per request,
which on 2 shared cores caps concurrency 8 below what the server can do (`--encode-each`
measures that way). The load generator's own CPU per request is printed too: the sparse
JSON levels use httpx by default, `--client raw` the standard library's `http.client`
(less Python per request taken from the cores the server runs on).

    .venv/bin/python bench/api.py --client raw
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# before torch: the bare forward runs with the OpenMP spin setting the server starts with
# (backend/__init__.py), so that neither process's idle threads spin through the other's
# timed work: with libgomp's default each one's threads spin for milliseconds after every
# forward, and the alternating bare forward ran 2x slower beside the server's.
import backend  # noqa: E402,F401,I001

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from backend.process import free_port, start_server, stop_server  # noqa: E402
from sparling_core.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from sparling_core.domains import digit_circle as dc  # noqa: E402
from sparling_core.models.sparling import SparlingModel, digit_circle_tiny  # noqa: E402

DEFAULT_CHECKPOINT = REPO / "checkpoints" / "digit-circle-mt"


def build_tiny_checkpoint(folder: Path, density: float = 1e-3) -> Path:
    torch.manual_seed(0)
    model = SparlingModel(digit_circle_tiny())
    model.set_density(density)
    model.train()
    with torch.no_grad():  # thresholds and BatchNorm statistics follow the data; no training
        for step in range(40):
            images, _ = dc.collate([dc.sample(step * 8 + i) for i in range(8)])
            model.sparse_motifs(images)
    model.eval()
    return save_checkpoint(folder, model)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def start_api(checkpoints: Path, port: int, log: Path, workers: int = 1) -> subprocess.Popen:
    env = {"SPARLING_CHECKPOINTS": str(checkpoints), "SPARLING_MAX_UPLOAD_BYTES": "20000000",
           "SPARLING_API_KEY": ""}  # empty = no key
    command = [sys.executable, "-m", "uvicorn", "backend.main:app", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]
    if workers > 1:
        command += ["--workers", str(workers)]
    try:
        return start_server(command, env, log, port, timeout=120)
    except RuntimeError as e:
        raise SystemExit(str(e)) from e


def invariant_forward(model: SparlingModel, x: torch.Tensor) -> None:
    """What the service computes for an image: its motif map, then the batch-invariant
    decode (cached keys and values, one product per map)."""
    with torch.inference_mode():
        model.decode_motifs(model.sparse_motifs(x), batch_invariant=True)


def interleaved(model: SparlingModel, image: np.ndarray, url: str, request: dict, n: int,
                client: str = "httpx", settle_s: float = 0.0
                ) -> tuple[list[float], list[float], float, list[float]]:
    """n bare forwards, n of the service's computation in process and n HTTP requests
    (concurrency 1), in turn, so that all see the same background load: (bare latencies,
    HTTP latencies, bare CPU seconds of this thread: all of a forward's CPU when torch runs
    1 thread, in-process service computation latencies). `settle_s`: a pause before each
    timed call, so that none starts while the previous one's OpenMP threads still spin
    (GOMP_SPINCOUNT) on the cores it needs."""
    x = dc.images_to_tensor(image)
    model.generate(x)  # warm-up
    invariant_forward(model, x)
    bare, http, cpu, served = [], [], 0.0, []
    with poster(url, request, client) as post:
        post()
        for _ in range(n):
            time.sleep(settle_s)
            t, c = time.perf_counter(), time.thread_time()
            model.generate(x)
            bare.append(time.perf_counter() - t)
            cpu += time.thread_time() - c
            time.sleep(settle_s)
            t = time.perf_counter()
            invariant_forward(model, x)
            served.append(time.perf_counter() - t)
            time.sleep(settle_s)
            t = time.perf_counter()
            post()
            http.append(time.perf_counter() - t)
    return bare, http, cpu, served


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process and its live children (uvicorn's workers), all
    their threads (Linux /proc; None elsewhere)."""
    fields = _stat(pid)
    if fields is None:
        return None
    total = int(fields[11]) + int(fields[12])
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (child := _stat(int(entry.name))) and child[1] == str(pid):
            total += int(child[11]) + int(child[12])
    return total / os.sysconf("SC_CLK_TCK")


def wait_until_idle(pid: int, timeout: float = 180.0) -> None:
    """Until the server's processes use under 5% of a core over a second: its background
    work (channel summaries) is done, and the workers that /v1/ready did not hear from have
    loaded their checkpoints too."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while last is not None and time.monotonic() < deadline:
        time.sleep(1.0)
        now = cpu_seconds(pid)
        if now is None or now - last < 0.05:
            return
        last = now


def served_images(detail_url: str) -> tuple[int, int]:
    """(forwards, images) of the model's request batcher, from GET /v1/models/{id} (with
    several workers: of whichever worker answers)."""
    serving = httpx.get(detail_url, timeout=60).raise_for_status().json()["serving"]
    return serving["forwards"], serving["images"]


class RawClient:
    """A keep-alive HTTP/1.1 client from the standard library (`http.client`) that posts one
    pre-encoded body: a lighter load generator than httpx, whose own Python per request
    shares the 2 cores with the server (`--client raw`)."""

    def __init__(self, url: str, request: dict):
        parts = urllib.parse.urlsplit(url)
        if "content" not in request:
            raise SystemExit("--client raw posts a pre-encoded body: leave out --encode-each")
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.body, self.headers = request["content"], request.get("headers", {})
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)

    def post(self) -> bytes:
        self.connection.request("POST", self.path, body=self.body, headers=self.headers)
        response = self.connection.getresponse()
        content = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {content[:200]!r}")
        return content

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc) -> None:
        self.connection.close()


@contextlib.contextmanager
def poster(url: str, request: dict, client: str = "httpx") -> Iterator[Callable[[], bytes]]:
    """A keep-alive connection's `post()`, which sends `request` to `url` and returns the
    response body (raising on a status other than 200): through httpx, or `RawClient`."""
    if client == "raw":
        with RawClient(url, request) as raw:
            yield raw.post
        return
    with httpx.Client(timeout=120) as session:
        yield lambda: session.post(url, **request).raise_for_status().content


def run_load(url: str, request: dict, n: int, concurrency: int, client: str = "httpx"
             ) -> tuple[list[float], float, int, float]:
    """n requests over `concurrency` keep-alive clients (httpx, or `RawClient` with
    client="raw"): latencies, wall time, bytes of one, and this process's CPU seconds over
    the measured requests (the load generator's; building the clients, whose TLS set-up
    alone costs httpx tens of milliseconds each, and warming them are left out). Each client
    is built and its connection warmed by one request before the clock starts (all of
    them: a barrier), so the wall time holds the n measured requests only. Before
    2026-11-28 it also held building the clients and their warm-up requests: 8 extra
    requests at c=8 against 1 at c=1, which understated c=8 by about a tenth at 80
    requests."""
    latencies: list[float] = []
    sizes: list[int] = []
    lock = threading.Lock()
    counts = [n // concurrency + (i < n % concurrency) for i in range(concurrency)]
    started: list[float] = []
    cpu: list[float] = []  # this process's CPU time (all threads) when the clock starts

    def start() -> None:
        started.append(time.perf_counter())
        cpu.append(time.process_time())

    ready = threading.Barrier(concurrency, action=start)
    finished_cpu: list[float] = []

    def worker(k: int) -> float:
        with poster(url, request, client) as post:
            post()  # warm the connection
            ready.wait(timeout=120)
            for _ in range(k):
                t = time.perf_counter()
                content = post()
                dt = time.perf_counter() - t
                with lock:
                    latencies.append(dt)
                    sizes.append(len(content))
                    if len(latencies) == n:  # the last request: before any client closes
                        finished_cpu.append(time.process_time())
            return time.perf_counter()

    with ThreadPoolExecutor(concurrency) as pool:
        finished = list(pool.map(worker, counts))
    return latencies, max(finished) - started[0], sizes[0], finished_cpu[0] - cpu[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help=f"checkpoint folder (default {DEFAULT_CHECKPOINT} if it exists, "
                             "else a tiny calibrated model)")
    parser.add_argument("--requests", type=int, default=160,
                        help="requests per load level and round")
    parser.add_argument("--concurrency", default="1,8", help="comma-separated client counts")
    parser.add_argument("--rounds", type=int, default=3,
                        help="throughput rounds: each runs every concurrency level in turn "
                             "(`--requests` requests each), so that they share the "
                             "background load; ratios are the median over rounds")
    parser.add_argument("--seed", type=int, default=dc.TEST_SEEDS_START)
    parser.add_argument("--workers", type=int, default=1,
                        help="uvicorn worker processes (replicas on this machine); set "
                             "OMP_NUM_THREADS so that workers x threads <= cores")
    parser.add_argument("--encode-each", action="store_true",
                        help="the client encodes the JSON body of every request anew (its "
                             "CPU then competes with the server's)")
    parser.add_argument("--settle-ms", type=float, default=0.0,
                        help="pause before each timed call of the alternating c=1 "
                             "measurement, so that the previous call's spinning OpenMP "
                             "threads are idle (0: back to back, as before 2026-12-08)")
    parser.add_argument("--client", choices=("httpx", "raw"), default="httpx",
                        help="the load generator of the sparse JSON levels: httpx, or raw "
                             "(the standard library's http.client, less Python per request "
                             "beside the server on the same cores)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sparling-bench-") as tmp:
        tmp = Path(tmp)
        checkpoint = args.checkpoint or (DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_dir()
                                         else None)
        if checkpoint is None:
            checkpoint = build_tiny_checkpoint(tmp / "source" / "tiny-calibrated")
            print(f"no checkpoint given and none at {DEFAULT_CHECKPOINT}: built {checkpoint.name}")
        checkpoint = checkpoint.resolve()
        served = tmp / "served"  # only this checkpoint, under its own name
        served.mkdir()
        # a copy: the server refuses symlinked checkpoint folders
        shutil.copytree(checkpoint, served / checkpoint.name)
        model_id = checkpoint.name

        ck = load_checkpoint(checkpoint)
        sample = dc.sample(args.seed)
        image = sample.image
        port = free_port()
        url = f"http://127.0.0.1:{port}/v1/models/{model_id}/activations"
        # the body is encoded once: the load generator shares this machine's 2 cores with
        # the server, and its own JSON encoding (about 5 ms of Python per request, one GIL
        # for all client threads) would otherwise cap concurrency 8 (--encode-each: as before)
        body = json.dumps({"image": image.tolist()}).encode()
        json_request = ({"json": {"image": image.tolist()}} if args.encode_each else
                        {"content": body, "headers": {"content-type": "application/json"}})
        print(f"checkpoint {checkpoint} ({ck.model.num_parameters():,} parameters), "
              f"image seed {args.seed}, torch threads {torch.get_num_threads()}, "
              f"{os.cpu_count()} CPUs, {args.workers} server worker(s), client {args.client}, "
              f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')} (both processes)")

        motifs = ck.model.generate(dc.images_to_tensor(image)).motifs
        n_active = int(ck.model.bottleneck.active(motifs).sum())
        proc = start_api(served, port, tmp / "uvicorn.log", args.workers)
        levels = [int(x) for x in args.concurrency.split(",")]
        loads: dict[int, list] = {c: [[], 0.0] for c in levels}
        round_rps: list[dict[int, float]] = []
        server_cpu: dict[int, float] = {c: 0.0 for c in levels}
        client_cpu: dict[int, float] = {c: 0.0 for c in levels}  # this process's, all threads
        batches: dict[int, list[int]] = {c: [0, 0] for c in levels}  # forwards, images
        detail_url = f"http://127.0.0.1:{port}/v1/models/{model_id}"
        try:
            run_load(url, json_request, 10, 1)  # warm the server (first requests are slow)
            # the server precomputes channel summaries in the background after it is ready,
            # and with --workers only the first worker has answered: wait until all is quiet
            wait_until_idle(proc.pid)
            if args.workers > 1:  # every worker warm, not only the first one
                run_load(url, json_request, 10 * args.workers, 4 * args.workers)
            before = cpu_seconds(proc.pid)
            bare, http, bare_cpu, invariant = interleaved(ck.model, image, url, json_request,
                                                          args.requests, args.client,
                                                          args.settle_ms / 1000)
            after = cpu_seconds(proc.pid)
            http_cpu = None if before is None or after is None else after - before
            rows = [("bare model.generate (in-process)", 1, len(bare), bare, sum(bare)),
                    ("HTTP JSON, sparse (alternating)", 1, len(http), http, sum(http)),
                    ("service's forward (in-process)", 1, len(invariant), invariant,
                     sum(invariant))]
            for _ in range(args.rounds):
                round_rps.append({})
                for c in levels:
                    before = cpu_seconds(proc.pid)
                    served = served_images(detail_url)
                    lat, wall, sparse_bytes, mine = run_load(url, json_request, args.requests,
                                                             c, args.client)
                    client_cpu[c] += mine
                    after = cpu_seconds(proc.pid)
                    now = served_images(detail_url)
                    batches[c][0] += now[0] - served[0]
                    batches[c][1] += now[1] - served[1]
                    if before is not None and after is not None:
                        server_cpu[c] += after - before
                    loads[c][0] += lat
                    loads[c][1] += wall
                    round_rps[-1][c] = len(lat) / wall
            for c in levels:
                rows.append(("HTTP JSON, sparse", c, len(loads[c][0]), *loads[c]))
            n_small = max(5, args.requests // 4)
            lat, wall, dense_bytes, _ = run_load(url + "?dense=true", json_request, n_small, 1)
            rows.append(("HTTP JSON, dense=true", 1, len(lat), lat, wall))
            buffer = io.BytesIO()
            Image.fromarray(image * 255, mode="L").save(buffer, format="PNG")
            png_request = {"files": {"file": ("x.png", buffer.getvalue(), "image/png")}}
            lat, wall, _, _ = run_load(url, png_request, n_small, 1)
            rows.append(("HTTP PNG upload, sparse", 1, len(lat), lat, wall))
        finally:
            stop_server(proc)

    print()
    print(f"{'mode':<34} {'conc':>4} {'n':>5} {'min ms':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'req/s':>8}")
    for name, c, n, lat, wall in rows:
        print(f"{name:<34} {c:>4} {n:>5} {min(lat) * 1e3:>8.2f} "
              f"{percentile(lat, 50) * 1e3:>8.2f} {percentile(lat, 99) * 1e3:>8.2f} "
              f"{n / wall:>8.1f}")
    bare_p50 = percentile(bare, 50)
    http_p50 = percentile(rows[1][3], 50)
    print()
    http_min, bare_min = min(rows[1][3]), min(bare)
    print(f"p50 overhead, HTTP sparse (c=1) vs bare forward: {http_p50 / bare_p50:.2f}x "
          f"({(http_p50 - bare_p50) * 1e3:+.2f} ms); best case: {http_min / bare_min:.2f}x "
          f"({(http_min - bare_min) * 1e3:+.2f} ms)")
    own_p50 = percentile(invariant, 50)
    print(f"p50 HTTP sparse (c=1) vs the service's own forward in process (batch-invariant "
          f"decode): {http_p50 / own_p50:.2f}x ({(http_p50 - own_p50) * 1e3:+.2f} ms: HTTP, "
          f"JSON, hand-over); that forward vs model.generate: {own_p50 / bare_p50:.2f}x")
    if 1 in levels and 8 in levels:
        if http_cpu and torch.get_num_threads() == 1:
            print(f"CPU per request at c=1: server {http_cpu / len(http) * 1e3:.1f} ms, bare "
                  f"forward {bare_cpu / len(bare) * 1e3:.1f} ms: {http_cpu / bare_cpu:.2f}x")
        per_request = {c: server_cpu[c] / len(loads[c][0]) for c in (1, 8)}
        if per_request[1] > 0 and per_request[8] > 0:
            print(f"server CPU per request: c=1 {per_request[1] * 1e3:.1f} ms, c=8 "
                  f"{per_request[8] * 1e3:.1f} ms: capacity c=8 / c=1 "
                  f"{per_request[1] / per_request[8]:.2f}x (what throughput would gain with "
                  "the cores to itself; CPU time does not count waiting for a busy core)")
        load = {c: client_cpu[c] / len(loads[c][0]) for c in (1, 8)}
        print(f"load generator ({args.client}) CPU per request: c=1 {load[1] * 1e3:.1f} ms, "
              f"c=8 {load[8] * 1e3:.1f} ms (on the same cores as the server)")
        if args.workers == 1:
            print("mean batch in the server: " + ", ".join(
                f"c={c} {images / forwards:.2f} ({images} images in {forwards} forwards)"
                for c, (forwards, images) in batches.items() if forwards))
        ratios = [r[8] / r[1] for r in round_rps]
        print(f"throughput c=8 / c=1: {float(np.median(ratios)):.2f}x median of "
              f"{len(ratios)} rounds ({', '.join(f'{x:.2f}' for x in ratios)}); concurrent "
              "requests to a model share batched forwards (backend/batching.py)")
    print(f"response bytes: sparse {sparse_bytes:,}, dense {dense_bytes:,}, "
          f"sparse/dense {sparse_bytes / dense_bytes:.4f} ({n_active} active values, "
          f"{len(sample.motifs)} digits in the image)")


if __name__ == "__main__":
    main()
