"""Prometheus multi-process mode: one metrics directory for all workers, merged per scrape, dead workers dropped."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server, values
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gateway.errors import PolyrouteError


def prepare_multiprocess_dir(path: Path) -> None:
    """Create `path` and delete metric files left by an earlier run.

    Run once in the supervising process before any worker starts. Multi-process mode itself is chosen by
    prometheus_client from PROMETHEUS_MULTIPROC_DIR when it is first imported, so that variable must already
    name `path` in every worker's environment before anything imports prometheus_client.
    """
    path.mkdir(parents=True, exist_ok=True)
    for leftover in path.glob("*.db"):
        leftover.unlink()


def mark_process_dead(pid: int, *, multiprocess_dir: Path) -> None:
    """Drop an exited worker's live gauges (in-flight requests, circuit state); its counters are kept."""
    _multiprocess.mark_process_dead(pid, str(multiprocess_dir))  # type: ignore[no-untyped-call]


def forget_dead_workers(multiprocess_dir: Path) -> None:
    """mark_process_dead for every worker whose live-gauge files remain but whose process is gone.

    A worker killed outright (OOM, SIGKILL) never runs its shutdown, and the supervisor starts a replacement
    with a new pid: without this, the dead worker's in-flight requests and open circuits would be reported forever.
    """
    pids: set[int] = set()
    for path in multiprocess_dir.glob("gauge_live*_*.db"):
        digits = path.stem.rpartition("_")[2]
        if digits.isdigit():
            pids.add(int(digits))
    for pid in pids:
        if not _running(pid):
            mark_process_dead(pid, multiprocess_dir=multiprocess_dir)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class _WorkerFiles(Collector):
    """Every worker's metric files, merged, after the live gauges of exited workers are dropped."""

    def __init__(self, multiprocess_dir: Path) -> None:
        self._dir = multiprocess_dir
        self._merged = _multiprocess.MultiProcessCollector(None, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        forget_dead_workers(self._dir)
        merged: Iterable[Metric] = self._merged.merge(_sized_files(self._dir), accumulate=True)  # type: ignore[no-untyped-call]
        return merged


# A metric file's header: the bytes in use (4) and padding (4). prometheus_client creates a file empty and only then
# sizes it, so another worker's exposition can find it shorter than that; it holds no value yet.
_FILE_HEADER = 8


def _sized_files(multiprocess_dir: Path) -> list[str]:
    """Every worker's metric file that has its header (files only ever grow)."""
    sized: list[str] = []
    for path in multiprocess_dir.glob("*.db"):
        try:
            if path.stat().st_size >= _FILE_HEADER:
                sized.append(str(path))
        except FileNotFoundError:  # a live gauge of a worker that exited, dropped meanwhile
            continue
    return sized


def merged_registry(multiprocess_dir: Path) -> CollectorRegistry:
    """A registry whose exposition is the sum of every worker's files in `multiprocess_dir`."""
    registry = CollectorRegistry()
    registry.register(_WorkerFiles(multiprocess_dir))
    return registry


def serve_multiprocess_metrics(port: int, host: str, multiprocess_dir: Path) -> None:
    """Serve every worker's metrics, merged, on their own port from a background thread of the supervisor."""
    start_http_server(port, addr=host, registry=merged_registry(multiprocess_dir))


def check_multiprocess_mode(multiprocess_dir: Path | None) -> None:
    """Refuse a metrics directory that prometheus_client does not write to (or one it writes to unasked).

    Called before any metric is created; in multi-process mode it also makes the values read a cached pid (_Pid).
    """
    # prometheus_client fixed its value storage when it was imported; a mismatch would silently lose metrics.
    files_backed = bool(getattr(values.ValueClass, "_multiprocess", False))
    if multiprocess_dir is not None and not files_backed:
        raise PolyrouteError(
            "metrics: multiprocess_dir is set but prometheus_client was imported without "
            "PROMETHEUS_MULTIPROC_DIR; set it before the first import of prometheus_client"
        )
    if multiprocess_dir is None and files_backed:
        raise PolyrouteError(
            "metrics: PROMETHEUS_MULTIPROC_DIR is set but no multiprocess_dir was given; "
            "pass the same directory to Metrics"
        )
    if multiprocess_dir is not None:
        _use_cached_pid(multiprocess_dir)


class _Pid:
    """This process's id, read once and again in the child after a fork.

    prometheus_client's files-backed values ask for the pid on every update, to notice a fork; os.getpid() is a
    system call, about a dozen of them per request. The fork hook keeps the answer true in a forked child.
    """

    def __init__(self) -> None:
        self.value = os.getpid()
        os.register_at_fork(after_in_child=self._refresh)

    def _refresh(self) -> None:
        self.value = os.getpid()

    def __call__(self) -> int:
        return self.value


def _use_cached_pid(multiprocess_dir: Path) -> None:
    """Have metrics created from now on write through a value class that reads the pid from a _Pid.

    Once per process, and only while this process has no metric file yet: two value classes writing the same
    process's file would each keep their own index of it and overwrite each other's entries.
    """
    if getattr(values.ValueClass, "_polyroute_cached_pid", False):
        return
    if any(multiprocess_dir.glob(f"*_{os.getpid()}.db")):
        return
    cached = values.MultiProcessValue(process_identifier=_Pid())  # type: ignore[no-untyped-call]
    cached._polyroute_cached_pid = True
    values.ValueClass = cached


def check_files_land_in(multiprocess_dir: Path) -> None:
    """Refuse to run when this process's metric files are written somewhere else than `multiprocess_dir`."""
    # Counters created by Metrics.__init__ have opened this process's files in PROMETHEUS_MULTIPROC_DIR by now.
    if not any(multiprocess_dir.glob(f"*_{os.getpid()}.db")):
        raise PolyrouteError(
            f"metrics: this process writes no metric files in {multiprocess_dir}; "
            "PROMETHEUS_MULTIPROC_DIR must name the same directory"
        )
