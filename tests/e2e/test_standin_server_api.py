"""The stand-in's server API (twirp RoomService/AgentDispatchService, as the watcher calls it with
the real ``livekit.api.LiveKitAPI``) and its optional Cloud-style re-dispatch of a lost worker's
jobs, against hand-driven fake workers and raw signal sockets: loopback only, no media, no
namespace (not marked e2e, like test_standin_protocol.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest
from livekit import api
from livekit.protocol import agent, models
from livekit.protocol import rtc as rtcpb

from tests.e2e.standin import StandIn, participant_token
from tests.e2e.test_standin_protocol import AGENT_NAME, FakeWorker, connect, http_base

METADATA = '{"scenarioId": "s", "participantIdentity": "caller-1"}'
WRONG_SECRET = "another_secret_another_secret_xx"
Kind = models.ParticipantInfo.Kind


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    server = StandIn()  # port 0: the OS picks one
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def lkapi(standin: StandIn, secret: str | None = None) -> api.LiveKitAPI:
    """The client the watcher uses: api.LiveKitAPI(url, key, secret)."""
    return api.LiveKitAPI(standin.url, standin.api_key, secret or standin.api_secret)


async def join(
    http: aiohttp.ClientSession, standin: StandIn, token: str
) -> aiohttp.ClientWebSocketResponse:
    """Join a room on a raw signal socket (no peer connection: enough to be listed)."""
    ws = await http.ws_connect(f"{standin.url}/rtc", params={"access_token": token})
    first = rtcpb.SignalResponse()
    first.ParseFromString(await asyncio.wait_for(ws.receive_bytes(), 5))
    assert first.WhichOneof("message") == "join"
    return ws


async def accept_next_job(worker: FakeWorker) -> agent.Job:
    """Answer the next AvailabilityRequest with yes and return the assigned job."""
    request = (await worker.receive()).availability
    await worker.answer(request.job.id, available=True)
    assignment = (await worker.receive()).assignment
    assert assignment.job.id == request.job.id
    return assignment.job


# ------------------------------------------------------------------------------- server API
async def test_list_rooms_and_participants_with_their_kinds_and_agent_attributes(
    standin: StandIn, http: aiohttp.ClientSession
) -> None:
    caller = await join(http, standin, participant_token("caller-1", "room-l"))
    agent_ws = await join(
        http,
        standin,
        participant_token(
            "agent-AJ_1", "room-l", kind="agent", attributes={"lk.agent.name": AGENT_NAME}
        ),
    )
    try:
        async with lkapi(standin) as client:
            rooms = await client.room.list_rooms(api.ListRoomsRequest())
            named = await client.room.list_rooms(api.ListRoomsRequest(names=["room-none"]))
            listed = await client.room.list_participants(api.ListParticipantsRequest(room="room-l"))
        assert [r.name for r in rooms.rooms] == ["room-l"]
        assert rooms.rooms[0].sid.startswith("RM_") and rooms.rooms[0].num_participants == 2
        assert list(named.rooms) == []
        by_identity = {p.identity: p for p in listed.participants}
        assert {i: p.kind for i, p in by_identity.items()} == {
            "caller-1": Kind.STANDARD,
            "agent-AJ_1": Kind.AGENT,
        }
        assert by_identity["agent-AJ_1"].attributes["lk.agent.name"] == AGENT_NAME
        assert by_identity["caller-1"].state == models.ParticipantInfo.State.ACTIVE
    finally:
        await agent_ws.close()
        await caller.close()


async def test_list_participants_of_a_room_that_is_not_open_is_not_found(
    standin: StandIn,
) -> None:
    async with lkapi(standin) as client:
        with pytest.raises(api.TwirpError) as error:
            await client.room.list_participants(api.ListParticipantsRequest(room="room-none"))
    assert (error.value.status, error.value.code) == (404, "not_found")


async def test_a_dispatch_created_over_twirp_is_listed_with_its_metadata_and_job_state(
    standin: StandIn, http: aiohttp.ClientSession
) -> None:
    worker = await connect(http, standin)
    await worker.register()
    async with lkapi(standin) as client:
        created = await client.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room="room-d", metadata=METADATA)
        )
        job = await accept_next_job(worker)
        assert (job.dispatch_id, job.metadata, job.room.name) == (created.id, METADATA, "room-d")
        await standin.wait_until(
            lambda: standin.jobs[job.id].assigned, timeout=5, what="the assignment"
        )
        pending = await client.agent_dispatch.list_dispatch("room-d")
        await worker.send(
            agent.WorkerMessage(
                update_job=agent.UpdateJobStatus(job_id=job.id, status=agent.JobStatus.JS_RUNNING)
            )
        )
        await standin.wait_for_job_status(job.id, agent.JobStatus.JS_RUNNING, timeout=5)
        running = await client.agent_dispatch.list_dispatch("room-d")

    assert [(d.id, d.agent_name, d.room, d.metadata) for d in running] == [
        (created.id, AGENT_NAME, "room-d", METADATA)
    ]
    assert running[0].state.created_at > 0
    assert [j.id for j in running[0].state.jobs] == [job.id]
    assert pending[0].state.jobs[0].state.status == agent.JobStatus.JS_PENDING
    state = running[0].state.jobs[0].state
    assert state.status == agent.JobStatus.JS_RUNNING
    assert state.participant_identity == f"agent-{job.id}"


async def test_a_wrong_secret_or_a_missing_grant_is_refused_with_401(
    standin: StandIn, http: aiohttp.ClientSession
) -> None:
    async with lkapi(standin, WRONG_SECRET) as client:
        for call in (
            client.room.list_rooms(api.ListRoomsRequest()),
            client.room.list_participants(api.ListParticipantsRequest(room="room-x")),
            client.agent_dispatch.list_dispatch("room-x"),
        ):
            with pytest.raises(api.TwirpError) as error:
                await call
            assert (error.value.status, error.value.code) == (401, "unauthenticated")
    # signed right, but roomAdmin for another room / no roomList grant
    for method, body, grants in (
        ("RoomService/ListParticipants", {"room": "room-x"}, {"room_admin": True, "room": "y"}),
        ("AgentDispatchService/ListDispatch", {"room": "room-x"}, {"room_list": True}),
        ("RoomService/ListRooms", {}, {"room_admin": True, "room": "room-x"}),
    ):
        token = (
            api.AccessToken(standin.api_key, standin.api_secret)
            .with_grants(api.VideoGrants(**grants))
            .to_jwt()
        )
        async with http.post(
            f"{http_base(standin)}/twirp/livekit.{method}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            assert response.status == 401, method
    assert standin.dispatches == {}


# ------------------------------------------------------------------------------- workers
async def test_dispatch_never_picks_a_worker_that_dropped_before_answering(
    standin: StandIn, http: aiohttp.ClientSession
) -> None:
    older = await connect(http, standin)
    older_id = (await older.register()).worker_id
    newest = await connect(http, standin)
    await newest.register()
    dispatching = asyncio.create_task(standin.dispatch("room-w", METADATA, AGENT_NAME, timeout=10))
    asked = (await newest.receive()).availability
    await newest.ws.close()  # the newest worker dies without answering
    job = await accept_next_job(older)
    assert job.id == asked.job.id and job.metadata == METADATA
    assert await dispatching == job.id
    assert standin.jobs[job.id].worker_id == older_id


async def test_a_lost_workers_job_is_redispatched_to_another_worker_when_the_option_is_on(
    standin: StandIn, http: aiohttp.ClientSession
) -> None:
    standin.redispatch_lost_jobs = True
    caller = await join(http, standin, participant_token("caller-1", "room-r"))
    first = await connect(http, standin)
    first_id = (await first.register()).worker_id
    dispatching = asyncio.create_task(standin.dispatch("room-r", METADATA, AGENT_NAME))
    old = await accept_next_job(first)
    await dispatching
    await first.ws.close()  # the container dies: its socket drops
    second = await connect(http, standin)  # a worker that registers after the loss
    second_id = (await second.register()).worker_id
    try:
        new = await accept_next_job(second)
        assert new.id != old.id
        assert (new.dispatch_id, new.room.name, new.agent_name, new.metadata) == (
            old.dispatch_id,
            "room-r",
            AGENT_NAME,
            METADATA,
        )
        record = await standin.wait_until(
            lambda: next(iter(standin.redispatches), None), timeout=5, what="the re-dispatch"
        )
        assert (record.old_job_id, record.new_job_id) == (old.id, new.id)
        assert (record.old_worker_id, record.new_worker_id) == (first_id, second_id)
        assert record.error == "" and record.at >= record.lost_at
        async with lkapi(standin) as client:
            [dispatch] = await client.agent_dispatch.list_dispatch("room-r")
        assert dispatch.id == old.dispatch_id and dispatch.metadata == METADATA
        assert [(j.id, j.state.status) for j in dispatch.state.jobs] == [
            (old.id, agent.JobStatus.JS_FAILED),
            (new.id, agent.JobStatus.JS_PENDING),
        ]
    finally:
        await caller.close()


async def test_a_lost_workers_job_is_not_redispatched_by_default(
    standin: StandIn, http: aiohttp.ClientSession
) -> None:
    caller = await join(http, standin, participant_token("caller-1", "room-n"))
    first = await connect(http, standin)
    await first.register()
    dispatching = asyncio.create_task(standin.dispatch("room-n", METADATA, AGENT_NAME))
    await accept_next_job(first)
    await dispatching
    await first.ws.close()
    second = await connect(http, standin)
    await second.register()
    try:
        with pytest.raises(TimeoutError):
            await second.receive(timeout=1.0)
        assert standin.redispatches == []
    finally:
        await caller.close()


AGENT_PROCESS = """
import asyncio, sys, aiohttp
async def main():
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(sys.argv[1] + "/rtc", params={"access_token": sys.argv[2]})
        await ws.receive_bytes()
        print("joined", flush=True)
        await asyncio.sleep(3600)
asyncio.run(main())
"""


async def test_a_killed_agent_process_leaves_its_room_at_once_and_is_no_longer_listed(
    standin: StandIn, http: aiohttp.ClientSession
) -> None:
    """What the caller and the watcher see when a worker's container dies: the agent is
    broadcast DISCONNECTED and ListParticipants no longer shows it."""
    caller = await join(http, standin, participant_token("caller-1", "room-k"))
    token = participant_token(
        "agent-AJ_k", "room-k", kind="agent", attributes={"lk.agent.name": AGENT_NAME}
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", AGENT_PROCESS, standin.url, token, stdout=subprocess.DEVNULL
    )
    try:
        await standin.wait_for_event("joined", identity="agent-AJ_k", timeout=20)
        os.kill(process.pid, signal.SIGKILL)
        while True:
            update = rtcpb.SignalResponse()
            update.ParseFromString(await asyncio.wait_for(caller.receive_bytes(), 10))
            gone = [
                p
                for p in update.update.participants
                if p.identity == "agent-AJ_k"
                and p.state == models.ParticipantInfo.State.DISCONNECTED
            ]
            if gone:
                break
        async with lkapi(standin) as client:
            listed = await client.room.list_participants(api.ListParticipantsRequest(room="room-k"))
        assert [(p.identity, p.kind) for p in listed.participants] == [("caller-1", Kind.STANDARD)]
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        await caller.close()
