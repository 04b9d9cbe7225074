"""The loaded checkpoints: one entry per checkpoint folder, loaded once at start-up.

Model ids are folder names found by listing SPARLING_CHECKPOINTS; requests only ever look
ids up in this dict, no path is built from user input.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sparling_core.analysis import inspect as _inspect
from sparling_core.analysis.inspect import channel_summaries, parse_assignment
from sparling_core.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from sparling_core.domains import Domain, domain_names, get_domain
from sparling_core.models.sparling import SparlingModel

from .batching import Batcher
from .errors import ResponseTooLarge

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


def count_values(value, stop: int) -> int:
    """The numbers and strings in a JSON-like value; counting stops soon after `stop`."""
    count, todo = 0, [value]
    while todo and count <= stop:
        item = todo.pop()
        if isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, (list, tuple)):
            todo.extend(item)
        elif item is not None:
            count += 1
    return count


def _too_many(values: int, cap: int, what: str) -> str:
    return (f"{what} would carry {values if values <= cap + 1 else f'more than {cap}'} "
            f"values, more than the {cap} a response may carry (SPARLING_MAX_RESPONSE_VALUES); "
            "send fewer images, or leave out dense=true")


class SummariesStopped(Exception):  # noqa: N818 - the server stops: not an error to report
    """Computing channel summaries was stopped because the server is stopping."""


@dataclass
class LoadedModel:
    id: str
    checkpoint: Checkpoint
    domain: Domain
    # One forward at a time per model: CPU threads are better spent inside one forward than
    # fighting over cores, and nothing else can touch the module meanwhile.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # channel summaries: computed at most once, by whichever thread claims them first
    _summary_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _summary_future: Future | None = field(default=None, repr=False)
    _summary_thread: threading.Thread | None = field(default=None, repr=False)
    summary_progress: tuple[int, int] = (0, 0)  # (images done, images in all)
    stopping: threading.Event = field(default_factory=threading.Event, repr=False)
    # concurrent single-image requests share forwards (backend/batching.py)
    batcher: Batcher = field(init=False, repr=False)
    max_response_values: int | None = None  # SPARLING_MAX_RESPONSE_VALUES, set at start-up

    def __post_init__(self) -> None:
        self.batcher = Batcher(self.run_each, name=self.id)

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
        """fn(model, *args, **kwargs) under this model's lock, on its batcher's compute
        thread (one OpenMP team per model: see `Batcher.call`); its whole result is one
        response. ResponseTooLarge (413) when that would carry more than
        `max_response_values` numbers: dense maps are refused before they are computed,
        anything else before it is serialised."""
        cap = self.max_response_values
        if cap is not None and fn is _inspect.run_images:
            images = args[0] if args else kwargs["images"]
            dense = args[1] if len(args) > 1 else kwargs.get("dense", False)
            flags = [dense] * len(images) if isinstance(dense, bool) else list(dense)
            self.check_dense(sum(map(bool, flags)), images, cap)
        result = self.batcher.call(self._locked, fn, *args, **kwargs)
        if cap is not None and (count := count_values(result, cap)) > cap:
            raise ResponseTooLarge(_too_many(count, cap, "this result"))
        return result

    def _on_compute_thread(self, fn: Callable[..., T], *args) -> T:
        """fn(*args) on the batcher's compute thread, under this model's lock."""
        return self.batcher.call(self._under_lock, fn, *args)

    def _under_lock(self, fn: Callable[..., T], *args) -> T:
        with self.lock:
            return fn(*args)

    def _locked(self, fn: Callable[..., T], *args, **kwargs) -> T:
        with self.lock:
            return fn(self.model, *args, **kwargs)

    def run_each(self, fn: Callable[..., list[T]], images: Sequence, dense: Sequence[bool],
                 **kwargs) -> list[T]:
        """fn(model, images, dense, **kwargs) under this model's lock, for the request
        batcher: one result per image, each its own response, so `max_response_values`
        applies to each result (a batch of 8 small answers is not one large one)."""
        cap = self.max_response_values
        if cap is not None and any(dense):
            self.check_dense(1, images, cap)
        with self.lock:
            results = fn(self.model, images, dense, **kwargs)
        if cap is not None:
            for result in results:
                if (count := count_values(result, cap)) > cap:
                    raise ResponseTooLarge(_too_many(count, cap, "this result"))
        return results

    def check_dense(self, n_dense: int, images: Sequence, cap: int) -> None:
        """ResponseTooLarge before computing when n_dense dense maps exceed the cap."""
        if n_dense:
            values = (n_dense * self.checkpoint.config.motif_channels * len(images[0])
                      * len(images[0][0]))
            if values > cap:
                raise ResponseTooLarge(_too_many(values, cap, "dense maps"))

    def _claim_summaries(self, n: int) -> tuple[Future, bool]:
        """The future of this model's channel summaries, and whether the caller created it
        (and so must compute them)."""
        with self._summary_lock:
            if self._summary_future is None:
                self._summary_future = Future()
                self.summary_progress = (0, n)
                return self._summary_future, True
            return self._summary_future, False

    def _compute_summaries(self, n: int, future: Future) -> None:
        def progress(done: int, total: int) -> None:
            self.summary_progress = (done, total)
            if self.stopping.is_set():
                raise SummariesStopped("the server is stopping")

        try:
            # each batch's forward and decodes run on the model's compute thread under its
            # lock, not the whole run: other requests for this model are answered between
            # batches, and no second OpenMP team slows them down meanwhile (Batcher.call)
            result = channel_summaries(self.model, n, None, self.assignment,
                                       progress=progress, run=self._on_compute_thread)
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits for it
            future.set_exception(e)
        else:
            future.set_result(result)

    def summaries_future(self, n: int) -> Future:
        """The channel summaries over n validation images as a future: started in a
        background thread on first use, never computed twice (a failure is kept)."""
        future, mine = self._claim_summaries(n)
        if mine:
            self._summary_thread = threading.Thread(
                target=self._compute_summaries, args=(n, future), daemon=True,
                name=f"channel-summaries-{self.id}")
            self._summary_thread.start()
        return future

    def summaries(self, n: int) -> list[dict]:
        """The channel summaries, computed in the calling thread unless another thread is
        computing them already (then waits for that one); raises what computing raised."""
        future, mine = self._claim_summaries(n)
        if mine:
            self._compute_summaries(n, future)
        return future.result()

    def stop_summaries(self, timeout: float | None = None) -> None:
        """Stop computing summaries (at the next batch) and wait for the thread."""
        self.stopping.set()
        if self._summary_thread is not None:
            self._summary_thread.join(timeout)


def _without_paths(message: str, folder: Path) -> str:
    """`message` with the checkpoint folder's path (as given and resolved) left out."""
    for prefix in sorted({str(folder.resolve()), str(folder.absolute()), str(folder)},
                         key=len, reverse=True):
        if prefix not in (".", ""):
            message = message.replace(prefix + "/", "").replace(prefix, "")
    return message


@dataclass
class ModelStore:
    folder: Path
    models: dict[str, LoadedModel] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # folder name -> why it did not load
    problem: str | None = None  # the folder itself is unusable
    _precompute: threading.Thread | None = field(default=None, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)

    @classmethod
    def load(cls, folder: Path) -> ModelStore:
        """Load every checkpoint folder under `folder`; broken ones go to `errors`."""
        store = cls(Path(folder))
        if not store.folder.is_dir():
            # messages that clients see name no server path; the log has it
            log.warning("checkpoint folder %s does not exist", store.folder)
            store.problem = ("the checkpoint folder does not exist; "
                             "set SPARLING_CHECKPOINTS to a folder of checkpoint folders")
            return store
        for path in sorted(store.folder.iterdir()):
            if not path.is_dir() or path.name.startswith("."):
                continue
            if path.is_symlink():  # a checkpoint is a real folder inside SPARLING_CHECKPOINTS
                store.errors[path.name] = "is a symbolic link; not loaded"
                log.warning("checkpoint %s not loaded: a symbolic link", path.name)
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
            store.problem = "no checkpoint could be loaded from the checkpoint folder"
        store.errors = {name: _without_paths(message, store.folder)
                        for name, message in store.errors.items()}
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

    def precompute_summaries(self, n: int, first: str | None = None) -> None:
        """Compute every model's channel summaries (over n validation images) in one
        background thread, `first` first, then the others by id. A model whose summaries a
        request has started already is waited for, not computed again."""
        order = sorted(self.models, key=lambda model_id: (model_id != first, model_id))

        def work() -> None:
            for model_id in order:
                if self._stopping.is_set():
                    return
                try:
                    self.models[model_id].summaries(n)
                except SummariesStopped:
                    return
                except Exception as e:  # noqa: BLE001 - kept in the future; requests say 409
                    log.warning("channel summaries of %s failed: %s", model_id, e)
            log.info("channel summaries of %d models computed", len(order))

        self._precompute = threading.Thread(target=work, daemon=True,
                                            name="channel-summaries-precompute")
        self._precompute.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop computing channel summaries and wait (up to `timeout` s per thread) for the
        threads doing it; each stops after the batch it is on. Then close each model's
        request batcher (requests already submitted are answered) and wait for its thread."""
        self._stopping.set()
        for loaded in self.models.values():
            loaded.stopping.set()
        if self._precompute is not None:
            self._precompute.join(timeout)
        for loaded in self.models.values():
            loaded.stop_summaries(timeout)
        for loaded in self.models.values():
            loaded.batcher.close(timeout)
