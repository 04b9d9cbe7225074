"""Overload: many concurrent clients against a real uvicorn process. The service must shed
load with 503 + Retry-After (never a 5xx otherwise), keep /v1/health fast, and keep its
memory bounded.

    .venv/bin/python bench/overload.py                          # 200 clients, 20 s
    .venv/bin/python bench/overload.py --clients 50 --seconds 5 --checkpoint PATH

Starts the backend (backend/process.py) on 127.0.0.1 serving a copy of one checkpoint
(checkpoints/digit-circle-mt by default), then runs --clients asyncio clients in a loop for
--seconds: single-image activations (JSON), a batch of 4 with dense maps, samples and
interventions by seed. A separate process polls /v1/health every 50 ms. Prints the status
counts, the health latencies and the server's peak RSS (VmHWM), and exits 1 on any 5xx
other than 503, a health p99 of 200 ms or more, or a failed health poll. Client, prober and
server share this machine's cores: the client's load is part of what the server sees.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.process import free_port, start_server, stop_server  # noqa: E402
from sparling_core.domains import digit_circle as dc  # noqa: E402

DEFAULT_CHECKPOINT = REPO / "checkpoints" / "digit-circle-mt"


def _probe_health(url: str, stop, out) -> None:
    """In its own process: GET url every 50 ms until `stop` is set; send back the latencies
    (None = failed)."""
    latencies: list[float | None] = []
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                ok = client.get(url).status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - start if ok else None)
            time.sleep(max(0.0, 0.05 - (time.perf_counter() - start)))
    out.send(latencies)


def _peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


async def _request(conn: list, host: str, port: int, method: str, path: str,
                   body: bytes | None) -> tuple[int, dict[str, str]]:
    """One HTTP/1.1 request on a kept-alive connection (conn = [reader, writer] or empty):
    a bare asyncio client, so that 200 of them cost this process little CPU."""
    if not conn:
        conn.extend(await asyncio.open_connection(host, port))
    reader, writer = conn
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    writer.write(head.encode() + b"\r\n" + (body or b""))
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed")
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    await reader.readexactly(int(headers.get("content-length", 0)))
    if headers.get("connection", "").lower() == "close":
        writer.close()
        conn.clear()
    return int(status_line.split()[1]), headers


async def _clients(base: str, model: str, n: int, seconds: float) -> tuple[Counter, Counter]:
    host, port = base.removeprefix("http://").split(":")
    image = dc.sample(7).image.tolist()
    requests = [
        ("POST", f"/v1/models/{model}/activations", {"image": image}),
        ("POST", f"/v1/models/{model}/activations/batch?dense=true", {"images": [image] * 4}),
        ("GET", "/v1/samples/{i}", None),
        ("POST", f"/v1/models/{model}/intervene", {"seed": 0}),
    ]
    # bodies encoded once: the client's own CPU time is load on the same cores
    requests = [(m, p, None if b is None else json.dumps(b).encode()) for m, p, b in requests]
    statuses: Counter = Counter()
    kinds: Counter = Counter()
    latency: dict[int, list[float]] = defaultdict(list)
    end = time.monotonic() + seconds

    async def one(k: int) -> None:
        i, conn = k, []
        while time.monotonic() < end:
            method, path, body = requests[i % len(requests)]
            i += 1
            start = time.perf_counter()
            try:
                status, headers = await _request(conn, host, int(port), method,
                                                 path.format(i=i), body)
            except (OSError, ConnectionError, asyncio.IncompleteReadError) as e:
                statuses[type(e).__name__] += 1
                conn.clear()
                continue
            latency[status].append(time.perf_counter() - start)
            statuses[status] += 1
            kinds[(path.split("?")[0].split("/")[-1], status)] += 1
            if status == 503:
                await asyncio.sleep(float(headers.get("retry-after", "1")))
        if conn:
            conn[1].close()

    await asyncio.gather(*(one(k) for k in range(n)))
    kinds.update({f"latency_p50_ms {code}": round(1000 * _percentile(v, 0.5))
                  for code, v in latency.items()})
    kinds.update({f"latency_p99_ms {code}": round(1000 * _percentile(v, 0.99))
                  for code, v in latency.items()})
    return statuses, kinds


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--queue", type=int, default=None,
                        help="SPARLING_MAX_QUEUE_PER_MODEL for the server (default: its own)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        served = Path(tmp) / "served"
        shutil.copytree(args.checkpoint, served / args.checkpoint.name)
        port = free_port()
        env = {"SPARLING_CHECKPOINTS": str(served), "MALLOC_ARENA_MAX": "2"}
        if args.queue:
            env["SPARLING_MAX_QUEUE_PER_MODEL"] = str(args.queue)
        proc = start_server([sys.executable, "-m", "uvicorn", "backend.main:app", "--host",
                             "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            env, Path(tmp) / "server.log", port)
        try:
            base = f"http://127.0.0.1:{port}"
            idle_rss = _peak_rss_mib(proc.pid)
            receiver, sender = multiprocessing.Pipe(duplex=False)
            stop = multiprocessing.Event()
            prober = multiprocessing.Process(target=_probe_health, daemon=True,
                                             args=(base + "/v1/health", stop, sender))
            prober.start()
            started = time.monotonic()
            statuses, kinds = asyncio.run(_clients(base, args.checkpoint.name, args.clients,
                                                   args.seconds))
            elapsed = time.monotonic() - started  # the last requests may finish later
            stop.set()
            latencies = receiver.recv()
            prober.join(10)
            peak_rss = _peak_rss_mib(proc.pid)
            log = (Path(tmp) / "server.log").read_text()
        finally:
            stop_server(proc)

    ok = [x for x in latencies if x is not None]
    failed_polls = len(latencies) - len(ok)
    five_xx = sum(c for s, c in statuses.items() if isinstance(s, int) and s >= 500 and s != 503)
    report = {
        "clients": args.clients, "load_seconds": args.seconds,
        "seconds_until_drained": round(elapsed, 1),
        "requests": sum(statuses.values()),
        "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
        "by_route": {k if isinstance(k, str) else f"{k[0]} {k[1]}": v
                     for k, v in sorted(kinds.items(), key=str)},
        "503": statuses.get(503, 0), "5xx_other": five_xx,
        "health_polls": len(latencies), "health_failed": failed_polls,
        "health_p50_ms": round(1000 * _percentile(ok, 0.5), 1) if ok else None,
        "health_p99_ms": round(1000 * _percentile(ok, 0.99), 1) if ok else None,
        "health_max_ms": round(1000 * max(ok), 1) if ok else None,
        "server_rss_idle_mib": idle_rss, "server_rss_peak_mib": peak_rss,
    }
    print(json.dumps(report, indent=1))
    if "Traceback" in log:
        print("server log has a traceback:\n" + log[-3000:])
    good = (five_xx == 0 and failed_polls == 0 and ok and report["health_p99_ms"] < 200
            and "Traceback" not in log)
    print("PASS" if good else "FAIL")
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
