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

A model on the Hub converts the same way while it downloads (:func:`quantize_streamed`): its
weight files stand as their headers until each is in the cache, and a job starts as soon as the
files it reads are there. Workers elsewhere must see the Hub's cache at the same path too.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ryzq import _ryzq
from ryzq._ryzq import RyzqError
from ryzq.hub import HubStream, download_bars
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
    arrivals: Iterator[str] | None = None,
    shown_src: str | os.PathLike | None = None,
) -> _ryzq.QuantizationReport:
    """Quantize the model folder ``src`` into the model folder ``dst`` by jobs on
    ``executor``, one per output file; see the module's description. With ``arrivals``, the
    weight files of ``src`` are placeholders (their headers) until the iterator yields their
    names, each once it is in place: a job starts when the files it reads are. The report names
    ``shown_src`` as the source where it is given."""
    started = time.monotonic()
    src, dst = os.fspath(src), os.fspath(dst)
    request = _ryzq.QuantizeRequest(**options)
    parts, _warnings, folder = _ryzq.plan_parts(src, dst, request=request)
    folder = Path(folder)
    fingerprint = _fingerprint(options, Path(src))
    arrived: set[str] | None = None if arrivals is None else set()
    done: dict[int, str] = {}
    for i, part in enumerate(parts):
        if arrived is not None and not all(Path(s).is_symlink() for s in part["sources"]):
            continue
        record = _read_record(folder, part["name"])
        if record is not None and _reusable(record, part, folder, fingerprint):
            done[i] = record["part"]
    reused = len(done)
    bar = None
    if progress:
        bar = ProgressBar(
            sum(p["bytes_in"] for p in parts), label=f"{Path(shown_src or src).name} ", unit="files"
        )
        if reused:
            bar(reused, len(parts), sum(parts[i]["bytes_in"] for i in done))
    threads = options.get("threads") or _threads_per_job(executor)
    # Jobs write files: an executor that keys its tasks by their arguments (Dask's, pure by
    # default) must not take one run's job for another's.
    run = uuid.uuid4().hex
    futures: dict[concurrent.futures.Future, int] = {}
    failures: dict[int, BaseException] = {}
    lock = threading.Lock()

    # Released once per job, when its end is recorded.
    settled = threading.Semaphore(0)

    def finished(job: concurrent.futures.Future) -> None:
        # On whatever thread ends the job, so that what is done is kept whatever the driver
        # is doing (downloading the next weight file, failing). A record that cannot be
        # written is that part's failure: it is redone.
        i = futures[job]
        try:
            record(job, i)
        except BaseException as err:
            with lock:
                failures.setdefault(i, err)
        finally:
            settled.release()

    def record(job: concurrent.futures.Future, i: int) -> None:
        if job.cancelled():
            raise concurrent.futures.CancelledError()
        err = job.exception()
        if err is not None:
            raise err
        result = job.result()
        entry = {
            "version": RECORD_VERSION,
            "request": fingerprint,
            "sources": _identities(parts[i]["sources"]),
            "size": result["size"],
            "sha256": result["sha256"],
            "part": result["part"],
        }
        _write_record(folder, parts[i]["name"], entry)
        with lock:
            done[i] = result["part"]
            if bar is not None:
                bar(len(done), len(parts), parts[i]["bytes_in"])

    def submit_ready() -> None:
        for i, part in enumerate(parts):
            if i in done or i in futures.values():
                continue
            if arrived is None or all(Path(s).name in arrived for s in part["sources"]):
                job = executor.submit(
                    convert_part, src, dst, options, i, part["name"], threads, run
                )
                futures[job] = i
                job.add_done_callback(finished)

    def wait_for_all() -> None:
        # The futures' ends, and then their records (callbacks run after a future's waiters
        # are woken).
        for _ in range(len(futures)):
            settled.acquire()

    try:
        submit_ready()
        if arrivals is not None and arrived is not None:
            for name in arrivals:
                arrived.add(Path(name).name)
                submit_ready()
    except KeyboardInterrupt:
        # Out now: what has not started does not (Dask's executor stops running ones too).
        for job in futures:
            job.cancel()
        raise
    except BaseException:
        # Nothing more starts, and what was started ends and is recorded, for a rerun.
        wait_for_all()
        raise
    wait_for_all()
    if failures:
        first = min(failures)
        raise _failure(parts[first]["name"], failures[first], len(failures), len(parts))
    assert len(done) == len(parts), "every job ended in a record or a failure"
    return _ryzq.finish_parts(
        src,
        dst,
        request=request,
        parts=[done[i] for i in range(len(parts))],
        seconds=time.monotonic() - started,
        reused=reused,
        shown_src=None if shown_src is None else os.fspath(shown_src),
    )


def quantize_streamed(
    stream: HubStream,
    dst: str | os.PathLike,
    options: dict[str, Any],
    *,
    progress: bool = False,
    executor: concurrent.futures.Executor | None = None,
) -> _ryzq.QuantizationReport:
    """Quantize a model on the Hub into the model folder ``dst`` while its weight files
    download: the conversion is planned from their headers, and each output file is converted
    (on ``executor``, by default a thread of this process) as soon as the weight files it reads
    are in the cache, while the next download."""
    dst = os.fspath(dst)
    folder = Path(_ryzq.parts_folder(dst))
    staging = folder / "source"
    made = not folder.exists()
    own = executor is None
    pool = concurrent.futures.ThreadPoolExecutor(1) if executor is None else executor
    arrivals = None
    try:
        with download_bars(progress):
            _stage(stream, staging)
            arrivals = _arrivals(stream, staging)
            return quantize_model_with(
                pool,
                staging,
                dst,
                options,
                progress=progress,
                arrivals=arrivals,
                shown_src=stream.model.path,
            )
    except BaseException:
        if arrivals is not None:
            arrivals.close()
        if own:
            pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(staging, ignore_errors=True)
        if made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    finally:
        if own:
            pool.shutdown(wait=True, cancel_futures=True)


def _stage(stream: HubStream, staging: Path) -> None:
    """The model as a folder of links into the cache, but for the weight files not fetched
    yet: each of those is its header, at the file's full size (a sparse file)."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    weights = set(stream.weights)
    for path in sorted(stream.model.path.rglob("*")):
        name = path.relative_to(stream.model.path)
        if path.is_file() and str(name) not in weights:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.realpath(path), staging / name)
    for name in stream.weights:
        cached = stream.cached(name)
        if cached is not None:
            os.symlink(os.path.realpath(cached), staging / name)
            continue
        header = stream.header(name)
        try:
            described = json.loads(header[8:])
            data = max(
                (t["data_offsets"][1] for k, t in described.items() if k != "__metadata__"),
                default=0,
            )
        except (ValueError, TypeError, KeyError, IndexError):
            raise RyzqError(
                f"{stream.model.url}: {name}: its header is not a safetensors header"
            ) from None
        with open(staging / name, "wb") as f:
            f.write(header)
            f.truncate(len(header) + int(data))


# Weight files downloading at once: enough to fill a link that one connection does not, few
# enough that the first arrive early and their conversion overlaps the rest.
DOWNLOADS_AT_ONCE = 4


def _arrivals(stream: HubStream, staging: Path) -> Iterator[str]:
    """Each weight file once it is fetched and linked in place of its placeholder, in the
    order they arrive; the next ones download meanwhile, in the order of the files. Closed
    early (an error, Ctrl-C), no new download starts; those under way end on their own, on
    threads that do not hold the process back from exiting."""

    def fetch(name: str) -> str:
        target = staging / name
        if not target.is_symlink():
            path = stream.download(name)
            link = staging / f".{name}.link"
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            os.symlink(os.path.realpath(path), link)
            os.replace(link, target)
        return str(target)

    names: queue.Queue[str] = queue.Queue()
    for name in stream.weights:
        names.put(name)
    arrived: queue.Queue[tuple[str | None, BaseException | None]] = queue.Queue()
    stop = threading.Event()

    def download() -> None:
        while not stop.is_set():
            try:
                name = names.get_nowait()
            except queue.Empty:
                return
            try:
                arrived.put((fetch(name), None))
            except BaseException as err:
                arrived.put((None, err))

    for _ in range(min(DOWNLOADS_AT_ONCE, len(stream.weights))):
        threading.Thread(target=download, daemon=True).start()
    try:
        for _ in stream.weights:
            path, err = arrived.get()
            if err is not None:
                raise err
            assert path is not None
            yield path
    finally:
        stop.set()


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


def _fingerprint(options: dict[str, Any], src: Path) -> str:
    """What the request asks (but how many threads it runs on, which changes no byte), and the
    model's description that every part's plan reads: its config and its index."""
    asked = {k: v for k, v in options.items() if k != "threads" and v is not None}
    text = json.dumps(asked, sort_keys=True, default=str)
    digest = hashlib.sha256(f"{_ryzq.__version__}\n{text}\n".encode())
    for name in ("config.json", "model.safetensors.index.json"):
        with contextlib.suppress(OSError):
            digest.update(name.encode() + b"\0" + (src / name).read_bytes())
    return digest.hexdigest()


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
