"""`WorkerServer`: the library's AgentServer as this worker deploys it.

Rule: it adds to the library's server only what operating it needs, and changes nothing of how
jobs run: (a) it remembers why `run` failed (the LiveKit CLI logs the failure and exits 0, so
`__main__` reads `failure` to exit non-zero); (b) it delivers journaled transcripts and
recordings from the main process when the worker starts and once more after a drain; (c) its
health server answers `/` with 503 until registered with LiveKit, serves `/ready`, and with
METRICS_PORT `/metrics` (agent/ops/metrics.py). The main process's loop carries the LiveKit
connection: recovery runs in tasks it owns, its file work in threads.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from livekit.agents import AgentServer
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import http_server

from agent.call.recover import recover_in_main, startup_recovery
from agent.config import Settings
from agent.journal import JOURNAL_FILENAME
from agent.log import get_logger
from agent.ops.metrics import MetricsEndpoint

log = get_logger(__name__)


class WorkerServer(AgentServer):
    """AgentServer that (a) remembers why `run` failed: the LiveKit CLI logs the failure and
    exits 0, so `__main__` reads `failure` to exit non-zero; (b) delivers journaled transcripts
    when the worker starts and once more after a drain, from the main process; (c) answers `/`
    on the health server with 503 until registered with LiveKit, serves `/ready` there and, with
    METRICS_PORT, `/metrics` (agent/ops/metrics.py)."""

    failure: BaseException | None = None
    settings: Settings | None = None
    temp_dir: str | None = None  # set by __main__ when no default temporary directory works

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._recovery: set[asyncio.Task[Any]] = set()
        self._drained = False
        self._registered = False
        self._needs_registration = False
        self._metrics: MetricsEndpoint | None = None
        self.on("worker_started", self._on_started)
        self.on("worker_registered", self._on_registered)

    async def run(self, *, devmode: bool = False, unregistered: bool = False) -> None:
        self._needs_registration = not unregistered
        if self.temp_dir is not None:
            log.info("worker.temp_dir", path=self.temp_dir, why="no default one is writable")
        try:
            # before LiveKit is dialled: a worker that cannot register must still be observable
            self._start_metrics()
            await super().run(devmode=devmode, unregistered=unregistered)
        except Exception as error:
            self.failure = error
            raise

    # -- health: `/` is 503 until the worker has registered with LiveKit once, then the library's
    # answer (200, also while draining; 503 once it gives up on LiveKit). Railway's healthcheck
    # polls it only while a deployment starts: a wrong LIVEKIT_URL or key must fail it there, not
    # pass for the minutes the retries take. `/ready` is 503 until registered and while draining
    # (or reconnecting), so Kubernetes stops routing to a worker LiveKit cannot reach.

    @property
    def ready(self) -> bool:
        return (
            self._registered
            and not self._connecting
            and not (self._drained or self.draining)
            and not self._closed
        )

    def _on_registered(self, *_args: Any) -> None:
        self._registered = True

    @web.middleware
    async def _until_registered(self, request: web.Request, handler: Any) -> web.StreamResponse:
        waiting = self._needs_registration and not self._registered
        if request.path == "/" and waiting and not self._connection_failed:
            return web.Response(status=503, text="not registered with LiveKit yet")
        response: web.StreamResponse = await handler(request)  # the library's `/`, `/worker`
        return response

    async def _readiness(self, _request: web.Request) -> web.Response:
        if self.ready:
            return web.Response(text="ready")
        why = "draining" if (self._drained or self.draining) else "not registered with LiveKit"
        return web.Response(status=503, text=why)

    # The library makes its health server inside run() and starts it at once; routes and
    # middlewares can only be added before it starts, so they join when the server is assigned.
    @property
    def _http_server(self) -> http_server.HttpServer | None:
        server = self.__dict__.get("_health_server")
        return server if isinstance(server, http_server.HttpServer) else None

    @_http_server.setter
    def _http_server(self, server: http_server.HttpServer | None) -> None:
        if server is not None:
            server.app.add_routes([web.get("/ready", self._readiness)])
            server.app.middlewares.append(self._until_registered)
        self.__dict__["_health_server"] = server

    # -- metrics (read from the endpoint's thread: plain attribute reads only)

    def job_processes(self) -> list[tuple[int, bool]]:
        pool = getattr(self, "_proc_pool", None)  # made by run()
        if pool is None:
            return []
        found = []
        for proc in list(pool.processes):
            pid = getattr(proc, "pid", None)
            if isinstance(pid, int):
                found.append((pid, proc.running_job is not None))
        return found

    def _start_metrics(self) -> None:
        settings = self.settings
        if settings is None or settings.metrics_port is None or self._metrics is not None:
            return
        self._metrics = MetricsEndpoint.start(
            settings.metrics_port,
            journal_path=settings.agent_data_dir / JOURNAL_FILENAME,
            worker=self,
        )

    def _on_started(self) -> None:
        if self.settings is not None:
            task = asyncio.create_task(startup_recovery(self.settings), name="recovery.startup")
            self._recovery.add(task)
            task.add_done_callback(self._recovery.discard)

    async def drain(self, timeout: NotGivenOr[int | None] = NOT_GIVEN) -> None:
        self._drained = True
        await super().drain(timeout)

    async def aclose(self) -> None:
        for task in list(self._recovery):
            task.cancel()
        await asyncio.gather(*self._recovery, return_exceptions=True)
        await super().aclose()
        # After a drain every job process has exited (a timed-out drain's jobs were told to stop
        # by super().aclose()): whatever they could not deliver is in the journal now.
        if self._drained and self.settings is not None:
            await recover_in_main(self.settings)
        if self._metrics is not None:
            await asyncio.to_thread(self._metrics.stop)
            self._metrics = None
