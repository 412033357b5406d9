"""Run one function over many items, on local processes or on a Dask cluster.

:func:`run_parallel` is the single entry point for per-series work (forecasting, feature
building). Locally it uses joblib's ``loky`` process pool; given a Dask scheduler address
(``--dask tcp://host:8786``, ``FLEETML_DASK_SCHEDULER`` or ``settings.dask_scheduler``) it sends
the same joblib calls to the cluster through ``joblib.parallel_config(backend="dask")``.
The function and items must be picklable (module-level functions, plain data).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_clients: dict[str, Any] = {}
#: How long to wait for a Dask scheduler before giving up with advice.
CONNECT_TIMEOUT = "10s"


def resolve_dask_address(dask_address: str | None = None) -> str | None:
    """The scheduler to use: the argument, else ``FLEETML_DASK_SCHEDULER`` (via settings)."""
    if dask_address:
        return dask_address
    env = os.environ.get("FLEETML_DASK_SCHEDULER")
    if env:
        return env
    try:
        from fleetml.config import get_settings

        return get_settings().dask_scheduler
    except Exception:  # settings unreadable: run locally rather than fail the whole job
        return None


def _dask_client(address: str):
    """A ``distributed.Client`` for ``address``, kept for the life of the process."""
    client = _clients.get(address)
    if client is not None and client.status == "running":
        return client
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - distributed is a dependency
        raise RuntimeError(
            "running on a Dask cluster needs the 'distributed' package: "
            "pip install 'dask[distributed]'"
        ) from exc
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        raise RuntimeError(
            f"cannot reach the Dask scheduler at {address}: {exc}. Start one with "
            "`dask scheduler` and workers with `dask worker <address>`, or drop --dask "
            "(and FLEETML_DASK_SCHEDULER) to run locally"
        ) from exc
    _clients[address] = client
    return client


def close_clients() -> None:
    """Close Dask clients opened by :func:`run_parallel` (tests and long-lived services)."""
    while _clients:
        _, client = _clients.popitem()
        client.close()


def _default_n_jobs() -> int:
    try:
        from fleetml.config import get_settings

        return int(get_settings().n_jobs)
    except Exception:
        return 2


def run_parallel(
    func: Callable[[T], R],
    items: Iterable[T],
    *,
    n_jobs: int | None = None,
    dask_address: str | None = None,
    desc: str | None = None,
    use_env: bool = True,
    progress: bool | None = None,
) -> list[R]:
    """Apply ``func`` to every item and return the results in the items' order.

    Parameters
    ----------
    func : callable
        A picklable function of one argument.
    items : iterable
        Arguments, one call each.
    n_jobs : int or None
        Local worker processes (``None``: ``settings.n_jobs``; 1 runs in this process). With a
        Dask cluster, the number of tasks in flight (``None``: all workers' threads).
    dask_address : str or None
        ``tcp://host:8786`` of a Dask scheduler; ``None`` falls back to
        ``FLEETML_DASK_SCHEDULER`` / ``settings.dask_scheduler`` when ``use_env``.
    desc : str or None
        A label for a progress bar on stderr (tqdm).
    use_env : bool
        Whether an unset ``dask_address`` may come from the environment or settings.
    progress : bool or None
        Show the ``desc`` bar always (True, kept on screen when done), never (False) or only
        when stderr is a terminal (None).
    """
    from joblib import Parallel, delayed, parallel_config

    items = list(items)
    if not items:
        return []
    address = resolve_dask_address(dask_address) if use_env else dask_address
    tasks = (delayed(func)(item) for item in _progress(items, desc, progress))
    if address:
        client = _dask_client(address)
        n = n_jobs or max(1, sum(client.nthreads().values()))
        with parallel_config(backend="dask", n_jobs=n):
            return list(Parallel()(tasks))
    n = n_jobs if n_jobs is not None else _default_n_jobs()
    if n == 1 or len(items) == 1:
        return [func(item) for item in _progress(items, desc, progress)]
    with parallel_config(backend="loky", n_jobs=n, inner_max_num_threads=1):
        return list(Parallel(batch_size="auto")(tasks))


def _progress(items: Sequence[T], desc: str | None, progress: bool | None) -> Iterable[T]:
    if not desc or progress is False:
        return items
    import sys

    if progress is None and not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, file=sys.stderr, leave=bool(progress))
