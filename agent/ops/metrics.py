"""The operator's `/metrics` endpoint (METRICS_PORT): Prometheus text from the main and every job
process, plus what only the main process can see at scrape time.

Rule: served by prometheus_client's own threaded HTTP server, so a scrape never runs on (or waits
for) the event loop that carries the LiveKit connection, and it answers before LiveKit is
reachable. Job processes' series reach it through prometheus_client's multiprocess mode: `__main__`
points PROMETHEUS_MULTIPROC_DIR at a private temporary directory (`use_private_multiproc_dir`)
before anything imports prometheus_client, job processes inherit it (the library's forkserver is
started later, from this environment), and the library clears the directory when the worker
starts. Files of processes that died are dropped from the live gauges at scrape time
(`mark_process_dead`). The journal gauges come from a short read on a connection of their own,
in the scrape thread. No label carries an id, a room, a user or text. prometheus_client is
imported inside the functions: `__main__` imports this module before the mode is set.

Why not the library's own `prometheus_port`: its endpoint runs on the LiveKit loop's aiohttp
server and serves only the multiprocess files, so the journal, draining and process gauges
(computed at scrape time in this process) could not be part of it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from wsgiref.simple_server import WSGIServer

import psutil

from agent.log import get_logger

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = get_logger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A scrape must stay short even while a recovery holds the journal's write lock (WAL readers
# do not wait for writers; this bounds a checkpoint's brief exclusive moment).
JOURNAL_READ_TIMEOUT = 1.0
JOURNAL_STATES = ("live", "pending", "dead")
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w*_(\d+)\.db")


class WorkerView(Protocol):
    """What the endpoint reads of the worker (agent.server.WorkerServer), from its thread."""

    @property
    def draining(self) -> bool: ...

    @property
    def ready(self) -> bool: ...

    def job_processes(self) -> list[tuple[int, bool]]:
        """(pid, running a job) of each job process."""
        ...


def use_private_multiproc_dir() -> Path:
    """Called by `__main__` when METRICS_PORT is set, before prometheus_client is imported: a
    fresh directory of our own (never shared with another worker on the same volume)."""
    path = Path(tempfile.mkdtemp(prefix="voice-agent-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path


class ScrapeCollector:
    """Everything one scrape returns: the processes' series, the worker's and the journal's."""

    def __init__(self, journal_path: Path, worker: WorkerView | None) -> None:
        self._journal_path = journal_path
        self._worker = worker

    def collect(self) -> Iterable[Metric]:
        from prometheus_client import REGISTRY, multiprocess

        directory = os.environ.get(MULTIPROC_ENV)
        if directory:
            _forget_dead_processes(directory)
            yield from multiprocess.MultiProcessCollector(None, directory).collect()  # type: ignore[no-untyped-call]
        else:
            # one process (tests, console): its own series are in the default registry
            yield from REGISTRY.collect()
        yield from self._worker_series()
        yield from self._journal_series()

    def _worker_series(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        if self._worker is None:
            return
        yield GaugeMetricFamily(
            "voice_agent_draining",
            "1 while the worker drains (SIGTERM received), else 0",
            value=1.0 if self._worker.draining else 0.0,
        )
        yield GaugeMetricFamily(
            "voice_agent_ready",
            "1 when registered with LiveKit and not draining (what /ready answers)",
            value=1.0 if self._worker.ready else 0.0,
        )
        processes = GaugeMetricFamily(
            "voice_agent_job_processes", "Job processes, idle or running a job", labels=["state"]
        )
        memory = GaugeMetricFamily(
            "voice_agent_job_processes_memory_bytes",
            "Resident memory of the job processes, summed by state",
            labels=["state"],
        )
        count: Counter[str] = Counter()
        rss: Counter[str] = Counter()
        for pid, running in self._worker.job_processes():
            state = "running" if running else "idle"
            count[state] += 1
            with contextlib.suppress(psutil.Error):  # exited between the listing and the read
                rss[state] += psutil.Process(pid).memory_info().rss
        for state in ("idle", "running"):
            processes.add_metric([state], count[state])
            memory.add_metric([state], rss[state])
        yield processes
        yield memory

    def _journal_series(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily(
            "voice_agent_journal_up", "1 when the last scrape could read the journal"
        )
        try:
            counts, oldest = read_journal(self._journal_path)
        except (sqlite3.Error, OSError) as error:
            log.warning("metrics.journal_unreadable", error_type=type(error).__name__)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        transcripts = GaugeMetricFamily(
            "voice_agent_journal_calls",
            "Calls in the journal by state: live, pending (awaiting delivery), dead (dead letters)",
            labels=["state"],
        )
        for state in JOURNAL_STATES:
            transcripts.add_metric([state], counts.get(state, 0))
        yield transcripts
        yield GaugeMetricFamily(
            "voice_agent_journal_oldest_pending_age_seconds",
            "How long the oldest pending transcript has waited since its call ended (0: none)",
            value=oldest,
        )


def read_journal(path: Path, now: float | None = None) -> tuple[dict[str, int], float]:
    """Counts by state and the oldest pending age in seconds (as `journal status` shows it),
    in one short read. No journal file yet: all zero (and none is created)."""
    if not path.exists():
        return {}, 0.0
    now = time.time() if now is None else now
    conn = sqlite3.connect(path, timeout=JOURNAL_READ_TIMEOUT, isolation_level=None)
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.execute("BEGIN")  # one snapshot for the counts and the ages
        counts = {
            str(state): int(n)
            for state, n in conn.execute("SELECT state, count(*) FROM calls GROUP BY state")
        }
        pending = conn.execute(
            "SELECT CASE WHEN json_valid(payload) THEN json_extract(payload, '$.endedAt') END, "
            "updated_at FROM calls WHERE state = 'pending'"
        ).fetchall()
        conn.execute("COMMIT")
    finally:
        conn.close()
    ages = [max(0.0, now - _since(ended_at, float(updated_at))) for ended_at, updated_at in pending]
    return counts, max(ages, default=0.0)


def _since(ended_at: object, fallback: float) -> float:
    if isinstance(ended_at, str):
        try:
            parsed = datetime.fromisoformat(ended_at)
        except ValueError:
            return fallback
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    return fallback


def _forget_dead_processes(directory: str) -> None:
    """Drop the live gauges (calls live) of job processes that are gone, however they died:
    a SIGKILL or an OOM runs no hook that could do it."""
    from prometheus_client import multiprocess

    try:
        names = os.listdir(directory)
    except OSError:
        return
    pids = {int(m.group(1)) for name in names if (m := _LIVE_GAUGE_FILE.fullmatch(name))}
    for pid in pids:
        if not psutil.pid_exists(pid):
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


class MetricsEndpoint:
    """prometheus_client's threaded HTTP server for one registry holding `ScrapeCollector`."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    @classmethod
    def start(
        cls, port: int, *, journal_path: Path, worker: WorkerView | None, host: str = ""
    ) -> MetricsEndpoint:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=False)
        registry.register(ScrapeCollector(journal_path, worker))
        server, thread = start_http_server(port, addr=host or "0.0.0.0", registry=registry)
        endpoint = cls(server, thread)
        log.info("metrics.listening", port=endpoint.port)
        return endpoint

    def stop(self) -> None:
        """Blocking (up to the server's poll interval): call it off the event loop."""
        self._server.shutdown()
        self._server.server_close()
        # the serving thread ends once shutdown() returns; joined so no thread outlives stop()
        self._thread.join(timeout=5)
