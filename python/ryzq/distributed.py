"""A model folder converted by the workers of an executor: one job per output file.

Any :class:`concurrent.futures.Executor` runs the jobs: ``dask.distributed``'s
``Client.get_executor()``, a ``ProcessPoolExecutor``, or anything with ``submit``. Every job
plans the whole conversion as a one-process run does, converts its one output file into the
parts folder beside the destination (``.NAME.ryzq-parts``), and returns what it did with the
file's size and sha256. The driver records each finished part beside its file, and puts the parts
together in the plan's order once all are done, so the output and the report are those of a
one-process run, whatever the number of workers or the order they finish in. Until then there
is nothing at the destination. A rerun of the same conversion reuses every recorded part whose
file still has its sha256 and whose source files have not changed since.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ryzq import _ryzq
from ryzq._ryzq import RyzqError
from ryzq.progress import ProgressBar

# Each finished part's record, beside its file in the parts folder: NAME + RECORD_SUFFIX.
RECORD_SUFFIX = ".done.json"
RECORD_VERSION = 1


def quantize_model_with(
    executor: concurrent.futures.Executor,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    options: dict[str, Any],
    *,
    progress: bool = False,
) -> _ryzq.QuantizationReport:
    """Quantize the model folder ``src`` into the model folder ``dst`` by jobs on
    ``executor``, one per output file; see the module's description."""
    started = time.monotonic()
    src, dst = os.fspath(src), os.fspath(dst)
    request = _ryzq.QuantizeRequest(**options)
    parts, _warnings, folder = _ryzq.plan_parts(src, dst, request=request)
    folder = Path(folder)
    fingerprint = _fingerprint(options)
    done: dict[int, str] = {}
    for i, part in enumerate(parts):
        record = _read_record(folder, part["name"])
        if record is not None and _reusable(record, part, folder, fingerprint):
            done[i] = record["part"]
    reused = len(done)
    bar = None
    if progress:
        bar = ProgressBar(
            sum(p["bytes_in"] for p in parts), label=f"{Path(src).name} ", unit="files"
        )
        if reused:
            bar(reused, len(parts), sum(parts[i]["bytes_in"] for i in done))
    threads = options.get("threads") or _threads_per_job(executor)
    # Jobs write files: an executor that keys its tasks by their arguments (Dask's, pure by
    # default) must not take one run's job for another's.
    run = uuid.uuid4().hex
    futures: dict[concurrent.futures.Future, int] = {}
    failures: dict[int, BaseException] = {}
    try:
        for i, part in enumerate(parts):
            if i not in done:
                job = executor.submit(
                    convert_part, src, dst, options, i, part["name"], threads, run
                )
                futures[job] = i
        for job in concurrent.futures.as_completed(futures):
            i = futures[job]
            try:
                result = job.result()
            except Exception as err:  # each is said below, by its part
                failures[i] = err
                continue
            record = {
                "version": RECORD_VERSION,
                "request": fingerprint,
                "sources": _identities(parts[i]["sources"]),
                "size": result["size"],
                "sha256": result["sha256"],
                "part": result["part"],
            }
            _write_record(folder, parts[i]["name"], record)
            done[i] = result["part"]
            if bar is not None:
                bar(len(done), len(parts), parts[i]["bytes_in"])
    except BaseException:
        for job in futures:
            job.cancel()
        raise
    if failures:
        first = min(failures)
        raise _failure(parts[first]["name"], failures[first], len(failures), len(parts))
    report = _ryzq.finish_parts(
        src,
        dst,
        request=request,
        parts=[done[i] for i in range(len(parts))],
        seconds=time.monotonic() - started,
        reused=reused,
    )
    return report


def convert_part(
    src: str,
    dst: str,
    options: dict[str, Any],
    index: int,
    name: str,
    threads: int | None,
    run: str,
) -> dict[str, Any]:
    """The job of one output file of run ``run``: converts it into the parts folder; returns
    what it did, and the file's size and sha256."""
    options = dict(options)
    if options.get("threads") is None:
        options["threads"] = threads or _threads_in_dask_task()
    request = _ryzq.QuantizeRequest(**options)
    part = _ryzq.convert_part(src, dst, request=request, index=index)
    path = Path(_ryzq.parts_folder(dst)) / name
    size, sha256 = _digest(path)
    return {"index": index, "size": size, "sha256": sha256, "part": part}


def _failure(name: str, err: BaseException, failed: int, total: int) -> RyzqError:
    others = ""
    if failed > 1:
        others = f" ({failed - 1} other part{'s' if failed > 2 else ''} failed too)"
    if isinstance(err, RyzqError):
        message = str(err)
    else:
        message = f"the job that converts it failed: {type(err).__name__}: {err}"
    error = RyzqError(
        f"{name}: not converted{others}; the {total - failed} other parts are kept for a "
        f"rerun, which redoes only what is missing: {message}"
    )
    error.kind = getattr(err, "kind", "job_failed")
    error.path = getattr(err, "path", None)
    return error


def _threads_per_job(executor: concurrent.futures.Executor) -> int | None:
    """Threads for each job of a pool of processes or threads on this machine: its cores
    shared among the pool's workers. ``None`` elsewhere: the job decides where it runs."""
    workers = getattr(executor, "_max_workers", None)
    if isinstance(
        executor, (concurrent.futures.ProcessPoolExecutor, concurrent.futures.ThreadPoolExecutor)
    ) and isinstance(workers, int):
        return max(1, _cores() // workers)
    return None


def _threads_in_dask_task() -> int | None:
    """In a task of a Dask worker: this machine's cores shared among the tasks its workers
    run at once (each worker runs as many as it has threads). ``None`` outside Dask: the
    kernels' default, every core."""
    try:
        from distributed import get_worker
    except ImportError:
        return None
    try:
        worker = get_worker()
    except ValueError:
        return None
    slots = worker.state.nthreads
    try:
        workers = worker.client.scheduler_info(n_workers=-1)["workers"].values()
        slots = sum(w["nthreads"] for w in workers if w.get("host") == worker.ip) or slots
    except Exception:  # the worker's own threads are a safe lower bound
        pass
    return max(1, _cores() // max(slots, 1))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _fingerprint(options: dict[str, Any]) -> str:
    """What the request asks, without how many threads it runs on (which changes no byte)."""
    asked = {k: v for k, v in options.items() if k != "threads" and v is not None}
    text = json.dumps(asked, sort_keys=True, default=str)
    return hashlib.sha256(f"{_ryzq.__version__}\n{text}".encode()).hexdigest()


def _identities(paths: list[str]) -> dict[str, list[int]]:
    identities = {}
    for path in paths:
        st = os.stat(path)
        identities[os.fspath(path)] = [st.st_size, st.st_mtime_ns]
    return identities


def _reusable(record: dict[str, Any], part: dict[str, Any], folder: Path, fingerprint: str) -> bool:
    if record.get("request") != fingerprint:
        return False
    try:
        if record.get("sources") != _identities(part["sources"]):
            return False
        path = folder / part["name"]
        if path.stat().st_size != record.get("size"):
            return False
        return _digest(path)[1] == record.get("sha256")
    except OSError:
        return False


def _digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _read_record(folder: Path, name: str) -> dict[str, Any] | None:
    try:
        record = json.loads((folder / f"{name}{RECORD_SUFFIX}").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
        return None
    return record


def _write_record(folder: Path, name: str, record: dict[str, Any]) -> None:
    path = folder / f"{name}{RECORD_SUFFIX}"
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def dask_executor(
    scheduler: str | None = None, *, workers: int | None = None
) -> Iterator[concurrent.futures.Executor]:
    """An executor on Dask: of the scheduler at ``scheduler``, or of a new local cluster of
    ``workers`` processes of one thread each, closed on leaving. Dask is an optional extra,
    ``ryzq[dask]``."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise RyzqError(
            "converting on Dask workers needs dask.distributed: pip install 'ryzq[dask]'"
        ) from None
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as err:
            raise RyzqError(f"{scheduler}: no Dask scheduler answers there: {err}") from None
        with client:
            yield client.get_executor()
        return
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client.get_executor()
