"""`python -m agent watch`: re-create the dispatch of a room whose agent vanished (self-hosted
LiveKit does not re-dispatch a dead worker's job; LiveKit Cloud does, livekit/agents #1472).

Rule: the decision is a pure function of a snapshot of the server (rooms, participants,
dispatches) and the watcher's own small memory (when a room's agent went missing, what it
dispatched, which agents it saw), in `Watcher`; `WatchLoop` only fetches snapshots through the
LiveKit server API and carries out the decisions. Each room is decided on its own: a room that
cannot be read or dispatched is one `watch.room_failed` line and the tick goes on. All the
watcher's timing runs on the monotonic clock; the wall clock is read only to place a server stamp
on it when first seen, so a step of the wall clock changes no decision. Per room, a new dispatch
for AGENT_NAME (same metadata as the room's first live dispatch for AGENT_NAME) is created only
when all of these hold:

1. the room has a live (not deleted) dispatch for AGENT_NAME;
2. a caller is in it (a participant of kind STANDARD or SIP, not disconnected);
3. no participant of kind AGENT whose `lk.agent.name` attribute is AGENT_NAME is in it, and none
   has been for WATCH_GRACE_SECONDS as seen by this watcher (the timer resets whenever the agent is
   seen, or the caller is gone);
4. the newest dispatch's last job did not end in success (the agent ended the call on purpose);
5. no dispatch for AGENT_NAME is pending: one younger than WATCH_GRACE_SECONDS (server
   `created_at`, or when this watcher made it, whichever is younger), or one whose agent is
   starting: its newest job is JS_PENDING or JS_RUNNING, that job's agent was never seen in the
   room, and the later of the dispatch's creation and the job's start is younger than
   WATCH_GRACE_SECONDS + STARTING_LIMIT_SECONDS (a cold job process is slow to join; a dead
   worker's job stays JS_RUNNING on the server, hence the limit and the seen agents);
6. fewer than WATCH_MAX_REDISPATCH re-dispatches were made in the room: the larger of what this
   watcher made and the room's dispatches for AGENT_NAME (deleted ones too) minus the first.

Rules 5 and 6 read the server, so a second watcher sees the first one's dispatch and waits;
just before creating, a watcher sleeps a small random jitter and re-reads the room, which closes
the window in which two watchers decide on the same snapshot. One log line per change of a
room's decision (static event names, room and counts as fields, never a secret); every API call
is bounded by API_TIMEOUT_SECONDS, and a failing room listing is one log line per tick and a
growing pause, never a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from agent.log import get_logger

if TYPE_CHECKING:
    from aiohttp import web
    from livekit import api

    from agent.config import WatchSettings

log = get_logger(__name__)

AGENT_NAME_ATTRIBUTE = "lk.agent.name"  # set by livekit-agents on the agent's participant
API_TIMEOUT_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 60.0
MAX_JITTER_SECONDS = 1.0
# A job whose agent has not joined yet is "starting" this long past the grace window at most: a
# job no worker takes, or one whose worker died before its agent joined, must not block the room.
STARTING_LIMIT_SECONDS = 30.0

ParticipantKind = Literal["caller", "agent", "other"]
JobStatus = Literal["pending", "running", "success", "failed", "cancelled", "other"]
Action = Literal["dispatch", "none"]


# --------------------------------------------------------------------------- snapshot


@dataclass(frozen=True)
class ParticipantView:
    identity: str
    kind: ParticipantKind
    agent_name: str = ""  # the `lk.agent.name` attribute of an agent, else ""


@dataclass(frozen=True)
class DispatchView:
    id: str
    agent_name: str
    metadata: str
    created_at: float = 0.0  # server time, epoch seconds; 0 when the server did not say
    deleted: bool = False
    jobs: tuple[JobStatus, ...] = ()  # in the server's order: the last is the newest
    job_started_at: float = 0.0  # the newest job's start, epoch seconds; 0 when not said
    job_identity: str = ""  # the newest job's agent participant identity; "" when not said


@dataclass(frozen=True)
class RoomView:
    name: str
    sid: str
    participants: tuple[ParticipantView, ...]
    # None: not fetched (the participants alone decided: agent present or no caller)
    dispatches: tuple[DispatchView, ...] | None = None


@dataclass(frozen=True)
class Decision:
    room: str
    action: Action
    state: str  # what the room is in: ok, no_dispatch, no_caller, finished, waiting_grace, ...
    log_event: str | None  # the line to log (None: nothing changed since the last tick)
    fields: dict[str, Any] = field(default_factory=dict)
    metadata: str = ""  # for a dispatch: the metadata to copy
    redispatch_number: int = 0  # for a dispatch: which re-dispatch of the room this is (1..cap)


# --------------------------------------------------------------------------- decisions


@dataclass
class _RoomMemory:
    # all times on the monotonic clock
    missing_since: float | None = None
    ours: dict[str, float] = field(default_factory=dict)  # dispatch id -> when we made it
    stamps: dict[str, float] = field(default_factory=dict)  # server stamp -> when, fixed once
    seen_agents: set[str] = field(default_factory=set)  # identities of our agents seen here
    last_state: str | None = None
    last_detail: str | None = None  # e.g. the pending dispatch's id: a new one logs again


class Watcher:
    """The decisions, over snapshots; no I/O. `now` is this process's monotonic clock, `wall`
    its wall clock (epoch seconds), read only to place a server stamp on the monotonic clock the
    first time the stamp is seen (skew that makes a stamp look older is tolerated by rule 5 also
    using this watcher's own record of when it made a dispatch)."""

    def __init__(self, agent_name: str, *, grace: float, max_redispatch: int) -> None:
        self.agent_name = agent_name
        self.grace = grace
        self.max_redispatch = max_redispatch
        self._rooms: dict[tuple[str, str], _RoomMemory] = {}

    def forget_closed(self, listed: Iterable[tuple[str, str]]) -> None:
        """Drop the memory of rooms not listed (name, sid): a later room of that name is a new
        call. A listed room that failed this tick keeps its memory."""
        live = set(listed)
        for key in [key for key in self._rooms if key not in live]:
            del self._rooms[key]

    def record_dispatch(self, room: RoomView, dispatch_id: str, now: float) -> None:
        memory = self._memory(room)
        memory.ours[dispatch_id] = now
        memory.stamps.setdefault(dispatch_id, now)

    def needs_dispatches(self, participants: Sequence[ParticipantView]) -> bool:
        """Whether the room's dispatches matter (saves an API call per healthy room)."""
        return self._has_caller(participants) and not self._agent_present(participants)

    def decide(self, room: RoomView, now: float, wall: float) -> Decision:
        memory = self._memory(room)
        memory.seen_agents.update(p.identity for p in room.participants if self._is_ours(p))
        if not self._has_caller(room.participants):
            memory.missing_since = None
            return self._result(memory, room, "none", "no_caller")
        if self._agent_present(room.participants):
            was_missing = memory.missing_since
            memory.missing_since = None
            if was_missing is None:
                return self._result(memory, room, "none", "ok")
            return self._result(
                memory, room, "none", "ok", missing_seconds=round(now - was_missing, 1)
            )
        if room.dispatches is None:
            return self._result(memory, room, "none", "no_dispatch")
        ours = [d for d in room.dispatches if d.agent_name == self.agent_name]
        for dispatch in ours:
            self._stamp(memory, dispatch.id, dispatch.created_at, now, wall)
        live = [d for d in ours if not d.deleted]
        if not live:
            memory.missing_since = None
            return self._result(memory, room, "none", "no_dispatch")
        newest = max(live, key=lambda d: self._created(memory, d))
        if newest.jobs and newest.jobs[-1] == "success":
            memory.missing_since = None
            return self._result(memory, room, "none", "finished", dispatch_id=newest.id)

        if memory.missing_since is None:
            memory.missing_since = now
        missing = now - memory.missing_since
        if missing < self.grace:
            return self._result(memory, room, "none", "waiting_grace", grace_seconds=self.grace)
        pending = next((d for d in live if self._pending(memory, d, now, wall)), None)
        if pending is not None:
            return self._result(
                memory,
                room,
                "none",
                "dispatch_pending",
                detail=pending.id,
                dispatch_id=pending.id,
                by_this_watcher=pending.id in memory.ours,
                job_status=pending.jobs[-1] if pending.jobs else None,
            )
        made = max(len(memory.ours), len(ours) - 1)
        if made >= self.max_redispatch:
            return self._result(
                memory,
                room,
                "none",
                "cap_reached",
                redispatches=made,
                max_redispatch=self.max_redispatch,
            )
        first = min(live, key=lambda d: self._created(memory, d))
        decision = self._result(
            memory,
            room,
            "dispatch",
            "redispatch",
            missing_seconds=round(missing, 1),
            redispatches=made,
        )
        # no line yet: the loop logs `watch.redispatched` once the server has said yes
        return replace(
            decision, log_event=None, metadata=first.metadata, redispatch_number=made + 1
        )

    # ----------------------------------------------------------------- helpers

    def _memory(self, room: RoomView) -> _RoomMemory:
        return self._rooms.setdefault((room.name, room.sid), _RoomMemory())

    @staticmethod
    def _has_caller(participants: Sequence[ParticipantView]) -> bool:
        return any(p.kind == "caller" for p in participants)

    def _is_ours(self, participant: ParticipantView) -> bool:
        return participant.kind == "agent" and participant.agent_name == self.agent_name

    def _agent_present(self, participants: Sequence[ParticipantView]) -> bool:
        return any(self._is_ours(p) for p in participants)

    @staticmethod
    def _stamp(memory: _RoomMemory, key: str, stamp: float, now: float, wall: float) -> float:
        """A server stamp (epoch seconds; 0: not said, then first sight) on the monotonic clock,
        fixed when first seen; a server clock ahead of ours reads as "just now"."""
        if key not in memory.stamps:
            memory.stamps[key] = now - max(0.0, wall - stamp) if stamp else now
        return memory.stamps[key]

    @staticmethod
    def _created(memory: _RoomMemory, dispatch: DispatchView) -> float:
        return memory.stamps[dispatch.id]

    def _pending(
        self, memory: _RoomMemory, dispatch: DispatchView, now: float, wall: float
    ) -> bool:
        # the youngest of the server's stamp and our own record: skew never shortens the window
        made = max(self._created(memory, dispatch), memory.ours.get(dispatch.id, -math.inf))
        if now - made < self.grace:
            return True
        starting = (
            bool(dispatch.jobs)
            and dispatch.jobs[-1] in ("pending", "running")
            and dispatch.job_identity not in memory.seen_agents
        )
        if not starting:
            return False
        started = made
        if dispatch.job_started_at:
            key = f"{dispatch.id}/{len(dispatch.jobs)}/{dispatch.job_started_at}"
            started = max(made, self._stamp(memory, key, dispatch.job_started_at, now, wall))
        return now - started < self.grace + STARTING_LIMIT_SECONDS

    def _result(
        self,
        memory: _RoomMemory,
        room: RoomView,
        action: Action,
        state: str,
        *,
        detail: str | None = None,
        **fields: Any,
    ) -> Decision:
        changed = (state, detail) != (memory.last_state, memory.last_detail)
        previous = memory.last_state
        memory.last_state, memory.last_detail = state, detail
        event: str | None = None
        if changed and action == "none":
            if state == "ok":
                # silent for a healthy room, one line when its agent is back
                event = "watch.agent_back" if previous not in (None, "ok", "no_caller") else None
            else:
                event = _STATE_EVENTS.get(state)
        return Decision(
            room=room.name, action=action, state=state, log_event=event, fields=dict(fields)
        )


# the one line a room's change into each of these states is worth (static event names)
_STATE_EVENTS: dict[str, str] = {
    "waiting_grace": "watch.waiting_grace",
    "dispatch_pending": "watch.dispatch_pending",
    "cap_reached": "watch.cap_reached",
    "finished": "watch.finished",
}


# --------------------------------------------------------------------------- from the protos

_CALLER_KINDS = frozenset({"STANDARD", "SIP"})
_JOB_STATUSES: dict[str, JobStatus] = {
    "JS_PENDING": "pending",
    "JS_RUNNING": "running",
    "JS_SUCCESS": "success",
    "JS_FAILED": "failed",
    "JS_CANCELLED": "cancelled",
}


def _enum_name(enum: Any, value: int) -> str:
    # a value a newer LiveKit added has no name here: "" (it reads as "other")
    try:
        return str(enum.Name(value))
    except ValueError:
        return ""


def participant_view(info: api.ParticipantInfo) -> ParticipantView | None:
    """None for a participant that already left (state DISCONNECTED)."""
    from livekit import api

    if info.state == api.ParticipantInfo.State.DISCONNECTED:
        return None
    kind_name = _enum_name(api.ParticipantInfo.Kind, info.kind)
    if kind_name == "AGENT":
        return ParticipantView(
            info.identity, "agent", str(info.attributes.get(AGENT_NAME_ATTRIBUTE, ""))
        )
    return ParticipantView(info.identity, "caller" if kind_name in _CALLER_KINDS else "other")


def dispatch_view(dispatch: api.AgentDispatch) -> DispatchView:
    from livekit import api

    jobs: list[JobStatus] = []
    for job in dispatch.state.jobs:
        if not job.HasField("state"):
            jobs.append("other")  # JS_PENDING is 0: an absent state must not read as pending
            continue
        jobs.append(_JOB_STATUSES.get(_enum_name(api.JobStatus, job.state.status), "other"))
    newest = dispatch.state.jobs[-1].state if dispatch.state.jobs else None
    return DispatchView(
        id=dispatch.id,
        agent_name=dispatch.agent_name,
        metadata=dispatch.metadata,
        created_at=dispatch.state.created_at / 1e9,  # the server stamps UnixNano
        deleted=dispatch.state.deleted_at != 0,
        jobs=tuple(jobs),
        job_started_at=newest.started_at / 1e9 if newest is not None else 0.0,
        job_identity=newest.participant_identity if newest is not None else "",
    )


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


# --------------------------------------------------------------------------- the loop


class ServerApi(Protocol):
    """What the loop uses of `livekit.api.LiveKitAPI` (a fake in tests)."""

    async def list_rooms(self) -> list[tuple[str, str]]: ...
    async def list_participants(self, room: str) -> list[ParticipantView]: ...
    async def list_dispatches(self, room: str) -> list[DispatchView]: ...
    async def create_dispatch(self, room: str, agent_name: str, metadata: str) -> str: ...


class LiveKitServerApi:
    """`ServerApi` over the real client; each call bounded by API_TIMEOUT_SECONDS."""

    def __init__(self, url: str, api_key: str, api_secret: str) -> None:
        import aiohttp
        from livekit import api

        # failover off: a self-hosted server has no other region to try
        self._api = api.LiveKitAPI(
            url,
            api_key,
            api_secret,
            timeout=aiohttp.ClientTimeout(total=API_TIMEOUT_SECONDS),
            failover=False,
        )

    async def _bounded(self, call: Awaitable[Any]) -> Any:
        return await asyncio.wait_for(call, API_TIMEOUT_SECONDS)

    async def list_rooms(self) -> list[tuple[str, str]]:
        from livekit import api

        response = await self._bounded(self._api.room.list_rooms(api.ListRoomsRequest()))
        return [(room.name, room.sid) for room in response.rooms]

    async def list_participants(self, room: str) -> list[ParticipantView]:
        from livekit import api

        response = await self._bounded(
            self._api.room.list_participants(api.ListParticipantsRequest(room=room))
        )
        views = (participant_view(info) for info in response.participants)
        return [view for view in views if view is not None]

    async def list_dispatches(self, room: str) -> list[DispatchView]:
        dispatches = await self._bounded(self._api.agent_dispatch.list_dispatch(room))
        return [dispatch_view(dispatch) for dispatch in dispatches]

    async def create_dispatch(self, room: str, agent_name: str, metadata: str) -> str:
        from livekit import api

        created = await self._bounded(
            self._api.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=agent_name, room=room, metadata=metadata)
            )
        )
        return str(created.id)

    async def aclose(self) -> None:
        await self._api.aclose()


def _is_not_found(error: BaseException) -> bool:
    return getattr(error, "code", None) == "not_found" or getattr(error, "status", None) == 404


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
                if not _is_not_found(error):  # not found: closed since the listing
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


# --------------------------------------------------------------------------- command


class _JsonLines(logging.Formatter):
    """One JSON object a line: the event name and the structlog fields (`extra`)."""

    _STANDARD = frozenset(vars(logging.makeLogRecord({})))

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                line[key] = value
        return json.dumps(line, default=str)


def main(argv: list[str]) -> int:
    from agent.config import SettingsError, load_watch_settings
    from agent.log import configure_logging

    if argv and argv[0] in ("-h", "--help"):
        print(
            "usage: python -m agent watch\n\n"
            "Re-dispatch rooms whose agent vanished (self-hosted LiveKit).\n"
            "Environment: LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET, AGENT_NAME; optional\n"
            "WATCH_INTERVAL_SECONDS (5), WATCH_GRACE_SECONDS (10), WATCH_MAX_REDISPATCH (3),\n"
            "METRICS_PORT, LOG_LEVEL, PORT (GET / there: 503 until LiveKit answered, then 200)."
        )
        return 0
    try:
        settings = load_watch_settings()
    except SettingsError as error:
        print(error.render(), file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    logging.getLogger().addHandler(handler)  # this process has no LiveKit CLI to render logs
    logging.getLogger().setLevel(logging.INFO)
    asyncio.run(_serve(settings))
    return 0


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


async def _serve(settings: WatchSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    metrics = WatchMetrics() if settings.metrics_port is not None else None
    stop_metrics = (
        metrics.serve(settings.metrics_port)
        if metrics and settings.metrics_port is not None
        else None
    )
    server = LiveKitServerApi(
        settings.livekit_url,
        settings.livekit_api_key,
        settings.livekit_api_secret.get_secret_value(),
    )
    watcher = Watcher(
        settings.agent_name,
        grace=settings.watch_grace_seconds,
        max_redispatch=settings.watch_max_redispatch,
    )
    log.info(
        "watch.started",
        agent_name_watched=settings.agent_name,
        interval_seconds=settings.watch_interval_seconds,
        grace_seconds=settings.watch_grace_seconds,
        max_redispatch=settings.watch_max_redispatch,
    )
    watch = WatchLoop(server, watcher, interval=settings.watch_interval_seconds, metrics=metrics)
    health = None
    if settings.port is not None:
        health = await serve_health(settings.port, lambda: watch.reached)
    try:
        await watch.run(stop)
    finally:
        if health is not None:
            await health.cleanup()
        await server.aclose()
        if stop_metrics is not None:
            await asyncio.to_thread(stop_metrics)
        log.info("watch.stopped")
