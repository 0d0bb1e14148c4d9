"""The stand-in's worker protocol (/agent) against a hand-driven fake worker: fast, loopback
only, no media and no namespace (not marked e2e)."""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from livekit import api, rtc
from livekit.protocol import agent, models
from livekit.protocol import rtc as rtcpb

from tests.e2e.caller import Caller
from tests.e2e.standin import DispatchRefusedError, StandIn, participant_token

AGENT_NAME = "fake-agent"
WAV = Path(__file__).resolve().parents[1] / "audio" / "hello_48k.wav"


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


# ------------------------------------------------------------------------------- for livekit-client
# What livekit-client 2.x in a browser needs of the stand-in (issue 14, part 2).
BROWSER_ORIGIN = "http://127.0.0.1:8089"  # a page served from another origin (the playground)


def http_base(standin: StandIn) -> str:
    return standin.url.replace("ws://", "http://")


def room_token(standin: StandIn, identity: str = "browser-1", room: str = "room-z") -> str:
    return (
        api.AccessToken(standin.api_key, standin.api_secret)
        .with_identity(identity)
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .to_jwt()
    )


async def test_http_routes_answer_cors_preflight_and_requests_from_a_page(
    plain_standin: StandIn, http: aiohttp.ClientSession
) -> None:
    base = http_base(plain_standin)
    preflight = {
        "Origin": BROWSER_ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with http.options(
        f"{base}/twirp/livekit.AgentDispatchService/CreateDispatch", headers=preflight
    ) as response:
        assert response.status in (200, 204)
        assert response.headers["Access-Control-Allow-Origin"] in ("*", BROWSER_ORIGIN)
        allowed = response.headers["Access-Control-Allow-Headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
    async with http.get(
        f"{base}/rtc/validate",
        params={"access_token": room_token(plain_standin)},
        headers={"Origin": BROWSER_ORIGIN},
    ) as response:
        assert response.headers["Access-Control-Allow-Origin"] in ("*", BROWSER_ORIGIN)


async def test_rtc_validate_is_200_with_a_valid_token_and_401_otherwise(
    plain_standin: StandIn, http: aiohttp.ClientSession
) -> None:
    base = http_base(plain_standin)
    good = room_token(plain_standin)
    bad = (
        api.AccessToken(plain_standin.api_key, "another_secret_another_secret_xx")
        .with_identity("browser-1")
        .with_grants(api.VideoGrants(room_join=True, room="room-z"))
        .to_jwt()
    )
    async with http.get(f"{base}/rtc/validate", params={"access_token": good}) as response:
        assert response.status == 200
    for token in (bad, ""):
        async with http.get(f"{base}/rtc/validate", params={"access_token": token}) as response:
            assert response.status == 401
    # livekit-client 2.x tries /rtc/v1 first and asks /rtc/v1/validate why it failed: a 404
    # (v1 not emulated) makes it fall back to /rtc
    async with http.get(f"{base}/rtc/v1/validate", params={"access_token": good}) as response:
        assert response.status == 404
        assert "requested room does not exist" not in await response.text()


async def test_a_client_announcing_protocol_17_joins_and_its_version_is_recorded(
    plain_standin: StandIn, http: aiohttp.ClientSession
) -> None:
    """livekit-client 2.23 announces protocol=17 (sdk=js) in the /rtc query."""
    ws = await http.ws_connect(
        f"{plain_standin.url}/rtc",
        params={
            "access_token": room_token(plain_standin),
            "protocol": "17",
            "sdk": "js",
            "version": "2.23.0",
            "auto_subscribe": "1",
        },
    )
    try:
        first = rtcpb.SignalResponse()
        first.ParseFromString(await asyncio.wait_for(ws.receive_bytes(), 5))
        assert first.WhichOneof("message") == "join"
        assert first.join.participant.identity == "browser-1"
        joined = await plain_standin.wait_for_event("joined", identity="browser-1", timeout=5)
        assert (joined.detail["protocol"], joined.detail["sdk"]) == ("17", "js")
    finally:
        await ws.close()


@pytest.mark.parametrize("can_publish", [True, False])
async def test_the_join_response_offers_fast_publish_to_a_participant_that_may_publish(
    plain_standin: StandIn, http: aiohttp.ClientSession, can_publish: bool
) -> None:
    """As LiveKit's server sets it (pkg/rtc/room.go: CanPublish() && !hasICEFallback). Without
    it the Rust SDK negotiates its publisher through a debouncer that can drop a new track's
    offer: the agent's audio never reached the room on 3 of 21 browser runs here."""
    token = (
        api.AccessToken(plain_standin.api_key, plain_standin.api_secret)
        .with_identity("browser-1")
        .with_grants(api.VideoGrants(room_join=True, room="room-f", can_publish=can_publish))
        .to_jwt()
    )
    ws = await http.ws_connect(f"{plain_standin.url}/rtc", params={"access_token": token})
    try:
        first = rtcpb.SignalResponse()
        first.ParseFromString(await asyncio.wait_for(ws.receive_bytes(), 5))
        assert first.WhichOneof("message") == "join"
        assert first.join.fast_publish is can_publish
    finally:
        await ws.close()


def test_a_data_packet_takes_its_kind_from_the_channel_it_arrived_on() -> None:
    """LiveKit stamps the kind of the channel a packet came on (RELIABLE on `_reliable`, LOSSY on
    `_lossy`) whatever the sender wrote; livekit-client reports that kind to the page."""
    standin = StandIn()
    sent: list[tuple[str, str, bytes]] = []
    standin._send_data = lambda receiver, label, data: sent.append(  # type: ignore[method-assign]
        (receiver.identity, label, data)
    )
    room = types.SimpleNamespace(name="room-k", participants={})
    sender = types.SimpleNamespace(identity="agent-1", sid="PA_a", room=room)
    receiver = types.SimpleNamespace(identity="browser-1", sid="PA_b", room=room)
    room.participants = {"agent-1": sender, "browser-1": receiver}
    for label, written in (
        ("_reliable", models.DataPacket.LOSSY),
        ("_lossy", models.DataPacket.RELIABLE),
    ):
        packet = models.DataPacket(
            kind=written, user=models.UserPacket(payload=b"{}", topic="transcript")
        )
        standin._on_data(sender, label, packet.SerializeToString())  # type: ignore[arg-type]
    kinds = []
    for identity, label, data in sent:
        received = models.DataPacket()
        received.ParseFromString(data)
        assert identity == "browser-1"
        kinds.append((label, received.kind))
    assert kinds == [("_reliable", models.DataPacket.RELIABLE), ("_lossy", models.DataPacket.LOSSY)]


@pytest.mark.e2e
async def test_a_late_subscriber_hears_live_audio_only_never_a_replay(
    standin: StandIn,
) -> None:
    """Audio is forwarded live: a participant who subscribes after someone spoke hears what is
    said from then on, never the earlier frames replayed (in the namespace: real media)."""
    speaker = Caller(
        standin.url, participant_token("agent-s", "room-live", kind="agent"), agent_name=None
    )
    listener = Caller(standin.url, participant_token("late-1", "room-live"), agent_name=None)
    try:
        await speaker.connect()
        await speaker.speak(WAV, timeout=20)  # nobody subscribes while it speaks: silence after
        await listener.connect()
        # a second of what arrives once subscribed: the speaker's silence, live
        await listener.wait_until(
            lambda: sum(f.seconds for f in listener.heard) >= 1.5,
            timeout=15,
            what="1.5 s of the speaker's audio",
        )
        assert not listener.heard_between(0.0, listener.now()), "earlier speech was replayed"
    finally:
        await listener.leave()
        await speaker.leave()


# how late the stand-in reads the leaving client's data channel in the test below
LATE_READ = 1.0


@pytest.mark.e2e
async def test_data_sent_before_a_leave_is_relayed_even_when_read_after_it(
    standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This Python SFU on a busy machine read an agent's last packets (its last turns, `end`)
    up to 0.9 s after its leave. A leaving client is removed once it has closed its connection,
    not a fixed grace after its leave, so what it sent before is still relayed. Here the
    sender's data-channel events reach the stand-in LATE_READ late, in order, and none once it
    has been removed (a closed connection reads nothing more)."""
    room = "room-leave"
    on_channel = standin._on_channel

    def read_late(p: Any, channel: Any) -> None:
        if p.identity != "agent-l":
            on_channel(p, channel)
            return
        loop = asyncio.get_running_loop()

        def deliver(handler: Callable[..., None], *args: object) -> None:
            if not p.removed:
                handler(*args)

        class Late:
            label = channel.label

            def on(self, event: str, handler: Callable[..., None]) -> None:
                channel.on(event, lambda *args: loop.call_later(LATE_READ, deliver, handler, *args))

        on_channel(p, Late())

    monkeypatch.setattr(standin, "_on_channel", read_late)
    sender = Caller(standin.url, participant_token("agent-l", room, kind="agent"), agent_name=None)
    listener = Caller(standin.url, participant_token("listener-l", room), agent_name=None)
    sent = [f"packet-{i}".encode() for i in range(3)]
    got: list[bytes] = []
    all_got = asyncio.Event()
    path_up = asyncio.Event()

    def on_data(packet: rtc.DataPacket) -> None:
        if packet.topic == "warm-up":
            path_up.set()
            return
        got.append(packet.data)
        if len(got) >= len(sent):
            all_got.set()

    listener.room.on("data_received", on_data)
    try:
        await listener.connect()
        await sender.connect()
        # the sender's data path is up (on a loaded machine its negotiation can still be under
        # way after connect(), and a leave then closes it before anything was sent at all):
        # what is tested is what was sent on an open path just before the leave
        await sender.room.local_participant.publish_data(b"hello", topic="warm-up")
        await asyncio.wait_for(path_up.wait(), LATE_READ + 10)
        for payload in sent:
            await sender.room.local_participant.publish_data(payload, topic="probe")
        await sender.leave()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_got.wait(), LATE_READ + 5)
        assert got == sent
        left = await standin.wait_for_event("left", identity="agent-l", timeout=5)
        assert left.detail["reason"] == "CLIENT_INITIATED"
    finally:
        await listener.leave()
        await sender.leave()


async def test_create_dispatch_over_twirp_dispatches_the_named_agent_with_its_metadata(
    plain_standin: StandIn, http: aiohttp.ClientSession
) -> None:
    """What the playground's server does: api.LiveKitAPI(...).agent_dispatch.create_dispatch."""
    worker = await connect(http, plain_standin)
    await worker.register()
    async with api.LiveKitAPI(
        http_base(plain_standin), plain_standin.api_key, plain_standin.api_secret
    ) as lkapi:
        created = await lkapi.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(
                agent_name=AGENT_NAME, room="room-d", metadata='{"scenarioId": "s"}'
            )
        )
    assert (created.agent_name, created.room, created.metadata) == (
        AGENT_NAME,
        "room-d",
        '{"scenarioId": "s"}',
    )
    assert created.id
    request = (await worker.receive()).availability
    assert (request.job.agent_name, request.job.metadata) == (AGENT_NAME, '{"scenarioId": "s"}')
    assert request.job.room.name == "room-d"


async def test_create_dispatch_without_a_room_admin_token_is_refused(
    plain_standin: StandIn, http: aiohttp.ClientSession
) -> None:
    async with api.LiveKitAPI(
        http_base(plain_standin), plain_standin.api_key, "another_secret_another_secret_xx"
    ) as lkapi:
        with pytest.raises(api.TwirpError) as error:
            await lkapi.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room="room-d")
            )
    assert error.value.status == 401
    assert plain_standin.jobs == {}
