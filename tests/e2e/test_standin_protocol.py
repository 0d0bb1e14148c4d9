"""The stand-in's worker protocol (/agent) against a hand-driven fake worker: fast, loopback
only, no media and no namespace (not marked e2e)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from livekit import api
from livekit.protocol import agent

from tests.e2e.standin import DispatchRefusedError, StandIn

AGENT_NAME = "fake-agent"


class FakeWorker:
    """Speaks the worker side of /agent by hand."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, msg: agent.WorkerMessage) -> None:
        await self.ws.send_bytes(msg.SerializeToString())

    async def receive(self, timeout: float = 5.0) -> agent.ServerMessage:
        data = await asyncio.wait_for(self.ws.receive_bytes(), timeout)
        msg = agent.ServerMessage()
        msg.ParseFromString(data)
        return msg

    async def register(self) -> agent.RegisterWorkerResponse:
        await self.send(
            agent.WorkerMessage(register=agent.RegisterWorkerRequest(agent_name=AGENT_NAME))
        )
        first = await self.receive()
        assert first.WhichOneof("message") == "register"
        return first.register

    async def answer(self, job_id: str, *, available: bool) -> None:
        await self.send(
            agent.WorkerMessage(
                availability=agent.AvailabilityResponse(
                    job_id=job_id,
                    available=available,
                    participant_identity=f"agent-{job_id}",
                    participant_attributes={"lk.agent.name": AGENT_NAME},
                )
            )
        )


def worker_token(standin: StandIn, *, secret: str | None = None) -> str:
    return (
        api.AccessToken(standin.api_key, secret or standin.api_secret)
        .with_grants(api.VideoGrants(agent=True))
        .to_jwt()
    )


@pytest.fixture
async def plain_standin() -> AsyncIterator[StandIn]:
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


async def connect(
    http: aiohttp.ClientSession, standin: StandIn, token: str | None = None
) -> FakeWorker:
    ws = await http.ws_connect(
        f"{standin.url}/agent",
        headers={"Authorization": f"Bearer {token or worker_token(standin)}"},
    )
    return FakeWorker(ws)


async def test_a_worker_token_signed_with_another_secret_is_refused(
    plain_standin: StandIn, http: aiohttp.ClientSession
) -> None:
    bad = worker_token(plain_standin, secret="another_secret_another_secret_xx")
    with pytest.raises(aiohttp.WSServerHandshakeError) as error:
        await connect(http, plain_standin, bad)
    assert error.value.status == 401
    assert plain_standin.auth_failures == 1


async def test_dispatch_carries_metadata_and_assigns_a_real_agent_token(
    plain_standin: StandIn, http: aiohttp.ClientSession
) -> None:
    worker = await connect(http, plain_standin)
    registered = await worker.register()
    assert registered.worker_id and registered.server_info.region == "loopback"

    dispatch = asyncio.create_task(
        plain_standin.dispatch("room-a", '{"scenarioId": "s"}', AGENT_NAME)
    )
    request = (await worker.receive()).availability
    assert (request.job.agent_name, request.job.metadata) == (AGENT_NAME, '{"scenarioId": "s"}')
    assert request.job.room.name == "room-a" and request.job.room.sid.startswith("RM_")
    await worker.answer(request.job.id, available=True)
    assignment = (await worker.receive()).assignment
    job_id = await dispatch
    assert assignment.job.id == job_id == request.job.id
    assert assignment.url == plain_standin.url

    claims = api.TokenVerifier(plain_standin.api_key, plain_standin.api_secret).verify(
        assignment.token
    )
    assert (claims.kind, claims.identity) == ("agent", f"agent-{job_id}")
    assert claims.video is not None and claims.video.room_join and claims.video.room == "room-a"
    assert claims.attributes == {"lk.agent.name": AGENT_NAME}

    await worker.send(
        agent.WorkerMessage(
            update_job=agent.UpdateJobStatus(job_id=job_id, status=agent.JobStatus.JS_RUNNING)
        )
    )
    await worker.send(
        agent.WorkerMessage(
            update_worker=agent.UpdateWorkerStatus(status=agent.WorkerStatus.WS_AVAILABLE)
        )
    )
    await plain_standin.wait_for_job_status(job_id, agent.JobStatus.JS_RUNNING, timeout=5)
    await plain_standin.wait_for_worker_status(agent.WorkerStatus.WS_AVAILABLE, timeout=5)

    await plain_standin.terminate(job_id)
    assert (await worker.receive()).termination.job_id == job_id
    assert [t.reason for t in plain_standin.terminations] == ["requested"]


async def test_a_refused_job_is_recorded_and_never_dispatched_again(
    plain_standin: StandIn, http: aiohttp.ClientSession
) -> None:
    worker = await connect(http, plain_standin)
    await worker.register()
    dispatch = asyncio.create_task(plain_standin.dispatch("room-b", "", AGENT_NAME))
    request = (await worker.receive()).availability
    await worker.answer(request.job.id, available=False)
    with pytest.raises(DispatchRefusedError):
        await dispatch
    assert [a.available for a in plain_standin.availability_answers(request.job.id)] == [False]
    with pytest.raises(TimeoutError):
        await worker.receive(timeout=0.5)  # no assignment, no second request


async def test_request_availability_returns_the_answer_without_assigning(
    plain_standin: StandIn, http: aiohttp.ClientSession
) -> None:
    worker = await connect(http, plain_standin)
    await worker.register()
    asking = asyncio.create_task(
        plain_standin.request_availability("room-c", agent_name=AGENT_NAME)
    )
    request = (await worker.receive()).availability
    await worker.answer(request.job.id, available=True)
    answer = await asking
    assert answer.available and answer.job_id == request.job.id
    with pytest.raises(TimeoutError):
        await worker.receive(timeout=0.5)
    assert not plain_standin.room_is_open("room-c")


async def test_rtc_v1_answers_404_so_the_sdk_falls_back_to_dual_pc(
    plain_standin: StandIn, http: aiohttp.ClientSession
) -> None:
    base = plain_standin.url.replace("ws://", "http://")
    async with http.get(f"{base}/rtc/v1", headers={"Upgrade": "websocket"}) as response:
        assert response.status == 404
