"""Where the per-shard work runs: this process, a local process pool, or a Dask cluster.

The ingest (one task per input file), feature (one per shard) and embed (one per shard)
stages run their work through it. The ``[compute]`` table of a build configuration picks one:

``scheduler = "processes"``
    ``n_workers`` local processes (1 = run in this process).
``scheduler = "dask"``
    A ``dask.distributed`` cluster: the one at ``address`` (``"tcp://host:8786"``), or, when
    ``address`` is empty, a ``LocalCluster`` of ``n_workers`` single-threaded processes that is
    started here and closed at the end.

Either way, `shard_runner` hands out one function, ``run(fn, jobs)``, that calls ``fn(*job)``
for every job and yields each result as its job finishes (in completion order). A job that
raises a `latentcat.errors.LatentcatError` stops the run with the same one-line error; the
jobs not yet started are cancelled. Jobs must read and write only paths every worker can
reach (see docs/dask.md): `check_folders` and `not_on_worker` give the error a job raises for a
path its host does not see, `check_written` the one the caller raises for an output it cannot
see, and `write_parquet` writes a job's output under a temporary name and renames it into place.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import as_completed as _local_as_completed
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from latentcat.atomic import write_file
from latentcat.errors import InputError, LatentcatError

SCHEDULERS = ("processes", "dask")
CONNECT_TIMEOUT = "30s"  # how long to wait for the scheduler at `address` to answer

Runner = Callable[[Callable[..., Any], Iterable[tuple]], Iterator[Any]]


def check_scheduler(scheduler: str, address: str | None = None, n_workers: int = 1) -> None:
    """Raise InputError unless the compute settings name a known scheduler and >= 1 worker.

    Parameters
    ----------
    scheduler : str
        "processes" or "dask".
    address : str or None
        Dask scheduler address; only allowed with ``scheduler="dask"``.
    n_workers : int
        Worker processes (ignored by a Dask cluster given by ``address``).
    """
    if scheduler not in SCHEDULERS:
        raise InputError(f"[compute] scheduler must be one of {list(SCHEDULERS)}, got {scheduler!r}")
    if address and scheduler != "dask":
        raise InputError(f"[compute] address {address!r} needs scheduler = \"dask\", not {scheduler!r}")
    if n_workers < 1:
        raise InputError(f"workers must be >= 1, got {n_workers} ([features] workers in a build configuration)")


@contextmanager
def shard_runner(scheduler: str = "processes", address: str | None = None, n_workers: int = 1) -> Iterator[Runner]:
    """Open the pool the compute settings ask for and yield its ``run(fn, jobs)`` function.

    Parameters
    ----------
    scheduler : {"processes", "dask"}
        A local process pool, or a ``dask.distributed`` cluster.
    address : str or None
        Address of a running Dask scheduler; None or "" starts a ``LocalCluster`` for the
        duration of the block.
    n_workers : int
        Local worker processes (for "processes", and for a Dask ``LocalCluster``).

    Yields
    ------
    callable
        ``run(fn, jobs)``: an iterator over ``fn(*job)`` for each job, in completion order.
        ``fn`` and the jobs must be picklable (a module-level function and plain values).

    Raises
    ------
    InputError
        For unknown settings, or a Dask scheduler that cannot be reached.
    """
    check_scheduler(scheduler, address, n_workers)
    if scheduler == "processes":
        yield lambda fn, jobs: _run_processes(fn, list(jobs), n_workers)
        return
    with _dask_client(address or None, n_workers) as client:
        yield lambda fn, jobs: _run_dask(client, fn, list(jobs))


def _run_processes(fn: Callable[..., Any], jobs: list[tuple], n_workers: int) -> Iterator[Any]:
    """Run the jobs here (one worker or one job) or in a pool of spawned processes."""
    if n_workers == 1 or len(jobs) <= 1:
        for job in jobs:
            yield fn(*job)
        return
    pool = ProcessPoolExecutor(max_workers=min(n_workers, len(jobs)), mp_context=get_context("spawn"))
    futures = [pool.submit(fn, *job) for job in jobs]
    try:
        for future in _local_as_completed(futures):
            yield _result(future)
    except BaseException:  # an error, Ctrl-C or SIGTERM: stop the workers now, not when their jobs end
        pool.shutdown(wait=False, cancel_futures=True)
        for process in list((getattr(pool, "_processes", None) or {}).values()):  # no public way to stop them
            process.terminate()
        raise
    pool.shutdown(wait=True)


@contextmanager
def _dask_client(address: str | None, n_workers: int):
    """A dask.distributed Client of the cluster at ``address``, or of a new LocalCluster."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError('[compute] scheduler = "dask" needs the dask[distributed] package: '
                         'pip install "dask[distributed]"') from None
    if address:
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise InputError(f"[compute] cannot reach the Dask scheduler at {address} ({exc})") from None
        with client:
            yield client
        return
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True) as cluster, Client(cluster) as client:
        yield client


def _run_dask(client, fn: Callable[..., Any], jobs: list[tuple]) -> Iterator[Any]:
    """Submit one task per job and yield the results as the tasks finish."""
    from distributed import as_completed

    futures = [client.submit(fn, *job, pure=False) for job in jobs]
    try:
        for future in as_completed(futures):
            yield _result(future)
    finally:
        client.cancel(futures)


def not_on_worker(path: str | Path, shared: str, kind: str = "folder") -> InputError:
    """The one-line error of a job whose host does not see ``path``.

    Parameters
    ----------
    path : str or Path
        The missing file or folder.
    shared : str
        What must be on a filesystem every worker reaches (``"stage_dir and out"``).
    kind : str
        ``"folder"`` or ``"file"``.

    Returns
    -------
    InputError
        To be raised by the job.
    """
    return InputError(f"{path}: no such {kind} on worker host {socket.gethostname()}; "
                      f"{shared} must be on a filesystem every worker reaches")


def check_folders(folders: Iterable[str | Path], shared: str) -> None:
    """Raise `not_on_worker` for the first of ``folders`` this host does not see.

    Parameters
    ----------
    folders : iterable of str or Path
        Folders a job reads or writes.
    shared : str
        What must be on a filesystem every worker reaches (for the message).
    """
    for folder in folders:
        if not Path(folder).is_dir():
            raise not_on_worker(folder, shared)


def write_parquet(table: pa.Table, path: str | Path) -> None:
    """Write ``table`` to ``path`` under a temporary name, then rename it into place.

    The temporary name is unique to this call (process id and a random part), so two workers,
    possibly on two hosts, that write the same output never write into one file, and a file at
    ``path`` is always complete.

    Parameters
    ----------
    table : pyarrow.Table
        The job's output.
    path : str or Path
        Where it goes (`latentcat.atomic.write_file`).
    """
    write_file(Path(path), lambda tmp: pq.write_table(table, tmp))


def check_written(paths: Iterable[str | Path], shared: str) -> None:
    """Raise InputError for the first output a job wrote that this process does not see.

    Parameters
    ----------
    paths : iterable of str or Path
        The outputs of the finished jobs.
    shared : str
        What must be on a filesystem every worker reaches (for the message).
    """
    for path in paths:
        if not Path(path).exists():  # written to a worker's own disk
            raise InputError(f"{path}: a worker wrote this shard but it is not visible here; "
                             f"{shared} must be on a filesystem every worker reaches")


def _result(future) -> Any:
    """The result of a finished job; a worker's LatentcatError is raised again as one line."""
    try:
        return future.result()
    except LatentcatError as exc:  # drop the remote traceback the pool attaches
        raise type(exc)(str(exc)) from None
