"""The watch loop: every WATCH_INTERVAL_SECONDS a snapshot, the decisions, the dispatches; its
metrics and its health answer.

Rule: `WatchLoop` only fetches snapshots through the server API (`server_api.ServerApi`) and
carries out the decisions `policy.Watcher` makes; it decides nothing itself. Each room is decided
on its own: a room that cannot be read or dispatched is one `watch.room_failed` line and the tick
goes on (a room closed since the listing is no failure). Just before creating a dispatch it sleeps
a small random jitter and re-reads the room, which closes the window in which two watchers decide
on the same snapshot; `watch.redispatched` is logged once the server said yes. A failing room
listing is one `watch.api_error` line per tick and a growing pause (up to MAX_BACKOFF_SECONDS),
never a crash. Its metrics are its own registry (`WatchMetrics`, not the worker's), its health is
`GET /` (`serve_health`); `prometheus_client` and `aiohttp` are imported when used.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from agent.log import get_logger
from agent.ops.watch.policy import Watcher
from agent.ops.watch.server_api import ServerApi, is_not_found
from agent.ops.watch.views import Decision, RoomView

if TYPE_CHECKING:
    from aiohttp import web

log = get_logger(__name__)

MAX_BACKOFF_SECONDS = 60.0
MAX_JITTER_SECONDS = 1.0


class WatchLoop:
    """Fetches a snapshot every interval, runs the decisions, creates the dispatches."""

    def __init__(
        self,
        server: ServerApi,
        watcher: Watcher,
        *,
        interval: float,
        metrics: WatchMetrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        jitter: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.server = server
        self.watcher = watcher
        self.interval = interval
        self.metrics = metrics
        self.monotonic = monotonic
        self.wall = wall
        self.jitter = jitter or self._random_jitter
        self.failures = 0
        # a tick has listed the rooms once: the LiveKit URL and key work (the healthcheck's
        # answer, so a deploy with a wrong one fails at deploy time)
        self.reached = False

    async def _random_jitter(self) -> None:
        await asyncio.sleep(random.uniform(0, min(MAX_JITTER_SECONDS, self.interval / 4)))

    async def _room(self, name: str, sid: str) -> RoomView:
        participants = tuple(await self.server.list_participants(name))
        dispatches = None
        if self.watcher.needs_dispatches(participants):
            dispatches = tuple(await self.server.list_dispatches(name))
        return RoomView(name, sid, participants, dispatches)

    async def tick(self) -> int:
        """One look at the server; returns the number of dispatches created. Raises only when the
        rooms cannot be listed (the caller logs it once and backs off); a room that fails is one
        `watch.room_failed` line and the other rooms go on."""
        listed = await self.server.list_rooms()
        self.watcher.forget_closed(listed)
        seen = missing = created = 0
        for name, sid in listed:
            try:
                room = await self._room(name, sid)
                seen += 1
                decision = self.watcher.decide(room, self.monotonic(), self.wall())
                missing += decision.state in ("waiting_grace", "dispatch_pending", "redispatch")
                self._log(decision)
                if decision.action == "dispatch":
                    created += await self._dispatch(room)
            except Exception as error:
                if not is_not_found(error):  # not found: closed since the listing
                    self._room_failed(name, error)
        if self.metrics is not None:
            self.metrics.rooms.set(seen)
            self.metrics.rooms_missing_agent.set(missing)
        return created

    def _log(self, decision: Decision) -> None:
        if decision.log_event is not None:
            log.info(decision.log_event, room_name=decision.room, **decision.fields)
            if decision.log_event == "watch.cap_reached" and self.metrics is not None:
                self.metrics.cap_reached.inc()

    def _room_failed(self, name: str, error: Exception) -> None:
        if self.metrics is not None:
            self.metrics.api_errors.inc()
        log.warning(
            "watch.room_failed",
            room_name=name,
            error_type=type(error).__name__,
            status=getattr(error, "status", None),
            code=getattr(error, "code", None),
        )

    async def _dispatch(self, room: RoomView) -> int:
        # another watcher may be deciding on the same snapshot: wait a little, look again
        await self.jitter()
        fresh = await self._room(room.name, room.sid)
        decision = self.watcher.decide(fresh, self.monotonic(), self.wall())
        if decision.action != "dispatch":
            self._log(decision)
            return 0
        dispatch_id = await self.server.create_dispatch(
            room.name, self.watcher.agent_name, decision.metadata
        )
        self.watcher.record_dispatch(fresh, dispatch_id, self.monotonic())
        if self.metrics is not None:
            self.metrics.redispatches.inc()
        log.info(
            "watch.redispatched",
            room_name=room.name,
            dispatch_id=dispatch_id,
            redispatch=decision.redispatch_number,
            max_redispatch=self.watcher.max_redispatch,
            missing_seconds=decision.fields.get("missing_seconds"),
        )
        return 1

    def next_delay(self) -> float:
        if self.failures == 0:
            return self.interval
        backoff: float = self.interval * 2.0 ** min(self.failures - 1, 16)
        return min(backoff, max(MAX_BACKOFF_SECONDS, self.interval))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            tick = asyncio.create_task(self.tick())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({tick, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                tick.cancel()
                await asyncio.gather(tick, return_exceptions=True)
                break
            stopping.cancel()
            error = tick.exception()
            if error is None:
                self.failures = 0
                self.reached = True
            else:
                self.failures += 1
                if self.metrics is not None:
                    self.metrics.api_errors.inc()
                log.warning(
                    "watch.api_error",
                    error_type=type(error).__name__,
                    status=getattr(error, "status", None),
                    code=getattr(error, "code", None),
                    failures=self.failures,
                    retry_in_seconds=round(self.next_delay(), 1),
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.next_delay())


# --------------------------------------------------------------------------- metrics


class WatchMetrics:
    """The watcher's own registry (not the worker's series or endpoint)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry(auto_describe=True)
        self.redispatches = Counter(
            "voice_agent_watch_redispatches",
            "Dispatches re-created by the watcher",
            registry=self.registry,
        )
        self.api_errors = Counter(
            "voice_agent_watch_api_errors",
            "LiveKit server API calls that failed or timed out",
            registry=self.registry,
        )
        self.rooms = Gauge(
            "voice_agent_watch_rooms",
            "Rooms seen at the last tick",
            registry=self.registry,
        )
        self.rooms_missing_agent = Gauge(
            "voice_agent_watch_rooms_missing_agent",
            "Rooms with a caller and a dispatch for AGENT_NAME but no agent, at the last tick",
            registry=self.registry,
        )
        self.cap_reached = Counter(
            "voice_agent_watch_cap_reached",
            "Rooms that reached WATCH_MAX_REDISPATCH",
            registry=self.registry,
        )

    def serve(self, port: int) -> Callable[[], None]:
        from prometheus_client import start_http_server

        server, thread = start_http_server(port, registry=self.registry)
        log.info("metrics.listening", port=int(server.server_port))

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

        return stop


# --------------------------------------------------------------------------- health


async def serve_health(port: int, reached: Callable[[], bool] = lambda: True) -> web.AppRunner:
    """`GET /` on all interfaces: a platform's healthcheck (Railway's at deploy time, on the PORT
    it injects), as the worker's health server answers it: 503 until `reached()` (the LiveKit
    server API answered once: a wrong URL or key fails the deploy), then 200 `OK` for good (a
    later API failure is a log line and a backoff, not a reason to restart). Nothing else."""
    from aiohttp import web

    async def answer(_request: web.Request) -> web.Response:
        if not reached():
            return web.Response(status=503, text="not connected to LiveKit yet")
        return web.Response(text="OK")

    app = web.Application()
    app.router.add_get("/", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, port=port).start()
    log.info("watch.health_listening", port=port)
    return runner
