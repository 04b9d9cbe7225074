"""The loaded checkpoints: one entry per checkpoint folder, loaded once at start-up.

Model ids are folder names found by listing SPARLING_CHECKPOINTS; requests only ever look
ids up in this dict, no path is built from user input.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sparling_core.analysis.inspect import channel_summaries, parse_assignment
from sparling_core.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from sparling_core.domains import Domain, domain_names, get_domain
from sparling_core.models.sparling import SparlingModel

from .batching import Batcher

log = logging.getLogger(__name__)
T = TypeVar("T")


def public_domain_id(name: str) -> str:
    """The id a domain has in the API: its registered name, or for parametrised domains
    ("folder:/some/path") the kind and the folder's last part ("folder:path"), so that no
    server path is shown."""
    if ":" not in name:
        return name
    kind, arg = name.split(":", 1)
    return f"{kind}:{Path(arg).name}"


@dataclass
class LoadedModel:
    id: str
    checkpoint: Checkpoint
    domain: Domain
    # One forward at a time per model: CPU threads are better spent inside one forward than
    # fighting over cores, and nothing else can touch the module meanwhile.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _summary_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _summaries: list[dict] | None = field(default=None, repr=False)
    # concurrent single-image requests share forwards (backend/batching.py)
    batcher: Batcher = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.batcher = Batcher(self.run, name=self.id)

    @property
    def model(self) -> SparlingModel:
        return self.checkpoint.model

    @property
    def domain_id(self) -> str:
        return public_domain_id(self.domain.name)

    @property
    def assignment(self) -> dict[int, int] | None:
        """The evaluated channel -> symbol index map of metrics.json, when there is one."""
        metrics = self.checkpoint.metrics or {}
        mapping = metrics.get("assignment", metrics.get("channel_to_digit"))
        return parse_assignment(mapping, self.checkpoint.config.motif_channels,
                                len(self.domain.symbols))

    def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """fn(model, *args, **kwargs) under this model's lock."""
        with self.lock:
            return fn(self.model, *args, **kwargs)

    def summaries(self, n: int) -> list[dict]:
        """Channel summaries over n validation images: computed on first use, then cached."""
        with self._summary_lock:
            if self._summaries is None:
                self._summaries = self.run(channel_summaries, n, None, self.assignment)
            return self._summaries


@dataclass
class ModelStore:
    folder: Path
    models: dict[str, LoadedModel] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # folder name -> why it did not load
    problem: str | None = None  # the folder itself is unusable

    @classmethod
    def load(cls, folder: Path) -> ModelStore:
        """Load every checkpoint folder under `folder`; broken ones go to `errors`."""
        store = cls(Path(folder))
        if not store.folder.is_dir():
            store.problem = (f"checkpoint folder {store.folder} does not exist; "
                             "set SPARLING_CHECKPOINTS to a folder of checkpoint folders")
            log.warning(store.problem)
            return store
        for path in sorted(store.folder.iterdir()):
            if not path.is_dir() or path.name.startswith("."):
                continue
            try:
                checkpoint = load_checkpoint(path)
                domain = get_domain(checkpoint.config.domain)
            except CheckpointError as e:
                store.errors[path.name] = str(e).replace(str(path), path.name)
            except ValueError as e:  # an unknown domain
                store.errors[path.name] = f"its domain cannot be loaded: {e}"
            except Exception as e:  # a foreign folder must not stop the others from loading
                store.errors[path.name] = f"cannot be loaded: {type(e).__name__}: {e}"
            else:
                checkpoint.model.eval()
                store.models[path.name] = LoadedModel(path.name, checkpoint, domain)
                continue
            log.warning("checkpoint %s not loaded: %s", path.name, store.errors[path.name])
        if not store.models and store.problem is None:
            store.problem = f"no checkpoint could be loaded from {store.folder}"
        return store

    def get(self, model_id: str) -> LoadedModel | None:
        return self.models.get(model_id)

    def domains(self) -> dict[str, Domain]:
        """Public domain id -> domain: the registered built-in domains and the domains of
        the loaded models."""
        found = {name: get_domain(name) for name in domain_names() if ":" not in name}
        for loaded in self.models.values():
            found.setdefault(loaded.domain_id, loaded.domain)
        return dict(sorted(found.items()))

    def default_model(self, preferred: str | None) -> str | None:
        """The model the explorer opens on: `preferred` (SPARLING_DEFAULT_MODEL) when loaded,
        else digit-circle-mt when present, else the first by id."""
        for candidate in (preferred, "digit-circle-mt"):
            if candidate and candidate in self.models:
                return candidate
        return min(self.models) if self.models else None
