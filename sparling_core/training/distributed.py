"""Data-parallel training over several processes (torch.distributed).

Two ways in, one loop (`loop.train`, which reads the process group it finds):

- `sparling train ... --nproc N`: `launch` starts N local workers through torch's own
  elastic launcher (`torch.distributed.launcher.api.elastic_launch`, what `torchrun` runs),
  a c10d rendezvous on 127.0.0.1 and a free port; each worker runs `worker`.
- several machines: `torchrun ... -m sparling_core.cli train ...` on each (docs/scale-out.md);
  the CLI sees torchrun's environment (WORLD_SIZE > 1) and joins its process group
  (`init_from_env`).

Backend: gloo on CPU, NCCL on CUDA (each process on cuda:LOCAL_RANK).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from pathlib import Path

import torch
import torch.distributed as dist

__all__ = ["launch", "worker", "init_from_env", "under_torchrun", "free_port", "backend_for"]

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_for(device: str) -> str:
    return "nccl" if device == "cuda" else "gloo"


def under_torchrun() -> bool:
    """True in a worker that torchrun (or elastic_launch) started with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(device: str = "cpu") -> bool:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT, LOCAL_RANK). Returns True if this call initialised it."""
    if dist.is_initialized() or not under_torchrun():
        return False
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend_for(device))
    return True


def _threads_per_worker(nproc: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, nproc))


def worker(config: dict, resume: bool, progress: bool, verbose: bool = True) -> str:
    """One rank: join the group, train, leave. `config` is TrainConfig.to_dict() (plain
    data: it crosses a process boundary)."""
    from .loop import TrainConfig, train

    if verbose and int(os.environ.get("RANK", "0")) == 0:
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = TrainConfig.from_dict(config)
    if cfg.threads is None and cfg.device == "cpu":  # share the cores between local workers
        cfg.threads = _threads_per_worker(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    created = init_from_env(cfg.device)
    try:
        return str(train(cfg, resume=resume, progress=progress))
    finally:
        if created:
            dist.destroy_process_group()


def launch(config: dict, nproc: int, resume: bool = False, progress: bool = True,
           verbose: bool = True) -> Path:
    """Run `worker` in `nproc` local processes (torch's elastic launcher, no restarts) and
    return the checkpoint folder."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise ValueError("nproc must be >= 1")
    launch_config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"sparling-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{free_port()}", max_restarts=0,
        monitor_interval=0.5, start_method="spawn")
    results = elastic_launch(launch_config, worker)(config, resume, progress, verbose)
    return Path(results[0])
