"""Running a per-clip function over a manifest: parallel, cached, fault-tolerant.

:func:`map_clips` is the one helper every stage (extraction, features,
scoring) uses to go over many clips:

- joblib workers (``n_jobs``; ``-1`` = all cores), or a Dask cluster
  (``backend="dask"``, ``scheduler=ADDRESS``): a run that has had no worker for
  :data:`DASK_NO_WORKERS_TIMEOUT` seconds stops with a clear error, never waits forever;
- worker processes end with the process that started them (a killed run leaves no
  orphaned workers behind);
- a progress bar (tqdm) on long work;
- a per-clip on-disk cache keyed by the SHA-256 of the clip's media files and
  the task's name, version and parameters: a re-run only does new work, and a
  killed run loses at most the clips in flight (each result is written, atomically,
  as soon as it is done);
- per-clip failures recorded (clip_id, path, stage, error), never fatal for
  the other clips. Failures are cached too, so an unchanged bad file is not
  decoded again on every run (``retry_failed=True`` forces it).

Runtime knobs (``n_jobs``, ``backend``, ``progress``) never change results.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import joblib
import pandas as pd

from .exceptions import MerError, ParameterError

__all__ = ["ClipTask", "ClipOutcome", "RunResult", "map_clips", "file_sha256",
           "FAILURE_COLUMNS", "default_cache_dir", "split_scan", "write_failures"]

FAILURE_COLUMNS = ["clip_id", "path", "stage", "error"]
#: Seconds to wait for a Dask scheduler before a clear error (instead of a long hang).
DASK_CONNECT_TIMEOUT = 10
#: Seconds a Dask run may go on with no worker connected before it stops with an error.
DASK_NO_WORKERS_TIMEOUT = 60
#: How often a worker process checks that the process that started it is alive (s).
_PARENT_POLL = 1.0
_watching: list = []


@dataclass
class ClipOutcome:
    """What a task returns for one clip: a value (or ``None``) and its failures."""

    value: Any = None
    failures: list = field(default_factory=list)

    def fail(self, stage: str, path, error: BaseException | str) -> None:
        """Record that ``stage`` failed on ``path``."""
        if isinstance(error, BaseException):
            error = f"{type(error).__name__}: {error}"
        self.failures.append({"stage": stage, "path": str(path or ""), "error": str(error)})


class ClipTask(Protocol):
    """A picklable per-clip computation.

    Attributes
    ----------
    name : str
        Cache namespace.
    version : str
        Bump when the computation's output changes for the same parameters.
    """

    name: str
    version: str

    def params(self) -> dict:
        """Parameters that change the result (part of the cache key)."""

    def inputs(self, row: dict) -> list[str]:
        """Files the result depends on (their content is hashed into the key). A task
        whose clips share a file (a track file of many recordings) also defines
        ``fingerprint(row) -> str``, which part of it is the clip's."""

    def __call__(self, clip_id: str, row: dict) -> ClipOutcome:
        """Compute one clip; record failures in the outcome instead of raising."""


@dataclass
class RunResult:
    """Results of :func:`map_clips`.

    Attributes
    ----------
    values : dict
        ``clip_id`` → value, in manifest order, for clips that produced one.
    failures : pandas.DataFrame
        Columns ``clip_id``, ``path``, ``stage``, ``error``.
    n_computed, n_cached : int
        How many clips were computed now and how many came from the cache.
    modalities : dict
        Filled by :func:`mer_pipeline.features.extract_features`: per modality,
        its extractor's record and how many clips yielded features.
    """

    values: dict
    failures: pd.DataFrame
    n_computed: int = 0
    n_cached: int = 0
    modalities: dict = field(default_factory=dict)


def file_sha256(path, *, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=256)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file, remembered while its size and modification time stay the same
    (a track file shared by 60 clips is hashed once per process, not 60 times)."""
    return file_sha256(path)


def _digest(path) -> str:
    stat = os.stat(path)
    return _file_digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def _cache_key(task, row) -> str:
    h = hashlib.sha256()
    h.update(task.name.encode())
    h.update(str(task.version).encode())
    h.update(json.dumps(task.params(), sort_keys=True, default=str).encode())
    for path in task.inputs(row):
        try:
            h.update(_digest(path).encode())
        except OSError:
            h.update(f"unreadable:{path}".encode())
    fingerprint = getattr(task, "fingerprint", None)
    if fingerprint is not None:  # which part of a shared input is this clip's
        h.update(f"part:{fingerprint(row)}".encode())
    return h.hexdigest()


#: Cache entry format: the SHA-256 of the payload (hex), a newline, the pickled outcome.
#: A damaged entry (a flipped byte anywhere) fails the check and is recomputed.
_ENTRY_SUFFIX = ".entry"


def _read_entry(path: Path):
    """The cached outcome, or ``None`` when the entry is missing or fails its checksum."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    digest, _, payload = data.partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        return None
    try:
        return pickle.loads(payload)
    except Exception:  # noqa: BLE001 - an entry from an incompatible version
        return None


def _write_entry(path: Path, outcome) -> None:
    payload = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    os.close(fd)
    try:
        with open(tmp, "wb") as fh:
            fh.write(hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def single_threaded():
    """BLAS, OpenMP and PyTorch on one thread for the duration: results never depend on how
    many threads a worker (or the single-process path) happened to get, and parallel clips do
    not contend for cores."""
    import sys

    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        if torch is not None and before is not None:
            torch.set_num_threads(before)


def _watch_parent(parent: int | None) -> None:
    """In a worker process started by ``parent``: exit as soon as ``parent`` is gone.

    loky keeps idle workers (and its resource tracker) alive for minutes; after the
    main process is killed (SIGKILL, OOM) they would linger with PPID 1. A daemon thread
    per worker notices the change of parent within :data:`_PARENT_POLL` seconds.
    """
    if parent is None or _watching or os.getpid() == parent:
        return
    if os.getppid() != parent:  # gone already (killed while this worker was starting)
        os._exit(1)
    import threading
    import time

    def watch():
        while True:
            time.sleep(_PARENT_POLL)
            if os.getppid() != parent:
                os._exit(1)

    _watching.append(threading.Thread(target=watch, name="mer-parent-watch", daemon=True))
    _watching[0].start()


def _run_one(task, clip_id: str, row: dict, cache_dir: str | None, retry_failed: bool,
             parent: int | None = None):
    """Worker body: cache lookup, compute, cache write. Never raises for a clip."""
    _watch_parent(parent)
    cache_file = None
    if cache_dir is not None:
        key = _cache_key(task, row)
        cache_file = Path(cache_dir) / task.name / key[:2] / f"{key}{_ENTRY_SUFFIX}"
        outcome = _read_entry(cache_file) if cache_file.is_file() else None
        if outcome is not None:
            valid = getattr(task, "is_valid", lambda v: True)(outcome.value)
            if valid and not (retry_failed and outcome.failures):
                return clip_id, outcome, True
    try:
        with single_threaded():
            outcome = task(clip_id, row)
    except MerError as exc:  # a task should record its failures; be safe anyway
        outcome = ClipOutcome()
        outcome.fail(task.name, row.get("audio_path") or row.get("video_path"), exc)
    except Exception as exc:  # noqa: BLE001 - one clip must never stop the batch
        outcome = ClipOutcome()
        outcome.fail(task.name, row.get("audio_path") or row.get("video_path"), exc)
    if cache_file is not None:
        _write_entry(cache_file, outcome)
    return clip_id, outcome, False


def map_clips(task, manifest: pd.DataFrame, *, cache_dir: str | os.PathLike | None = None,
              n_jobs: int | None = -1, backend: str = "loky", scheduler: str | None = None,
              progress: bool = True, retry_failed: bool = False,
              desc: str | None = None) -> RunResult:
    """Map a per-clip task over a manifest in parallel, with a cache.

    Parameters
    ----------
    task : ClipTask
        Picklable callable ``task(clip_id, row) -> ClipOutcome``.
    manifest : pandas.DataFrame
        Indexed by ``clip_id`` (see :mod:`mer_pipeline.corpus`).
    cache_dir : path or None
        Folder of the per-clip cache; ``None`` disables caching.
    n_jobs : int or None
        joblib workers (``-1``: all cores; ``None``/1: in this process).
    backend : {"loky", "threading", "dask"}
        joblib backend. ``"dask"`` sends clips to the Dask cluster at
        ``scheduler`` (the cache folder must be reachable from its workers).
    scheduler : str or None
        Dask scheduler address (``tcp://host:8786``); required with ``"dask"``.
    progress : bool
        Show a progress bar.
    retry_failed : bool
        Recompute clips whose cached outcome holds failures.
    desc : str or None
        Progress bar label.

    Returns
    -------
    RunResult
    """
    if backend not in {"loky", "threading", "multiprocessing", "dask"}:
        raise ParameterError(f"backend must be loky, threading, multiprocessing or dask; "
                             f"got {backend!r}")
    if backend == "dask" and not scheduler:
        raise ParameterError("backend='dask' needs a scheduler address (--scheduler)")
    if scheduler and backend != "dask":
        raise ParameterError(f"a scheduler address ({scheduler}) is for backend='dask'; "
                             f"got backend={backend!r} (--backend dask --scheduler ADDRESS)")
    rows = manifest.reset_index().to_dict("records")
    cache = None if cache_dir is None else str(Path(cache_dir).resolve())
    parent = os.getpid() if backend in {"loky", "multiprocessing"} else None
    jobs = [joblib.delayed(_run_one)(task, r["clip_id"], r, cache, retry_failed, parent)
            for r in rows]
    outcomes: dict = {}
    n_cached = 0
    bar = _progress(len(jobs), progress, desc or task.name)
    try:
        for clip_id, outcome, cached in _execute(jobs, n_jobs, backend, scheduler):
            outcomes[clip_id] = outcome
            n_cached += cached
            bar.update(1)
    finally:
        bar.close()
    values, failures = {}, []
    for r in rows:
        outcome = outcomes[r["clip_id"]]
        if outcome.value is not None:
            values[r["clip_id"]] = outcome.value
        failures.extend({"clip_id": r["clip_id"], **f} for f in outcome.failures)
    return RunResult(values=values, failures=pd.DataFrame(failures, columns=FAILURE_COLUMNS),
                     n_computed=len(rows) - n_cached, n_cached=n_cached)


def _execute(jobs, n_jobs, backend, scheduler):
    if not jobs:
        return
    if n_jobs in (None, 0, 1) and backend != "dask":
        for job in jobs:
            fn, args, kwargs = job
            yield fn(*args, **kwargs)
        return
    if backend == "dask":
        yield from _execute_dask(jobs, scheduler)
        return
    if backend == "loky":  # the watch starts with each worker, before its first clip
        with joblib.parallel_config(backend="loky", initializer=_watch_parent,
                                    initargs=(os.getpid(),)):
            runner = joblib.Parallel(n_jobs=n_jobs, return_as="generator_unordered")
    else:
        runner = joblib.Parallel(n_jobs=n_jobs, backend=backend,
                                 return_as="generator_unordered")
    yield from runner(jobs)


def _execute_dask(jobs, scheduler):
    """Submit every job to the cluster at ``scheduler``; yield results as they finish.

    Raises :class:`MerError` when the scheduler cannot be reached, or when the run has had
    no worker for :data:`DASK_NO_WORKERS_TIMEOUT` seconds (every worker lost): the clips
    already done are in the cache, so a re-run after restarting workers only does the rest.
    """
    import time

    from distributed import Client, wait

    try:
        client = Client(scheduler, timeout=DASK_CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise MerError(f"cannot reach the Dask scheduler at {scheduler} within "
                       f"{DASK_CONNECT_TIMEOUT} s ({type(exc).__name__}); start one "
                       "(`dask scheduler` and `dask worker ADDRESS`) or drop --backend "
                       "dask") from None
    with client:
        pending = {client.submit(fn, *args, pure=False, **kwargs) for fn, args, kwargs in jobs}
        no_workers_since = None
        try:
            while pending:
                try:
                    done, _ = wait(pending, timeout=1.0, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    done = set()
                for future in done:
                    pending.discard(future)
                    yield future.result()
                if done or client.scheduler_info().get("workers"):
                    no_workers_since = None
                    continue
                no_workers_since = no_workers_since or time.monotonic()
                if time.monotonic() - no_workers_since > DASK_NO_WORKERS_TIMEOUT:
                    raise MerError(
                        f"the Dask cluster at {scheduler} has had no worker for "
                        f"{DASK_NO_WORKERS_TIMEOUT} s with {len(pending)} clip(s) left; "
                        "start workers (`dask worker ADDRESS`) and run again: the clips "
                        "done so far are cached")
        finally:
            if pending:
                client.cancel(list(pending))


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool, desc: str):
    if not enabled or total == 0:
        return _NoBar()
    from tqdm.auto import tqdm

    # disable=None: no bar when stderr is not a terminal (logs, CI)
    return tqdm(total=total, desc=desc, unit="clip", leave=False, disable=None)


def default_cache_dir(out_dir: str | os.PathLike | None) -> Path:
    """The per-clip cache folder: ``$MER_CACHE_DIR`` if set, else ``<out_dir>/.cache``, else
    (no output folder: scoring) the user's cache, ``$XDG_CACHE_HOME/mer_pipeline`` or
    ``~/.cache/mer_pipeline``."""
    from .config import CACHE_ENV

    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if out_dir is not None:
        return Path(out_dir) / ".cache"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mer_pipeline"


def split_scan(data) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Manifest and manifest-stage failures from a manifest or a ``CorpusScan``."""
    unparsed = getattr(data, "unparsed", None)
    clips = getattr(data, "clips", data)
    if unparsed is None or len(unparsed) == 0:
        return clips, pd.DataFrame(columns=FAILURE_COLUMNS)
    fails = pd.DataFrame({"clip_id": "", "path": unparsed["path"].to_numpy(),
                          "stage": "manifest", "error": unparsed["reason"].to_numpy()})
    return clips, fails


def write_failures(failures: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``failures.csv`` (always, possibly with a header only)."""
    from ._io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        failures.reindex(columns=FAILURE_COLUMNS).to_csv(tmp, index=False)
    return path
