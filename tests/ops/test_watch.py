"""`python -m agent watch` (issue 15, section 3): a room that has a dispatch for AGENT_NAME, a
standard participant and no agent of AGENT_NAME for longer than WATCH_GRACE_SECONDS gets a new
dispatch with the same metadata, at most WATCH_MAX_REDISPATCH times, never while a dispatch is
pending; two watchers make one dispatch. Expected values are written from the issue text.

The decisions run over hand-made snapshots and a fake server (no network); one test drives the real
`livekit.api` client against a Twirp fake on 127.0.0.1 that checks the JWT's grants.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import structlog
from aiohttp import web
from livekit import api

from agent.ops.watch import (
    Decision,
    DispatchView,
    LiveKitServerApi,
    ParticipantView,
    RoomView,
    Watcher,
    WatchLoop,
    serve_health,
)

ROOT = Path(__file__).resolve().parents[2]
AGENT = "roleplay-agent"
META = '{"scenarioId": "sc-1", "userId": "u-1", "sessionId": "s-1"}'
GRACE = 10.0
T0 = 1_800_000_000.0  # an arbitrary wall-clock second

CALLER = ParticipantView("caller-1", "caller")
# values a newer LiveKit adds, which this protocol version (and its stubs) has no name for
NEW_KIND: Any = 5
NEW_JOB_STATUS: Any = 9
OUR_AGENT = ParticipantView("agent-AJ_1", "agent", AGENT)
OTHER_AGENT = ParticipantView("agent-AJ_9", "agent", "another-agent")


def original(created_at: float = T0 - 600, jobs: tuple[str, ...] = ("running",)) -> DispatchView:
    # the dispatch the call started with, long ago, whose job was running when the worker died
    return DispatchView("AD_orig", AGENT, META, created_at=created_at, jobs=jobs)  # type: ignore[arg-type]


def room(*participants: ParticipantView, dispatches: tuple[DispatchView, ...] = ()) -> RoomView:
    return RoomView("call-room", "RM_1", tuple(participants), dispatches)


def watcher(max_redispatch: int = 3) -> Watcher:
    return Watcher(AGENT, grace=GRACE, max_redispatch=max_redispatch)


def decide(w: Watcher, snapshot: RoomView, second: float) -> Decision:
    # one reading for both clocks: these tests do not step the wall clock
    # (tests/ops/test_watch_resilience.py does)
    return w.decide(snapshot, second, second)


# --------------------------------------------------------------------------- a fake server


@dataclass
class FakeServer:
    """The server's state as the watcher sees it; create_dispatch adds to it (created now)."""

    participants: list[ParticipantView]
    dispatches: list[DispatchView]
    now: float = T0
    created: list[tuple[str, str, str]] = field(default_factory=list)
    calls: int = 0

    async def list_rooms(self) -> list[tuple[str, str]]:
        self.calls += 1
        return [("call-room", "RM_1")]

    async def list_participants(self, room: str) -> list[ParticipantView]:
        return list(self.participants)

    async def list_dispatches(self, room: str) -> list[DispatchView]:
        return list(self.dispatches)

    async def create_dispatch(self, room: str, agent_name: str, metadata: str) -> str:
        dispatch_id = f"AD_new{len(self.created) + 1}"
        self.created.append((room, agent_name, metadata))
        self.dispatches.append(
            DispatchView(dispatch_id, agent_name, metadata, created_at=self.now, jobs=())
        )
        return dispatch_id


async def no_jitter() -> None:
    return None


def loop_over(server: FakeServer, w: Watcher | None = None) -> WatchLoop:
    return WatchLoop(
        server,
        w or watcher(),
        interval=5.0,
        monotonic=lambda: server.now,
        wall=lambda: server.now,
        jitter=no_jitter,
    )


# --------------------------------------------------------------------------- decisions


def test_grace_not_elapsed_nothing_and_one_waiting_line() -> None:
    w = watcher()
    snapshot = room(CALLER, dispatches=(original(),))
    first = decide(w, snapshot, T0)
    later = decide(w, snapshot, T0 + GRACE - 0.5)
    assert (first.action, later.action) == ("none", "none")
    assert first.log_event == "watch.waiting_grace"
    assert later.log_event is None  # one line per change, not one per tick


async def test_grace_elapsed_one_dispatch_with_the_same_metadata() -> None:
    server = FakeServer([CALLER], [original()])
    loop = loop_over(server)
    with structlog.testing.capture_logs() as logs:
        assert await loop.tick() == 0
        server.now = T0 + GRACE + 0.5
        assert await loop.tick() == 1
    assert server.created == [("call-room", AGENT, META)]
    lines = [entry for entry in logs if entry["event"] == "watch.redispatched"]
    assert len(lines) == 1
    assert lines[0]["room_name"] == "call-room"
    assert lines[0]["redispatch"] == 1
    assert lines[0]["max_redispatch"] == 3


async def test_after_a_redispatch_its_pending_window_is_respected_then_the_cap_holds() -> None:
    server = FakeServer([CALLER], [original()])
    loop = loop_over(server, watcher(max_redispatch=2))
    with structlog.testing.capture_logs() as logs:
        await loop.tick()
        for step in range(1, 12):  # 5 s ticks for 55 s, the agent never comes back
            server.now = T0 + 5 * step
            await loop.tick()
    # dispatch 1 at +10 s, pending until +20 s, dispatch 2 at +20 s, then the cap
    assert len(server.created) == 2
    assert [e["event"] for e in logs].count("watch.cap_reached") == 1


async def test_cap_reached_nothing_more_and_one_cap_line() -> None:
    old = [
        DispatchView(f"AD_re{i}", AGENT, META, created_at=T0 - 300 + i, jobs=("failed",))
        for i in range(3)
    ]
    server = FakeServer([CALLER], [original(), *old])
    loop = loop_over(server)
    with structlog.testing.capture_logs() as logs:
        for step in range(6):
            server.now = T0 + 5 * step
            await loop.tick()
    assert server.created == []
    cap = [e for e in logs if e["event"] == "watch.cap_reached"]
    assert len(cap) == 1
    assert cap[0]["redispatches"] == 3
    assert cap[0]["max_redispatch"] == 3


@pytest.mark.parametrize(
    "pending",
    [
        # another watcher's (or anyone's) dispatch made 2 s ago
        DispatchView("AD_other", AGENT, META, created_at=T0 + GRACE - 2, jobs=("running",)),
        # one the server has not started yet (no worker took it so far)
        DispatchView("AD_other", AGENT, META, created_at=T0 - 5, jobs=("pending",)),
    ],
    ids=["young", "job_not_started"],
)
def test_a_pending_dispatch_means_nothing(pending: DispatchView) -> None:
    w = watcher()
    decide(w, room(CALLER, dispatches=(original(),)), T0)
    decision = decide(w, room(CALLER, dispatches=(original(), pending)), T0 + GRACE + 1)
    assert decision.action == "none"
    assert decision.log_event == "watch.dispatch_pending"


def test_our_own_pending_dispatch_means_nothing_even_when_the_server_clock_lags() -> None:
    w = watcher()
    decide(w, room(CALLER, dispatches=(original(),)), T0)
    first = decide(w, room(CALLER, dispatches=(original(),)), T0 + GRACE)
    assert first.action == "dispatch"
    # the server stamped it a minute "earlier" (skew): still ours and made 3 s ago
    ours = DispatchView("AD_mine", AGENT, META, created_at=T0 - 60, jobs=("running",))
    snapshot = room(CALLER, dispatches=(original(), ours))
    w.record_dispatch(snapshot, "AD_mine", T0 + GRACE)
    assert decide(w, snapshot, T0 + GRACE + 3).action == "none"


def test_a_room_with_only_agents_is_left_alone() -> None:
    w = watcher()
    for second in (0, 30, 60):
        decision = decide(w, room(OTHER_AGENT, dispatches=(original(),)), T0 + second)
        assert decision.action == "none"
    assert decide(w, room(dispatches=(original(),)), T0 + 90).action == "none"


def test_agent_present_nothing_and_the_missing_timer_resets() -> None:
    w = watcher()
    missing = room(CALLER, dispatches=(original(),))
    decide(w, missing, T0)  # missing from T0
    back = decide(w, room(CALLER, OUR_AGENT), T0 + 6)
    assert back.action == "none"
    assert back.log_event == "watch.agent_back"
    decide(w, missing, T0 + 8)  # missing again from T0 + 8
    assert decide(w, missing, T0 + 12).action == "none"  # 12 s after T0, 4 s after T0 + 8
    assert decide(w, missing, T0 + 8 + GRACE).action == "dispatch"


def test_a_room_without_a_dispatch_for_agent_name_is_not_ours() -> None:
    w = watcher()
    foreign = DispatchView("AD_x", "another-agent", META, created_at=T0 - 600, jobs=("running",))
    for second in (0, 30, 60):
        assert decide(w, room(CALLER, dispatches=(foreign,)), T0 + second).action == "none"
    deleted = replace(original(), deleted=True)
    assert decide(w, room(CALLER, dispatches=(deleted,)), T0 + 90).action == "none"


def test_an_agent_that_ended_the_call_itself_is_not_brought_back() -> None:
    w = watcher()
    done = room(CALLER, dispatches=(original(jobs=("success",)),))
    for second in (0, 30, 60):
        assert decide(w, done, T0 + second).action == "none"


async def test_two_watchers_over_the_same_server_make_one_dispatch() -> None:
    server = FakeServer([CALLER], [original()])
    first, second = loop_over(server), loop_over(server)
    await first.tick()
    await second.tick()
    server.now = T0 + GRACE + 1
    assert await first.tick() == 1
    assert await second.tick() == 0  # it sees the first one's dispatch: pending
    assert len(server.created) == 1


async def test_two_watchers_deciding_on_one_snapshot_still_make_one_dispatch() -> None:
    """Both decide before either creates: the jitter and the re-read before creating settle it
    (the later one sees the earlier one's dispatch)."""
    server = FakeServer([CALLER], [original()])
    made = asyncio.Event()

    async def after_first() -> None:
        await made.wait()

    async def first_jitter() -> None:
        return None

    first = WatchLoop(
        server,
        watcher(),
        interval=5.0,
        monotonic=lambda: server.now,
        wall=lambda: server.now,
        jitter=first_jitter,
    )
    second = WatchLoop(
        server,
        watcher(),
        interval=5.0,
        monotonic=lambda: server.now,
        wall=lambda: server.now,
        jitter=after_first,
    )
    await first.tick()
    await second.tick()
    server.now = T0 + GRACE + 1

    async def first_then_signal() -> int:
        count = await first.tick()
        made.set()
        return count

    counts = await asyncio.gather(second.tick(), first_then_signal())
    assert sorted(counts) == [0, 1]
    assert len(server.created) == 1


async def test_a_failing_api_is_one_line_per_tick_and_no_crash() -> None:
    stop = asyncio.Event()

    class Broken(FakeServer):
        async def list_rooms(self) -> list[tuple[str, str]]:
            self.calls += 1
            if self.calls >= 3:
                stop.set()
            raise api.TwirpError("unavailable", "down", status=503)

    server = Broken([CALLER], [original()])
    loop = WatchLoop(server, watcher(), interval=0.001, jitter=no_jitter)
    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(loop.run(stop), 30)
    errors = [e for e in logs if e["event"] == "watch.api_error"]
    # ticks 1 and 2 fail and log; tick 3 fails as the stop arrives (the loop just ends)
    assert len(errors) == 2
    assert errors[0]["status"] == 503
    assert loop.failures == len(errors) and loop.next_delay() > loop.interval  # backing off


# --------------------------------------------------------------------------- the real client


SECRET = "watch-test-secret-0123456789abcdef"
KEY = "watchkey"


class TwirpFake:
    """RoomService ListRooms/ListParticipants and AgentDispatchService ListDispatch/CreateDispatch
    in protobuf over HTTP, each refusing a token without the grant LiveKit requires."""

    def __init__(self) -> None:
        self.participants = [
            api.ParticipantInfo(identity="caller-1", kind=api.ParticipantInfo.Kind.STANDARD),
        ]
        state = api.AgentDispatchState(
            created_at=int((T0 - 600) * 1e9),
            jobs=[api.Job(id="AJ_1", state=api.JobState(status=api.JobStatus.JS_RUNNING))],
        )
        self.dispatches = [
            api.AgentDispatch(
                id="AD_orig", agent_name=AGENT, room="call-room", metadata=META, state=state
            )
        ]
        self.created: list[api.CreateAgentDispatchRequest] = []
        self.refused: list[str] = []

    def _grants(self, request: web.Request) -> dict[str, object]:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        claims = jwt.decode(token, SECRET, algorithms=["HS256"])
        assert claims["iss"] == KEY
        video = claims.get("video", {})
        assert isinstance(video, dict)
        return video

    def _refuse(self, method: str) -> web.Response:
        self.refused.append(method)
        return web.json_response({"code": "permission_denied", "msg": "no"}, status=403)

    async def list_rooms(self, request: web.Request) -> web.Response:
        if not self._grants(request).get("roomList"):
            return self._refuse("ListRooms")
        body = api.ListRoomsResponse(rooms=[api.Room(name="call-room", sid="RM_1")])
        return web.Response(body=body.SerializeToString(), content_type="application/protobuf")

    async def list_participants(self, request: web.Request) -> web.Response:
        req = api.ListParticipantsRequest.FromString(await request.read())
        grants = self._grants(request)
        if not (grants.get("roomAdmin") and grants.get("room") == req.room):
            return self._refuse("ListParticipants")
        body = api.ListParticipantsResponse(participants=self.participants)
        return web.Response(body=body.SerializeToString(), content_type="application/protobuf")

    async def list_dispatch(self, request: web.Request) -> web.Response:
        req = api.ListAgentDispatchRequest.FromString(await request.read())
        grants = self._grants(request)
        if not (grants.get("roomAdmin") and grants.get("room") == req.room):
            return self._refuse("ListDispatch")
        body = api.ListAgentDispatchResponse(agent_dispatches=self.dispatches)
        return web.Response(body=body.SerializeToString(), content_type="application/protobuf")

    async def create_dispatch(self, request: web.Request) -> web.Response:
        req = api.CreateAgentDispatchRequest.FromString(await request.read())
        grants = self._grants(request)
        if not (grants.get("roomAdmin") and grants.get("room") == req.room):
            return self._refuse("CreateDispatch")
        self.created.append(req)
        made = api.AgentDispatch(
            id=f"AD_new{len(self.created)}",
            agent_name=req.agent_name,
            room=req.room,
            metadata=req.metadata,
        )
        return web.Response(body=made.SerializeToString(), content_type="application/protobuf")


async def tick_twice_over_twirp(fake: TwirpFake) -> list[int]:
    """The watcher through the real client against `fake` on 127.0.0.1: a tick at T0, one
    after the grace; the dispatches each made."""
    app = web.Application()
    app.router.add_post("/twirp/livekit.RoomService/ListRooms", fake.list_rooms)
    app.router.add_post("/twirp/livekit.RoomService/ListParticipants", fake.list_participants)
    app.router.add_post("/twirp/livekit.AgentDispatchService/ListDispatch", fake.list_dispatch)
    app.router.add_post("/twirp/livekit.AgentDispatchService/CreateDispatch", fake.create_dispatch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server = LiveKitServerApi(f"ws://127.0.0.1:{port}", KEY, SECRET)
    now = [T0]
    loop = WatchLoop(
        server,
        watcher(),
        interval=5.0,
        monotonic=lambda: now[0],
        wall=lambda: now[0],
        jitter=no_jitter,
    )
    try:
        counts = [await loop.tick()]  # missing from T0
        now[0] = T0 + GRACE + 1
        counts.append(await loop.tick())
    finally:
        await server.aclose()
        await runner.cleanup()
    return counts


async def test_the_real_client_path_against_a_twirp_fake() -> None:
    fake = TwirpFake()
    assert await tick_twice_over_twirp(fake) == [0, 1]
    assert fake.refused == []
    assert [(r.room, r.agent_name, r.metadata) for r in fake.created] == [
        ("call-room", AGENT, META)
    ]


async def test_the_real_client_reads_a_kind_and_a_job_status_a_newer_livekit_adds() -> None:
    """A participant of kind 5 and a job of status 9 (no names in this protocol version) read as
    "other" (issue 20): the tick goes on and the caller, still without an agent, is rescued."""
    fake = TwirpFake()
    fake.participants.append(api.ParticipantInfo(identity="future-1", kind=NEW_KIND))
    fake.dispatches[0].state.jobs[0].state.status = NEW_JOB_STATUS
    with structlog.testing.capture_logs() as logs:
        assert await tick_twice_over_twirp(fake) == [0, 1]
    assert not [e for e in logs if e["event"] in ("watch.room_failed", "watch.api_error")]
    assert [(r.room, r.metadata) for r in fake.created] == [("call-room", META)]


# --------------------------------------------------------------------------- configuration


def test_empty_environment_exits_2_naming_each_missing_variable(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-m", "agent", "watch"],
        cwd=tmp_path,  # no .env here
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "the watcher cannot start" in result.stderr
    for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "AGENT_NAME"):
        assert name in result.stderr
    assert "OPENAI_API_KEY" not in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_bad_watch_setting_is_named(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "LIVEKIT_URL": "ws://127.0.0.1:7880",
        "LIVEKIT_API_KEY": KEY,
        "LIVEKIT_API_SECRET": SECRET,
        "AGENT_NAME": AGENT,
        "WATCH_GRACE_SECONDS": "-1",
        "WATCH_MAX_REDISPATCH": "many",
    }
    result = subprocess.run(
        [sys.executable, "-m", "agent", "watch"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "WATCH_GRACE_SECONDS" in result.stderr
    assert "WATCH_MAX_REDISPATCH" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_sigterm_stops_a_watcher_whose_api_fails(tmp_path: Path) -> None:
    """Nothing listens on the discard port: each tick is one `watch.api_error` JSON line, the
    process keeps going, its healthcheck on PORT (Railway's, from the shared railway.toml)
    answers 503 (a deploy with a wrong LIVEKIT_URL or key fails there, not later), and SIGTERM
    ends it with exit 0."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        health_port = probe.getsockname()[1]
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "LIVEKIT_URL": "ws://127.0.0.1:9",
        "LIVEKIT_API_KEY": KEY,
        "LIVEKIT_API_SECRET": SECRET,
        "AGENT_NAME": AGENT,
        "WATCH_INTERVAL_SECONDS": "0.5",  # the least agent.config allows
        "PORT": str(health_port),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "watch"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert process.stderr is not None
        seen: list[dict[str, object]] = []
        for line in process.stderr:
            seen.append(json.loads(line))
            if [entry["event"] for entry in seen].count("watch.api_error") >= 2:
                break
        answer = httpx.get(f"http://127.0.0.1:{health_port}/", timeout=5)
        assert (answer.status_code, answer.text) == (503, "not connected to LiveKit yet")
        process.send_signal(signal.SIGTERM)
        remaining = process.stderr.read()
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert seen[0]["event"] == "watch.started"
    assert SECRET not in remaining + json.dumps(seen)
    assert "Traceback" not in remaining


async def test_metrics_count_rooms_redispatches_and_api_errors() -> None:
    from prometheus_client import generate_latest

    from agent.ops.watch import WatchMetrics

    metrics = WatchMetrics()
    server = FakeServer([CALLER], [original()])
    loop = WatchLoop(
        server,
        watcher(),
        interval=5.0,
        metrics=metrics,
        monotonic=lambda: server.now,
        wall=lambda: server.now,
        jitter=no_jitter,
    )
    await loop.tick()
    server.now = T0 + GRACE + 1
    await loop.tick()
    text = generate_latest(metrics.registry).decode()
    assert "voice_agent_watch_redispatches_total 1.0" in text
    assert "voice_agent_watch_rooms 1.0" in text
    assert "voice_agent_watch_api_errors_total 0.0" in text
    assert "call-room" not in text  # no room in a label


def test_the_operations_guide_names_only_series_the_watcher_serves() -> None:
    import re

    from prometheus_client import generate_latest

    from agent.ops.watch import WatchMetrics

    exposed = generate_latest(WatchMetrics().registry).decode()
    served = set(re.findall(r"^(voice_agent_watch_[a-z_]+)", exposed, flags=re.MULTILINE))
    guide = (ROOT / "docs" / "operations.md").read_text()
    section = guide.split("## A call survives its worker", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"voice_agent_watch_[a-z_]+", section))
    assert named and named <= served, named - served


async def test_the_healthcheck_is_503_until_the_server_api_answered_once_then_200() -> None:
    # Railway polls it only while a deployment starts: a watcher with a wrong LIVEKIT_URL or
    # key must fail there. Once the API answered, a later failure is a log line, not a restart.
    loop = WatchLoop(FakeServer([CALLER], [original()]), watcher(), interval=0.5, jitter=no_jitter)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runner = await serve_health(port, lambda: loop.reached)
    url = f"http://127.0.0.1:{port}/"
    stop = asyncio.Event()
    try:
        async with httpx.AsyncClient() as http:
            before = await http.get(url)
            running = asyncio.create_task(loop.run(stop))
            for _ in range(100):  # bounded: the first tick is immediate
                if loop.reached:
                    break
                await asyncio.sleep(0.01)
            after = await http.get(url)
            stop.set()
            await running
    finally:
        await runner.cleanup()
    assert (before.status_code, before.text) == (503, "not connected to LiveKit yet")
    assert (after.status_code, after.text) == (200, "OK")
