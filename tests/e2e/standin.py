"""A loopback LiveKit stand-in for the end-to-end tests: a test double, not a LiveKit server.

It speaks just enough of LiveKit's two protocols for the real `livekit-agents` worker and the
real `livekit` rtc SDK (the Rust FFI) to run a call on this machine, offline:

* the worker protocol on ``/agent`` (protobuf ``WorkerMessage``/``ServerMessage`` frames): it
  verifies the worker's Bearer JWT, answers ``register``, dispatches jobs on demand from test code
  (``dispatch``: an ``AvailabilityRequest`` whose ``Job`` carries the agent name, the metadata and
  the room, then a ``JobAssignment`` carrying a real HS256 room token of kind ``agent``), sends
  ``JobTermination`` on demand (``terminate``) and when the agent participant leaves its room
  (as LiveKit's ``TerminateJob(AGENT_LEFT_ROOM)``), and records every worker message
  (availability answers, ``update_worker`` statuses, ``update_job`` statuses) for assertions;
* the signal protocol on ``/rtc`` plus an audio-only "SFU" on aiortc: rooms on demand, a
  publisher and a subscriber peer connection per participant (``/rtc/v1`` answers 404 so the SDK
  falls back to the dual-PC ``/rtc`` path, where server-initiated subscriber offers work),
  ``TrackPublished``/``TrackSubscribed`` (the agents' audio output waits for the latter),
  downstream stream ids ``"<PA_sid>|<TR_sid>"``, participant updates and attribute changes;
  audio is forwarded live only (a late subscriber never gets earlier frames); the client's
  announced ``protocol``/``sdk``/``version`` are recorded on the ``joined`` event;
* what livekit-client in a browser also needs: CORS on every HTTP route, ``/rtc/validate``
  (200 with a valid token, 401 otherwise; ``/rtc/v1/validate`` is 404, so it falls back), and
  ``AgentDispatchService.CreateDispatch`` (twirp) for a page's server to dispatch an agent;
* the server API a watcher uses (twirp, protobuf or JSON, the API key's Bearer JWT verified
  with the secret; 401 ``unauthenticated`` without the grant): ``RoomService.ListRooms``
  (``roomList``), ``RoomService.ListParticipants`` (``roomAdmin`` for the room; kind AGENT or
  STANDARD, attributes as joined/set), ``AgentDispatchService.ListDispatch`` and
  ``CreateDispatch`` (``roomAdmin`` for the room): every dispatch is recorded
  (``self.dispatches``) with its jobs and their state (status as the worker reports it,
  participant identity, worker id; times in Unix ns); a room that is not open is 404;
* optionally, LiveKit Cloud's re-dispatch (``redispatch_lost_jobs``, off by default): when a
  worker's /agent socket drops, each of its assigned jobs that has not ended (no final
  ``update_job``, not terminated by the test, its agent not gone with ``CLIENT_INITIATED``)
  in a room still open gets a new job (new id, same dispatch, room, agent name, metadata)
  sent to another connected worker of that agent name, waiting up to ``redispatch_wait``
  seconds for one; each attempt is recorded in ``self.redispatches`` (``lost_at``/``at``);
* data packets: user packets (with topic), RPC request/ack/response and data-stream
  header/chunk/trailer packets (``lk.transcription``) are forwarded to the other participants
  of the room, or only to ``destination_identities`` when the sender named any; the sender's
  identity and sid are stamped on each packet, and its ``kind`` is the channel it came on
  (``_reliable``/``_lossy``), as LiveKit does;
* how a call ends: a participant that leaves is broadcast as ``DISCONNECTED`` with
  ``disconnect_reason=CLIENT_INITIATED``; when only agents remain for ``departure_timeout``
  seconds (or nobody remains), the room closes: each remaining participant gets
  ``leave(reason=ROOM_CLOSED, action=DISCONNECT)`` and then its signal socket is closed;
* optionally, LiveKit's media handling (``forward_rtp`` and ``negotiate_dtx``, off by default,
  on in bench/bench_capacity_deployed.py's ``--sfu livekit``): each subscriber gets the
  publisher's Opus packets unchanged (payload and timestamp) instead of a decoded and
  re-encoded copy, and a publisher's audio is answered with LiveKit's Opus line with DTX
  (``minptime=10;useinbandfec=1;usedtx=1``) unless its ``AddTrackRequest`` set ``disable_dtx``.

What it does NOT emulate (do not write tests that depend on these):

* video, simulcast, codecs other than Opus (RED is not negotiated), RTP forwarding by default
  (media is decoded and re-encoded by aiortc's ``MediaRelay``), bandwidth estimation, packet
  loss, jitter or speaker detection;
* the v1 single-peer-connection signalling, ICE restarts, resume/reconnect, migration, TURN;
* permissions beyond the token's grants at join time, mute forwarding, track unpublishing
  (a departed publisher's downstream track simply stops), subscription control, E2EE;
* the twirp APIs (RoomService, Egress...) but ListRooms, ListParticipants, ListDispatch and
  CreateDispatch (no delete, no restart policy): ``ctx.delete_room()`` and other
  ``api.LiveKitAPI`` calls get 404;
* ``empty_timeout`` for rooms nobody joined, room metadata updates, webhooks, recording, the
  cloud observability upload, SIP;
* worker load balancing (the newest connected worker is asked; one that drops before its
  assignment is replaced by another), re-dispatch after a refusal, re-dispatch after a
  worker's death unless ``redispatch_lost_jobs`` is set, job migration (``migrate_job`` is
  only recorded), ``WS_FULL`` workers being skipped; a lost worker's agent participants are
  not removed by the stand-in: they leave when their own signal socket drops (a killed
  process's does at once);
* a signal socket that drops without a ``leave`` is removed at once with ``SIGNAL_CLOSE``
  (LiveKit first waits for the client to resume); a client that sends ``leave`` is removed
  once it has closed its publisher connection (at most ``CLIENT_LEAVE_DATA_TIMEOUT`` later):
  the data packets it sent before the close are relayed meanwhile.

It is meant to run inside the e2e network namespace (see ``tests/e2e/netns.py``): aiortc and
libwebrtc gather host candidates on every non-loopback interface, and in the namespace the only
one is the veth test address.

In-process use (pytest)::

    standin = StandIn()
    await standin.start()
    job_id = await standin.dispatch("room-1", metadata='{"scenarioId": "s"}', agent_name="a")
    ...
    await standin.stop()

Standalone: ``python -m tests.e2e.standin PORT`` (loopback); a small JSON control API lives
under ``/_standin/`` (``POST dispatch {room, metadata, agentName}``, ``POST terminate {jobId}``,
``GET state``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import logging
import re
import signal
import time
import uuid
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar

import av
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.typedefs import Handler
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp
from google.protobuf import json_format
from google.protobuf.message import Message
from livekit import api
from livekit.api.access_token import Claims
from livekit.protocol import agent, agent_dispatch, models
from livekit.protocol import room as room_pb
from livekit.protocol import rtc as rtcpb

log = logging.getLogger("tests.e2e.standin")

DEFAULT_API_KEY: Final = "devkey"
DEFAULT_API_SECRET: Final = "secret_secret_secret_secret_secret_"
SERVER_VERSION: Final = "1.9.0"
PROTOCOL_VERSION: Final = 16

# a subscriber that has not answered an offer within this long is given up on
SUBSCRIBER_ANSWER_TIMEOUT: Final = 10.0
# a subscriber PC gets this long to connect before a track is added to it
SUBSCRIBER_CONNECT_TIMEOUT: Final = 10.0
# after a server-sent leave, the client gets this long to close its signal socket itself
LEAVE_GRACE: Final = 1.0
# data packets buffered per subscriber channel until that channel opens
MAX_PENDING_PACKETS: Final = 1000
# A client that sends `leave` keeps its publisher PC until the client closes it (its SCTP
# association ends), at most this long, so the data packets it sent just before (the agent's
# last turns and `end`, an RPC answer) are still relayed. LiveKit's server forwards data as it
# arrives, before a leave that comes after it, but this Python SFU on a busy machine reads its
# SCTP late: the agent's last five packets came up to 0.9 s after its leave here, and a fixed
# 0.3 s grace lost them (the page then missed `end` and its last turns).
CLIENT_LEAVE_DATA_TIMEOUT: Final = 3.0

_T = TypeVar("_T")
_Msg = TypeVar("_Msg", bound=Message)
Kind = models.ParticipantInfo.Kind
Reason = models.DisconnectReason


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def participant_token(
    identity: str,
    room: str,
    *,
    api_key: str = DEFAULT_API_KEY,
    api_secret: str = DEFAULT_API_SECRET,
    name: str = "",
    kind: Literal["standard", "agent"] = "standard",
    attributes: dict[str, str] | None = None,
) -> str:
    """A room-join token (HS256 JWT) such as a platform would mint for a caller."""
    token = (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_name(name or identity)
        .with_kind(kind)
        .with_grants(api.VideoGrants(room_join=True, room=room, agent=kind == "agent"))
    )
    if attributes:
        token = token.with_attributes(attributes)
    return token.to_jwt()


CORS_HEADERS: Final = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "authorization, content-type",
    "Access-Control-Max-Age": "600",
}


@web.middleware
async def _cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A page on another origin (the playground) may call the HTTP routes: livekit-client
    fetches ``/rtc/.../validate`` after a failed connect, and a page may call twirp."""
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return web.Response(status=204, headers=CORS_HEADERS)
    response = await handler(request)
    if not isinstance(response, web.WebSocketResponse):
        response.headers.update(CORS_HEADERS)
    return response


def _twirp_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "msg": message}, status=status)


# LiveKit's SFU (pion's default Opus line, plus DTX unless the track's AddTrackRequest said
# `disable_dtx`): what its answer to a publisher says of Opus with `negotiate_dtx`
OPUS_FMTP_DTX: Final = "minptime=10;useinbandfec=1;usedtx=1"
_OPUS_RTPMAP: Final = re.compile(r"a=rtpmap:(\d+) opus/48000/2")
_OPUS_TIME_BASE: Final = fractions.Fraction(1, 48000)
# a forwarded copy whose sender stopped reading keeps at most this many packets (10 s of Opus)
_FORWARD_QUEUE_MAX: Final = 500


def with_opus_dtx(sdp: str) -> str:
    """An answer's SDP with every Opus payload type's fmtp set to LiveKit's line with DTX: the
    publisher's encoder then sends a frame every 400 ms while silent instead of every 20 ms."""
    payload_types = set(_OPUS_RTPMAP.findall(sdp))
    lines = [
        line
        for line in sdp.split("\r\n")
        if not any(line.startswith(f"a=fmtp:{pt} ") for pt in payload_types)
    ]
    out: list[str] = []
    for line in lines:
        out.append(line)
        if match := _OPUS_RTPMAP.fullmatch(line):
            out.append(f"a=fmtp:{match.group(1)} {OPUS_FMTP_DTX}")
    return "\r\n".join(out)


class _RtpTap:
    """A publisher's Opus packets (those of `payload_types`) as they arrive, before aiortc's
    jitter buffer and decoder, handed to every forwarded copy of the track (`forward_rtp`)."""

    def __init__(self, payload_types: set[int]) -> None:
        self.payload_types = payload_types
        self.queues: list[asyncio.Queue[Any]] = []

    def feed(self, packet: Any) -> None:
        if packet.payload_type not in self.payload_types:
            return
        for queue in self.queues:
            if queue.qsize() < _FORWARD_QUEUE_MAX:  # live only: a stalled copy drops, not grows
                queue.put_nowait(packet)


class _ForwardedAudio(MediaStreamTrack):
    """One subscriber's copy of a published track, as an SFU forwards it: each packet's Opus
    payload and timestamp unchanged (aiortc's sender packs an `av.Packet` without re-encoding),
    so a silence the publisher sent as DTX reaches the subscriber as DTX, and live only: a late
    subscriber gets what is said from then on."""

    kind = "audio"

    def __init__(self, tap: _RtpTap) -> None:
        super().__init__()
        self._tap = tap
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        tap.queues.append(self._queue)

    async def recv(self) -> av.Packet:  # type: ignore[type-arg]
        if self.readyState != "live":
            raise MediaStreamError
        rtp = await self._queue.get()
        packet = av.Packet(rtp.payload)
        packet.pts = rtp.timestamp
        packet.time_base = _OPUS_TIME_BASE
        return packet

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self._tap.queues.remove(self._queue)
        super().stop()


async def _drain(track: Any) -> None:
    """Read a relayed track until it ends, dropping every frame."""
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()


async def _wait_connected(pc: Any, timeout: float) -> bool:
    """Wait until an aiortc peer connection is connected; False if it fails, closes or times
    out first."""
    if pc.connectionState == "connected":
        return True
    settled = asyncio.Event()

    def on_change() -> None:
        if pc.connectionState in ("connected", "failed", "closed"):
            settled.set()

    pc.on("connectionstatechange", on_change)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(settled.wait(), timeout)
    finally:
        pc.remove_listener("connectionstatechange", on_change)
    return bool(pc.connectionState == "connected")


# ------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class WorkerRecord:
    """One message a worker sent on /agent, as received (``at`` is ``time.monotonic()``)."""

    at: float
    worker_id: str
    message: agent.WorkerMessage

    @property
    def kind(self) -> str:
        """The ``WorkerMessage`` oneof name: register, availability, update_worker, ..."""
        return self.message.WhichOneof("message") or ""


@dataclass(frozen=True)
class TerminationRecord:
    """A ``JobTermination`` the stand-in sent: ``reason`` is "requested" or "agent_left_room"."""

    at: float
    job_id: str
    reason: str


@dataclass(frozen=True)
class RoomEvent:
    """Something that happened in a room (``at`` is ``time.monotonic()``).

    kinds: room_created, joined, left (detail: reason), leave_sent (detail: reason),
    room_closed (detail: reason), track_published, track_subscribed, data (detail: which,
    topic, to)."""

    at: float
    room: str
    kind: str
    identity: str = ""
    detail: dict[str, str] = field(default_factory=dict)


# a job is over once its worker reported one of these (or it was lost with its worker)
FINAL_JOB_STATUSES: Final = frozenset(
    {agent.JobStatus.JS_SUCCESS, agent.JobStatus.JS_FAILED, agent.JobStatus.JS_CANCELLED}
)


def _now_ns() -> int:
    return time.time_ns()


@dataclass
class JobRecord:
    """One job the stand-in sent. ``status``/``error`` follow the worker's ``update_job``
    messages (JS_PENDING until the first); times are Unix nanoseconds, as LiveKit's JobState."""

    job_id: str
    room_name: str
    agent_name: str
    metadata: str
    worker_id: str
    participant_identity: str = ""
    token: str = ""  # the room token sent in the JobAssignment
    assigned: bool = False
    terminated: bool = False
    dispatch_id: str = ""
    room_sid: str = ""
    status: agent.JobStatus = agent.JobStatus.JS_PENDING
    error: str = ""
    started_at: int = field(default_factory=_now_ns)
    ended_at: int = 0
    updated_at: int = field(default_factory=_now_ns)
    lost: bool = False  # its worker's /agent socket dropped before the job ended
    left_reason: str = ""  # why its agent participant left the room (DisconnectReason name)

    @property
    def ended(self) -> bool:
        return self.status in FINAL_JOB_STATUSES

    def state(self) -> agent.JobState:
        return agent.JobState(
            status=self.status,
            error=self.error,
            started_at=self.started_at,
            ended_at=self.ended_at,
            updated_at=self.updated_at,
            participant_identity=self.participant_identity,
            worker_id=self.worker_id,
        )


@dataclass
class DispatchRecord:
    """An agent dispatch: one per ``dispatch()``/CreateDispatch; a re-dispatch adds a job to
    the same record. ``created_at`` is Unix nanoseconds (LiveKit's AgentDispatchState)."""

    dispatch_id: str
    room_name: str
    room_sid: str
    agent_name: str
    metadata: str
    created_at: int = field(default_factory=_now_ns)
    job_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RedispatchRecord:
    """A job of a lost worker sent again (``redispatch_lost_jobs``). ``lost_at`` is when the
    stand-in saw the worker's socket drop, ``at`` when the new job was assigned (or given up:
    then ``new_job_id`` is empty and ``error`` says why); both ``time.monotonic()``."""

    lost_at: float
    at: float
    dispatch_id: str
    room_name: str
    old_job_id: str
    old_worker_id: str
    new_job_id: str = ""
    new_worker_id: str = ""
    error: str = ""


class RoomClosedError(RuntimeError):
    """A re-dispatch found its room closed (a closed room is never re-created for it)."""


class _WorkerLostError(ConnectionError):
    """The worker asked for a job dropped its socket before answering."""


class DispatchRefusedError(RuntimeError):
    """The worker answered the AvailabilityRequest with available=false (never re-dispatched)."""

    def __init__(self, job_id: str, answer: agent.AvailabilityResponse) -> None:
        super().__init__(f"worker refused job {job_id} (terminate={answer.terminate})")
        self.job_id = job_id
        self.answer = answer


# ------------------------------------------------------------------------------- state
@dataclass(eq=False)
class _Worker:
    worker_id: str
    ws: web.WebSocketResponse
    agent_name: str = ""
    registered: bool = False
    gone: bool = False  # its socket dropped or closed: never chosen again
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def connected(self) -> bool:
        return self.registered and not self.gone and not self.ws.closed

    async def send(self, msg: agent.ServerMessage) -> None:
        async with self.send_lock:
            await self.ws.send_bytes(msg.SerializeToString())


@dataclass(eq=False)
class _Track:
    info: models.TrackInfo
    cid: str
    remote: Any = None  # aiortc RemoteStreamTrack once the publisher's offer carried it
    subscribed_sent: bool = False
    disable_dtx: bool = False  # as the publisher's AddTrackRequest asked
    tap: _RtpTap | None = None  # with forward_rtp: its packets as they arrive


@dataclass(eq=False)
class _Participant:
    room: _Room
    identity: str
    name: str
    sid: str
    kind: Kind
    ws: web.WebSocketResponse
    pub_pc: Any  # aiortc RTCPeerConnection (untyped library)
    sub_pc: Any
    permission: models.ParticipantPermission
    attributes: dict[str, str] = field(default_factory=dict)
    metadata: str = ""
    joined_at: float = field(default_factory=time.time)
    version: int = 0
    tracks: list[_Track] = field(default_factory=list)
    subscribed: set[str] = field(default_factory=set)
    sub_channels: dict[str, Any] = field(default_factory=dict)
    pending_candidates: dict[str, list[str]] = field(default_factory=lambda: {"pub": [], "sub": []})
    pending: dict[str, list[bytes]] = field(default_factory=dict)
    sub_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    sub_answered: asyncio.Event = field(default_factory=asyncio.Event)
    # set when the client's publisher data channels close: it closed the connection, and every
    # data packet it sent before has been read
    data_closed: asyncio.Event = field(default_factory=asyncio.Event)
    sub_offer_id: int = 0
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    signal_done: asyncio.Event = field(default_factory=asyncio.Event)
    client_left: bool = False
    server_reason: Reason | None = None
    removed: bool = False
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def is_agent(self) -> bool:
        return self.kind == Kind.AGENT

    def info(self, *, state: models.ParticipantInfo.State | None = None) -> models.ParticipantInfo:
        self.version += 1
        return models.ParticipantInfo(
            sid=self.sid,
            identity=self.identity,
            name=self.name,
            state=models.ParticipantInfo.State.ACTIVE if state is None else state,
            tracks=[t.info for t in self.tracks],
            metadata=self.metadata,
            joined_at=int(self.joined_at),
            joined_at_ms=int(self.joined_at * 1000),
            version=self.version,
            permission=self.permission,
            region="loopback",
            is_publisher=bool(self.tracks),
            kind=self.kind,
            attributes=self.attributes,
        )

    async def send(self, response: rtcpb.SignalResponse) -> None:
        if self.ws.closed:
            return
        async with self.send_lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_bytes(response.SerializeToString())

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


@dataclass(eq=False)
class _Room:
    name: str
    sid: str
    created_at: float = field(default_factory=time.time)
    participants: dict[str, _Participant] = field(default_factory=dict)
    closed: bool = False
    close_timer: asyncio.TimerHandle | None = None

    def proto(self) -> models.Room:
        return models.Room(
            sid=self.sid,
            name=self.name,
            creation_time=int(self.created_at),
            creation_time_ms=int(self.created_at * 1000),
            num_participants=len(self.participants),
            num_publishers=sum(1 for p in self.participants.values() if p.tracks),
        )


# ------------------------------------------------------------------------------- stand-in
class StandIn:
    """The stand-in server. Start it with ``await start()``, stop it with ``await stop()``.

    ``url`` is what workers and callers use as LIVEKIT_URL (``ws://host:port``)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = DEFAULT_API_KEY,
        api_secret: str = DEFAULT_API_SECRET,
        departure_timeout: float = 2.0,
        redispatch_lost_jobs: bool = False,
        redispatch_wait: float = 30.0,
        forward_rtp: bool = False,
        negotiate_dtx: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.api_secret = api_secret
        self.departure_timeout = departure_timeout
        self.worker_messages: list[WorkerRecord] = []
        self.terminations: list[TerminationRecord] = []
        self.events: list[RoomEvent] = []
        self.jobs: dict[str, JobRecord] = {}
        self.dispatches: dict[str, DispatchRecord] = {}
        # as LiveKit Cloud does: when a worker's /agent socket drops, each of its jobs that was
        # assigned, has not ended and whose room is still open is sent again (new job id, same
        # dispatch) to another connected worker of the agent name, waiting up to
        # redispatch_wait seconds for one. Off by default: self-hosted LiveKit never does it.
        # A test may switch it on at any time before the kill.
        self.redispatch_lost_jobs = redispatch_lost_jobs
        self.redispatch_wait = redispatch_wait
        # As LiveKit's SFU, for a bench that measures what a deployment's worker does (both off
        # by default, the tests' stand-in): `forward_rtp` sends each subscriber the publisher's
        # Opus packets unchanged instead of decoding and encoding them again, and
        # `negotiate_dtx` answers a publisher's audio with DTX unless it asked for none.
        self.forward_rtp = forward_rtp
        self.negotiate_dtx = negotiate_dtx
        self.redispatches: list[RedispatchRecord] = []
        self.auth_failures = 0
        self._verifier = api.TokenVerifier(api_key, api_secret)
        self._workers: dict[str, _Worker] = {}
        self._rooms: dict[str, _Room] = {}
        self._pending_answers: dict[str, asyncio.Future[agent.AvailabilityResponse]] = {}
        self._asked: dict[str, str] = {}  # job id -> the worker asked for it (pending answers)
        self._relay = MediaRelay()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    # --------------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(middlewares=[_cors])
        app.add_routes(
            [
                web.get("/agent", self._agent_ws),
                web.route("*", "/rtc", self._rtc),
                web.route("*", "/rtc/{tail:.*}", self._rtc),
                web.post(
                    "/twirp/livekit.AgentDispatchService/CreateDispatch",
                    self._twirp_create_dispatch,
                ),
                web.post(
                    "/twirp/livekit.AgentDispatchService/ListDispatch", self._twirp_list_dispatch
                ),
                web.post("/twirp/livekit.RoomService/ListRooms", self._twirp_list_rooms),
                web.post(
                    "/twirp/livekit.RoomService/ListParticipants", self._twirp_list_participants
                ),
                web.post("/_standin/dispatch", self._ctl_dispatch),
                web.post("/_standin/terminate", self._ctl_terminate),
                web.get("/_standin/state", self._ctl_state),
                web.route("*", "/{tail:.*}", self._not_found),
            ]
        )
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=3.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            server = site._server
            assert server is not None
            sockets = getattr(server, "sockets", None) or []
            self.port = int(sockets[0].getsockname()[1])
        log.info("stand-in listening on %s", self.url)

    async def stop(self) -> None:
        """Close every room and worker socket, then the HTTP server (does not hang)."""
        if self._runner is None:
            return
        self._stopping = True
        for room in list(self._rooms.values()):
            await self._close_room(room, Reason.SERVER_SHUTDOWN, grace=0.2)
        for worker in list(self._workers.values()):
            with contextlib.suppress(Exception):
                await worker.ws.close(code=WSCloseCode.GOING_AWAY, message=b"stand-in stopped")
        for fut in self._pending_answers.values():
            fut.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self._runner.cleanup()
        self._runner = None
        log.info("stand-in stopped")

    async def __aenter__(self) -> StandIn:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(
        self, predicate: Callable[[], _T | None], *, timeout: float, what: str
    ) -> _T:
        """Wait until ``predicate()`` returns something other than None/False; return it.
        Raises TimeoutError naming ``what``."""
        deadline = time.monotonic() + timeout
        while True:
            changed = self._changed
            value = predicate()
            if value is not None and value is not False:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"stand-in: timed out after {timeout:.1f}s waiting for {what}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, 0.5))

    # --------------------------------------------------------------------- assertions
    def worker_ids(self, agent_name: str | None = None) -> list[str]:
        return [
            w.worker_id
            for w in self._workers.values()
            if w.connected and (agent_name is None or w.agent_name == agent_name)
        ]

    def availability_answers(self, job_id: str | None = None) -> list[agent.AvailabilityResponse]:
        return [
            r.message.availability
            for r in self.worker_messages
            if r.kind == "availability"
            and (job_id is None or r.message.availability.job_id == job_id)
        ]

    def worker_statuses(self, worker_id: str | None = None) -> list[agent.UpdateWorkerStatus]:
        return [
            r.message.update_worker
            for r in self.worker_messages
            if r.kind == "update_worker" and (worker_id is None or r.worker_id == worker_id)
        ]

    def job_statuses(self, job_id: str) -> list[agent.UpdateJobStatus]:
        return [
            r.message.update_job
            for r in self.worker_messages
            if r.kind == "update_job" and r.message.update_job.job_id == job_id
        ]

    def events_of(self, kind: str, *, room: str | None = None) -> list[RoomEvent]:
        return [e for e in self.events if e.kind == kind and (room is None or e.room == room)]

    def participants(self, room_name: str) -> list[models.ParticipantInfo]:
        room = self._rooms.get(room_name)
        if room is None:
            return []
        return [p.info() for p in room.participants.values()]

    def room_is_open(self, room_name: str) -> bool:
        return room_name in self._rooms

    async def wait_for_worker(self, agent_name: str, *, timeout: float = 30.0) -> str:
        ids = await self.wait_until(
            lambda: self.worker_ids(agent_name) or None,
            timeout=timeout,
            what=f"a worker registered as {agent_name!r}",
        )
        return ids[-1]

    async def wait_for_job_status(
        self, job_id: str, status: agent.JobStatus, *, timeout: float = 30.0
    ) -> agent.UpdateJobStatus:
        name = agent.JobStatus.Name(status)
        return await self.wait_until(
            lambda: next((s for s in self.job_statuses(job_id) if s.status == status), None),
            timeout=timeout,
            what=f"update_job {name} for {job_id}",
        )

    async def wait_for_worker_status(
        self, status: agent.WorkerStatus, *, since: float = 0.0, timeout: float = 30.0
    ) -> agent.UpdateWorkerStatus:
        name = agent.WorkerStatus.Name(status)

        def found() -> agent.UpdateWorkerStatus | None:
            for r in self.worker_messages:
                if (
                    r.at >= since
                    and r.kind == "update_worker"
                    and r.message.update_worker.status == status
                ):
                    return r.message.update_worker
            return None

        return await self.wait_until(found, timeout=timeout, what=f"update_worker {name}")

    async def wait_for_termination(
        self, job_id: str, *, timeout: float = 30.0
    ) -> TerminationRecord:
        return await self.wait_until(
            lambda: next((t for t in self.terminations if t.job_id == job_id), None),
            timeout=timeout,
            what=f"JobTermination for {job_id}",
        )

    async def wait_for_event(
        self,
        kind: str,
        *,
        room: str | None = None,
        identity: str | None = None,
        timeout: float = 30.0,
    ) -> RoomEvent:
        def found() -> RoomEvent | None:
            for e in self.events_of(kind, room=room):
                if identity is None or e.identity == identity:
                    return e
            return None

        return await self.wait_until(found, timeout=timeout, what=f"room event {kind!r}")

    # --------------------------------------------------------------------- dispatch
    async def dispatch(
        self,
        room_name: str,
        metadata: str,
        agent_name: str,
        *,
        timeout: float = 30.0,
        dispatch_id: str | None = None,
        exclude: Collection[str] = (),
    ) -> str:
        """Dispatch a job for ``room_name`` to a connected worker registered as ``agent_name``
        (the newest, waiting up to ``timeout`` for one), creating the room if needed. Returns the
        job id once the JobAssignment is sent. Raises DispatchRefusedError on available=false.

        A worker whose socket drops before the assignment is sent is never chosen again: the
        same job is offered to another one (as LiveKit retries a job request). ``dispatch_id``
        adds the job to that existing dispatch (a re-dispatch; its room must still be open);
        ``exclude`` names workers not to ask."""
        deadline = time.monotonic() + timeout
        dispatch = self.dispatches.get(dispatch_id) if dispatch_id else None
        again = dispatch is not None
        if dispatch is None:
            dispatch = self._new_dispatch(self._room(room_name), agent_name, metadata, dispatch_id)
        skipped = set(exclude)
        room = self._open_room_of(dispatch) if again else self._room(room_name)
        job = self._job_proto(_new_id("AJ"), room, agent_name, metadata, dispatch.dispatch_id)
        record = JobRecord(
            job.id,
            room_name,
            agent_name,
            metadata,
            "",
            dispatch_id=dispatch.dispatch_id,
            room_sid=room.sid,
        )
        self.jobs[job.id] = record
        dispatch.job_ids.append(job.id)
        while True:
            worker_id = await self.wait_until(
                lambda: next(
                    (w for w in reversed(self.worker_ids(agent_name)) if w not in skipped), None
                ),
                timeout=max(deadline - time.monotonic(), 0.0),
                what=f"a connected worker registered as {agent_name!r}",
            )
            worker = self._workers[worker_id]
            if again:
                self._open_room_of(dispatch)
            record.worker_id = worker.worker_id
            try:
                answer = await self._ask(worker, job, max(deadline - time.monotonic(), 0.1))
            except _WorkerLostError:
                log.info("job %s: worker %s lost before answering", job.id, worker.worker_id)
                skipped.add(worker.worker_id)
                continue
            if not answer.available:
                record.status = agent.JobStatus.JS_FAILED
                record.error = "refused"
                record.ended_at = record.updated_at = _now_ns()
                raise DispatchRefusedError(job.id, answer)
            identity = answer.participant_identity or f"agent-{job.id}"
            token = (
                api.AccessToken(self.api_key, self.api_secret)
                .with_identity(identity)
                .with_name(answer.participant_name or identity)
                .with_metadata(answer.participant_metadata)
                .with_kind("agent")
                .with_attributes(dict(answer.participant_attributes))
                .with_grants(
                    api.VideoGrants(
                        room_join=True,
                        room=room_name,
                        agent=True,
                        can_update_own_metadata=True,
                    )
                )
                .to_jwt()
            )
            try:
                await worker.send(
                    agent.ServerMessage(
                        assignment=agent.JobAssignment(job=job, url=self.url, token=token)
                    )
                )
            except (ConnectionError, RuntimeError):
                log.info("job %s: worker %s lost before its assignment", job.id, worker.worker_id)
                skipped.add(worker.worker_id)
                continue
            break
        record.participant_identity = identity
        record.token = token
        record.assigned = True
        record.updated_at = _now_ns()
        log.info(
            "assigned job %s (room %s) to %s as %s", job.id, room_name, worker.worker_id, identity
        )
        self._notify()
        return job.id

    def _new_dispatch(
        self, room: _Room, agent_name: str, metadata: str, dispatch_id: str | None = None
    ) -> DispatchRecord:
        dispatch = DispatchRecord(
            dispatch_id or _new_id("AD"), room.name, room.sid, agent_name, metadata
        )
        self.dispatches[dispatch.dispatch_id] = dispatch
        return dispatch

    def _open_room_of(self, dispatch: DispatchRecord) -> _Room:
        """The dispatch's room, still open (a re-dispatch never re-creates a closed room)."""
        room = self._rooms.get(dispatch.room_name)
        if room is None or room.closed or room.sid != dispatch.room_sid:
            raise RoomClosedError(f"room {dispatch.room_name} of {dispatch.dispatch_id} closed")
        return room

    async def request_availability(
        self,
        room_name: str,
        *,
        metadata: str = "",
        agent_name: str,
        timeout: float = 10.0,
    ) -> agent.AvailabilityResponse:
        """Send one AvailabilityRequest and return the worker's answer without assigning the
        job (a worker that accepts will log an assignment timeout after 7.5 s)."""
        worker = self._workers[await self.wait_for_worker(agent_name, timeout=timeout)]
        room = self._rooms.get(room_name) or _Room(name=room_name, sid=_new_id("RM"))
        job = self._job_proto(_new_id("AJ"), room, agent_name, metadata, _new_id("AD"))
        return await self._ask(worker, job, timeout)

    async def terminate(self, job_id: str) -> None:
        """Send JobTermination for ``job_id`` (e.g. while its room is live)."""
        job = self.jobs[job_id]
        await self._send_termination(job, "requested")

    async def close_room(self, room_name: str, reason: Reason = Reason.ROOM_DELETED) -> None:
        """Close a room now, as RoomService.DeleteRoom would (leave with ``reason``)."""
        room = self._rooms.get(room_name)
        if room is not None:
            await self._close_room(room, reason)

    async def remove_participant(self, room_name: str, identity: str) -> None:
        """Disconnect one participant (leave with PARTICIPANT_REMOVED)."""
        room = self._rooms.get(room_name)
        p = room.participants.get(identity) if room else None
        if p is not None:
            await self._kick(p, Reason.PARTICIPANT_REMOVED)

    def _job_proto(
        self, job_id: str, room: _Room, agent_name: str, metadata: str, dispatch_id: str
    ) -> agent.Job:
        return agent.Job(
            id=job_id,
            dispatch_id=dispatch_id,
            type=agent.JobType.JT_ROOM,
            room=room.proto(),
            agent_name=agent_name,
            metadata=metadata,
        )

    async def _ask(
        self, worker: _Worker, job: agent.Job, timeout: float
    ) -> agent.AvailabilityResponse:
        """Send the AvailabilityRequest and await the answer; _WorkerLostError if the worker's
        socket drops first."""
        if not worker.connected:
            raise _WorkerLostError(worker.worker_id)
        fut: asyncio.Future[agent.AvailabilityResponse] = asyncio.get_running_loop().create_future()
        self._pending_answers[job.id] = fut
        self._asked[job.id] = worker.worker_id
        try:
            try:
                await worker.send(
                    agent.ServerMessage(availability=agent.AvailabilityRequest(job=job))
                )
            except (ConnectionError, RuntimeError) as error:
                raise _WorkerLostError(worker.worker_id) from error
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending_answers.pop(job.id, None)
            self._asked.pop(job.id, None)

    async def _send_termination(self, job: JobRecord, reason: str) -> None:
        worker = self._workers.get(job.worker_id)
        job.terminated = True
        self.terminations.append(TerminationRecord(time.monotonic(), job.job_id, reason))
        self._notify()
        if worker is None or worker.ws.closed:
            log.info("job %s: worker gone, JobTermination (%s) not sent", job.job_id, reason)
            return
        log.info("job %s: sending JobTermination (%s)", job.job_id, reason)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await worker.send(
                agent.ServerMessage(termination=agent.JobTermination(job_id=job.job_id))
            )

    # --------------------------------------------------------------------- /agent
    def _verify(self, token: str) -> Claims | None:
        try:
            return self._verifier.verify(token)
        except Exception as error:
            self.auth_failures += 1
            log.warning("rejected token: %s", error)
            return None

    async def _agent_ws(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        claims = self._verify(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
        if claims is None or claims.video is None or not claims.video.agent:
            if claims is not None:
                self.auth_failures += 1
            return web.Response(status=401, text="invalid worker token")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        worker = _Worker(_new_id("AW"), ws)
        self._workers[worker.worker_id] = worker
        log.info("worker connection %s", worker.worker_id)
        try:
            async for frame in ws:
                if frame.type != WSMsgType.BINARY:
                    continue
                msg = agent.WorkerMessage()
                msg.ParseFromString(frame.data)
                await self._on_worker_message(worker, msg)
        finally:
            log.info("worker %s disconnected", worker.worker_id)
            self._on_worker_lost(worker)
        return ws

    def _on_worker_lost(self, worker: _Worker) -> None:
        """A worker's /agent socket dropped (or closed): it is never chosen again, a job it was
        asked for goes to another worker, and its live jobs are lost (JS_FAILED, as far as the
        stand-in knows) and, with ``redispatch_lost_jobs``, sent again."""
        worker.gone = True
        for job_id, worker_id in list(self._asked.items()):
            fut = self._pending_answers.get(job_id)
            if worker_id == worker.worker_id and fut is not None and not fut.done():
                fut.set_exception(_WorkerLostError(worker.worker_id))
        lost_at = time.monotonic()
        for job in list(self.jobs.values()):
            if job.worker_id != worker.worker_id or not job.assigned or job.ended or self._stopping:
                continue
            job.lost = True
            job.status = agent.JobStatus.JS_FAILED
            job.error = "worker disconnected"
            job.ended_at = job.updated_at = _now_ns()
            # a job the test terminated, or whose agent hung up itself, was ending anyway
            ending = job.terminated and job.left_reason in ("", "CLIENT_INITIATED")
            room = self._rooms.get(job.room_name)
            room_open = room is not None and not room.closed and room.sid == job.room_sid
            if self.redispatch_lost_jobs and not ending and room_open:
                self._spawn(self._redispatch(job, lost_at))
        self._notify()

    async def _redispatch(self, old: JobRecord, lost_at: float) -> None:
        dispatch = self.dispatches.get(old.dispatch_id)
        new_job_id, error = "", ""
        try:
            if dispatch is None:
                raise RoomClosedError(f"job {old.job_id} has no dispatch")
            self._open_room_of(dispatch)
            log.info("job %s lost with worker %s: re-dispatching", old.job_id, old.worker_id)
            new_job_id = await self.dispatch(
                dispatch.room_name,
                dispatch.metadata,
                dispatch.agent_name,
                timeout=self.redispatch_wait,
                dispatch_id=dispatch.dispatch_id,
                exclude={old.worker_id},
            )
        except (DispatchRefusedError, TimeoutError, RoomClosedError) as failure:
            error = repr(failure)
            log.warning("job %s: re-dispatch given up: %s", old.job_id, error)
        new = self.jobs.get(new_job_id)
        self.redispatches.append(
            RedispatchRecord(
                lost_at=lost_at,
                at=time.monotonic(),
                dispatch_id=old.dispatch_id,
                room_name=old.room_name,
                old_job_id=old.job_id,
                old_worker_id=old.worker_id,
                new_job_id=new_job_id,
                new_worker_id=new.worker_id if new is not None else "",
                error=error,
            )
        )
        self._notify()

    async def _on_worker_message(self, worker: _Worker, msg: agent.WorkerMessage) -> None:
        record = WorkerRecord(time.monotonic(), worker.worker_id, msg)
        self.worker_messages.append(record)
        which = record.kind
        if which == "register":
            worker.agent_name = msg.register.agent_name
            await worker.send(
                agent.ServerMessage(
                    register=agent.RegisterWorkerResponse(
                        worker_id=worker.worker_id,
                        server_info=models.ServerInfo(
                            version=SERVER_VERSION,
                            protocol=PROTOCOL_VERSION,
                            region="loopback",
                            node_id="standin",
                        ),
                    )
                )
            )
            worker.registered = True
            log.info("worker %s registered as %r", worker.worker_id, worker.agent_name)
        elif which == "availability":
            answer = msg.availability
            log.info("job %s: worker answered available=%s", answer.job_id, answer.available)
            fut = self._pending_answers.get(answer.job_id)
            if fut is not None and not fut.done():
                fut.set_result(answer)
        elif which == "update_job":
            update = msg.update_job
            log.info(
                "job %s: %s %s", update.job_id, agent.JobStatus.Name(update.status), update.error
            )
            job = self.jobs.get(update.job_id)
            if job is not None and job.worker_id == worker.worker_id and not job.lost:
                job.status = update.status
                job.error = update.error
                job.updated_at = _now_ns()
                if job.ended:
                    job.ended_at = job.updated_at
        elif which == "ping":
            await worker.send(
                agent.ServerMessage(
                    pong=agent.WorkerPong(
                        last_timestamp=msg.ping.timestamp, timestamp=int(time.time() * 1000)
                    )
                )
            )
        self._notify()

    # --------------------------------------------------------------------- rooms
    def _room(self, name: str) -> _Room:
        room = self._rooms.get(name)
        if room is None:
            room = _Room(name=name, sid=_new_id("RM"))
            self._rooms[name] = room
            self._event(room, "room_created")
        return room

    def _event(self, room: _Room, what: str, identity: str = "", **detail: str) -> None:
        self.events.append(RoomEvent(time.monotonic(), room.name, what, identity, dict(detail)))
        self._notify()

    def _schedule_close_check(self, room: _Room) -> None:
        """Close the room after departure_timeout if by then only agents (or nobody) remain."""
        if room.close_timer is not None:
            room.close_timer.cancel()
            room.close_timer = None
        if room.closed or any(not p.is_agent for p in room.participants.values()):
            return

        def fire() -> None:
            room.close_timer = None
            if not room.closed and all(p.is_agent for p in room.participants.values()):
                self._spawn(self._close_room(room, Reason.ROOM_CLOSED))

        room.close_timer = asyncio.get_running_loop().call_later(self.departure_timeout, fire)

    async def _close_room(self, room: _Room, reason: Reason, *, grace: float = LEAVE_GRACE) -> None:
        if room.closed:
            return
        room.closed = True
        if room.close_timer is not None:
            room.close_timer.cancel()
        if self._rooms.get(room.name) is room:
            del self._rooms[room.name]
        log.info("room %s closing (%s)", room.name, Reason.Name(reason))
        await asyncio.gather(
            *(self._kick(p, reason, grace=grace) for p in list(room.participants.values()))
        )
        self._event(room, "room_closed", reason=Reason.Name(reason))

    async def _kick(self, p: _Participant, reason: Reason, *, grace: float = LEAVE_GRACE) -> None:
        """Send a leave with ``reason`` (action DISCONNECT), give the client ``grace`` seconds to
        close, then close its signal socket (a bare close would look like a network failure)."""
        if p.server_reason is not None:
            return
        p.server_reason = reason
        await p.send(
            rtcpb.SignalResponse(
                leave=rtcpb.LeaveRequest(
                    can_reconnect=False, reason=reason, action=rtcpb.LeaveRequest.Action.DISCONNECT
                )
            )
        )
        self._event(p.room, "leave_sent", p.identity, reason=Reason.Name(reason))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(p.signal_done.wait(), grace)
        with contextlib.suppress(Exception):
            await p.ws.close(code=WSCloseCode.GOING_AWAY)
        await self._remove(p)

    async def _remove(self, p: _Participant) -> None:
        if p.removed:
            return
        p.removed = True
        room = p.room
        if p.server_reason is not None:
            reason = p.server_reason
        elif p.client_left:
            reason = Reason.CLIENT_INITIATED
        else:
            reason = Reason.SIGNAL_CLOSE
        if room.participants.get(p.identity) is p:
            del room.participants[p.identity]
        log.info("%s left %s (%s)", p.identity, room.name, Reason.Name(reason))
        self._event(room, "left", p.identity, reason=Reason.Name(reason))
        gone = p.info(state=models.ParticipantInfo.State.DISCONNECTED)
        gone.disconnect_reason = reason
        for other in list(room.participants.values()):
            await other.send(
                rtcpb.SignalResponse(update=rtcpb.ParticipantUpdate(participants=[gone]))
            )
        for task in list(p.tasks):
            task.cancel()
        for pc in (p.pub_pc, p.sub_pc):
            with contextlib.suppress(Exception):
                await pc.close()
        if p.is_agent:
            for job in self.jobs.values():
                if job.participant_identity == p.identity and job.room_name == room.name:
                    job.left_reason = job.left_reason or Reason.Name(reason)
                if (
                    job.participant_identity == p.identity
                    and job.room_name == room.name
                    and not job.terminated
                    and not self._stopping
                ):
                    await self._send_termination(job, "agent_left_room")
        if not room.closed:
            self._schedule_close_check(room)

    # --------------------------------------------------------------------- /rtc
    async def _rtc(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/rtc/v1" or request.headers.get("Upgrade", "").lower() != "websocket":
            # v1 (single PC) is not emulated: the 404 makes the SDK fall back to /rtc (dual PC).
            # /rtc/validate is only asked after a failed connect: say why it failed.
            if request.path == "/rtc/validate":
                token = request.query.get("access_token", "")
                ok = self._verify(token) is not None
                return web.Response(status=200 if ok else 401, text="ok" if ok else "invalid token")
            return web.Response(status=404, text="not emulated by the stand-in")
        token = request.query.get("access_token") or request.headers.get(
            "Authorization", ""
        ).removeprefix("Bearer ")
        claims = self._verify(token)
        video = claims.video if claims else None
        if claims is None or video is None or not video.room_join or not video.room:
            return web.Response(status=401, text="invalid room token")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        room = self._room(video.room)
        is_agent = claims.kind == "agent" or bool(video.agent)
        # what the client announced (livekit-client 2.23: protocol=17, sdk=js); recorded only,
        # the stand-in speaks the same to every version
        announced = {key: request.query.get(key, "") for key in ("protocol", "sdk", "version")}
        p = _Participant(
            room=room,
            identity=claims.identity,
            name=claims.name or claims.identity,
            sid=_new_id("PA"),
            kind=Kind.AGENT if is_agent else Kind.STANDARD,
            ws=ws,
            pub_pc=RTCPeerConnection(RTCConfiguration(iceServers=[])),
            sub_pc=RTCPeerConnection(RTCConfiguration(iceServers=[])),
            permission=models.ParticipantPermission(
                can_publish=video.can_publish,
                can_subscribe=video.can_subscribe,
                can_publish_data=video.can_publish_data,
                can_update_metadata=bool(video.can_update_own_metadata) or is_agent,
                hidden=bool(video.hidden),
                agent=is_agent,
            ),
            attributes=dict(claims.attributes or {}),
            metadata=claims.metadata,
        )
        try:
            await self._join(p, announced)
            await self._signal_loop(p)
            if p.client_left and p.pub_pc.sctp is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(p.data_closed.wait(), CLIENT_LEAVE_DATA_TIMEOUT)
        finally:
            p.signal_done.set()
            await self._remove(p)
        return ws

    async def _join(self, p: _Participant, announced: dict[str, str] | None = None) -> None:
        room = p.room
        old = room.participants.get(p.identity)
        if old is not None:
            await self._kick(old, Reason.DUPLICATE_IDENTITY, grace=0.2)
        others = list(room.participants.values())
        room.participants[p.identity] = p
        if room.close_timer is not None and not p.is_agent:
            room.close_timer.cancel()
            room.close_timer = None
        await p.send(
            rtcpb.SignalResponse(
                join=rtcpb.JoinResponse(
                    room=room.proto(),
                    participant=p.info(),
                    other_participants=[o.info() for o in others],
                    server_version=SERVER_VERSION,
                    server_region="loopback",
                    server_info=models.ServerInfo(
                        version=SERVER_VERSION,
                        protocol=PROTOCOL_VERSION,
                        region="loopback",
                        node_id="standin",
                    ),
                    subscriber_primary=False,
                    # as LiveKit sets it (room.go: CanPublish() && !hasICEFallback). Without it
                    # the Rust SDK negotiates through a debouncer that can drop a track's offer:
                    # the agent's audio then never reached the room (3 of 21 browser runs here)
                    fast_publish=p.permission.can_publish,
                    ping_timeout=15,
                    ping_interval=5,
                )
            )
        )
        log.info("%s joined %s as %s (%s)", p.identity, room.name, p.sid, Kind.Name(p.kind))
        self._event(
            room, "joined", p.identity, kind=Kind.Name(p.kind), sid=p.sid, **(announced or {})
        )
        for other in others:
            await other.send(
                rtcpb.SignalResponse(update=rtcpb.ParticipantUpdate(participants=[p.info()]))
            )

        p.pub_pc.on("track", lambda track: self._on_media(p, track))
        p.pub_pc.on("datachannel", lambda channel: self._on_channel(p, channel))
        # the subscriber PC carries data channels from the start, so data reaches a participant
        # before (or without) any subscribed track; media is added by renegotiation
        for label, ordered in (("_reliable", True), ("_lossy", False)):
            channel = p.sub_pc.createDataChannel(
                label, ordered=ordered, maxRetransmits=None if ordered else 0
            )
            p.pending[label] = []
            channel.on("open", lambda label=label: self._flush(p, label))
            p.sub_channels[label] = channel
        p.spawn(self._subscribe(p))
        for other in others:
            for track in other.tracks:
                p.spawn(self._subscribe(p, other, track))

    async def _signal_loop(self, p: _Participant) -> None:
        async for frame in p.ws:
            if frame.type != WSMsgType.BINARY:
                continue
            req = rtcpb.SignalRequest()
            req.ParseFromString(frame.data)
            which = req.WhichOneof("message")
            if which == "ping_req":
                await p.send(
                    rtcpb.SignalResponse(
                        pong_resp=rtcpb.Pong(
                            last_ping_timestamp=req.ping_req.timestamp,
                            timestamp=int(time.time() * 1000),
                        )
                    )
                )
            elif which == "ping":
                await p.send(rtcpb.SignalResponse(pong=int(time.time() * 1000)))
            elif which == "trickle":
                publisher = req.trickle.target == rtcpb.SignalTarget.PUBLISHER
                pc = p.pub_pc if publisher else p.sub_pc
                waiting = p.pending_candidates["pub" if publisher else "sub"]
                if pc.remoteDescription is None:
                    waiting.append(req.trickle.candidateInit)  # added once the SDP is set
                else:
                    await self._add_candidate(pc, req.trickle.candidateInit)
            elif which == "offer":
                await self._answer_publisher(p, req.offer)
                await self._flush_candidates(p.pub_pc, p.pending_candidates["pub"])
            elif which == "answer":
                await p.sub_pc.setRemoteDescription(
                    RTCSessionDescription(sdp=req.answer.sdp, type="answer")
                )
                await self._flush_candidates(p.sub_pc, p.pending_candidates["sub"])
                p.sub_answered.set()
            elif which == "add_track":
                await self._add_track(p, req.add_track)
            elif which == "update_metadata":
                await self._update_metadata(p, req.update_metadata)
            elif which == "mute":
                for t in p.tracks:
                    if t.info.sid == req.mute.sid:
                        t.info.muted = req.mute.muted
                await self._broadcast(p)
            elif which == "leave":
                p.client_left = True
                log.info("%s sent leave", p.identity)
                break
            else:
                log.debug("%s: signal %s ignored", p.identity, which)

    async def _broadcast(self, about: _Participant, *, include_self: bool = False) -> None:
        info = about.info()
        for other in list(about.room.participants.values()):
            if other is not about or include_self:
                await other.send(
                    rtcpb.SignalResponse(update=rtcpb.ParticipantUpdate(participants=[info]))
                )

    async def _flush_candidates(self, pc: Any, waiting: list[str]) -> None:
        pending = list(waiting)
        waiting.clear()
        for candidate_init in pending:
            await self._add_candidate(pc, candidate_init)

    async def _add_candidate(self, pc: Any, candidate_init: str) -> None:
        init = json.loads(candidate_init or "{}")
        sdp_line = str(init.get("candidate", ""))
        if not sdp_line:
            return
        candidate = candidate_from_sdp(sdp_line.split(":", 1)[1])
        candidate.sdpMid = init.get("sdpMid")
        candidate.sdpMLineIndex = init.get("sdpMLineIndex")
        await pc.addIceCandidate(candidate)

    async def _answer_publisher(self, p: _Participant, offer: rtcpb.SessionDescription) -> None:
        await p.pub_pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        await p.pub_pc.setLocalDescription(await p.pub_pc.createAnswer())
        sdp = p.pub_pc.localDescription.sdp
        audio = [t for t in p.tracks if t.info.type == models.TrackType.AUDIO]
        if self.negotiate_dtx and audio and not any(t.disable_dtx for t in audio):
            sdp = with_opus_dtx(sdp)
        await p.send(
            rtcpb.SignalResponse(
                answer=rtcpb.SessionDescription(type="answer", sdp=sdp, id=offer.id)
            )
        )

    async def _add_track(self, p: _Participant, req: rtcpb.AddTrackRequest) -> None:
        info = models.TrackInfo(
            sid=_new_id("TR"),
            type=req.type,
            name=req.name,
            source=req.source,
            muted=req.muted,
            mime_type="audio/opus" if req.type == models.TrackType.AUDIO else "",
            stream=req.stream,
        )
        p.tracks.append(_Track(info=info, cid=req.cid, disable_dtx=req.disable_dtx))
        await p.send(
            rtcpb.SignalResponse(
                track_published=rtcpb.TrackPublishedResponse(cid=req.cid, track=info)
            )
        )
        self._event(p.room, "track_published", p.identity, track=info.sid, name=info.name)
        await self._broadcast(p)

    async def _update_metadata(self, p: _Participant, req: rtcpb.UpdateParticipantMetadata) -> None:
        for key, value in req.attributes.items():
            if value:
                p.attributes[key] = value
            else:
                p.attributes.pop(key, None)
        if req.metadata:
            p.metadata = req.metadata
        if req.name:
            p.name = req.name
        await self._broadcast(p, include_self=True)
        if req.request_id:
            await p.send(
                rtcpb.SignalResponse(
                    request_response=rtcpb.RequestResponse(
                        request_id=req.request_id, reason=rtcpb.RequestResponse.Reason.OK
                    )
                )
            )

    # --------------------------------------------------------------------- media
    def _on_media(self, p: _Participant, remote: Any) -> None:
        if remote.kind != "audio":
            log.info("%s: %s track ignored (audio only)", p.identity, remote.kind)
            return
        waiting = [t for t in p.tracks if t.remote is None]
        track = next((t for t in waiting if t.cid == remote.id), None)
        track = track or next((t for t in waiting if t.info.type == models.TrackType.AUDIO), None)
        if track is None:
            log.warning("%s: media track %s matches no AddTrack", p.identity, remote.id)
            return
        track.remote = remote
        if self.forward_rtp:
            track.tap = self._tap(p, remote)
        # forward live only: drain the source from the start, so that a late subscriber gets
        # what is said from then on, not every frame queued since the track was published
        p.spawn(_drain(self._relay.subscribe(remote, buffered=False)))
        for other in list(p.room.participants.values()):
            if other is not p:
                other.spawn(self._subscribe(other, p, track))

    def _tap(self, p: _Participant, remote: Any) -> _RtpTap | None:
        """Wrap the receiver of ``remote`` so that each RTP packet is also handed, as it
        arrives, to the track's forwarded copies (aiortc has no public hook for it)."""
        receiver = next((r for r in p.pub_pc.getReceivers() if r.track is remote), None)
        if receiver is None:
            log.warning("%s: no receiver for track %s, not forwarded", p.identity, remote.id)
            return None
        offer = p.pub_pc.remoteDescription.sdp if p.pub_pc.remoteDescription else ""
        tap = _RtpTap({int(pt) for pt in _OPUS_RTPMAP.findall(offer)})
        handle = receiver._handle_rtp_packet

        async def tapped(packet: Any, arrival_time_ms: int) -> None:
            tap.feed(packet)
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = tapped
        return tap

    async def _subscribe(
        self, sub: _Participant, pub: _Participant | None = None, track: _Track | None = None
    ) -> None:
        """(Re)negotiate ``sub``'s subscriber PC, adding ``pub``'s ``track`` if given."""
        async with sub.sub_lock:
            if sub.removed:
                return
            if pub is not None and track is not None:
                if track.info.sid in sub.subscribed or track.remote is None:
                    return
                # aiortc starts a sender only from the connect task of an answer that finds the
                # DTLS transport already connected: a track added while the first negotiation
                # (data channels) is still connecting would never be sent, and its subscriber
                # would hear silence for the whole call. So add tracks to connected PCs only.
                if not await _wait_connected(sub.sub_pc, SUBSCRIBER_CONNECT_TIMEOUT):
                    log.warning("%s: subscriber PC never connected", sub.identity)
                    return
                sub.subscribed.add(track.info.sid)
                # A new transceiver each time: addTrack would reuse the transceiver of a
                # publisher that left (a killed agent), whose m-line the client already tied
                # to the old track, and the caller would hear silence from the new agent.
                copy = (
                    _ForwardedAudio(track.tap)
                    if track.tap is not None
                    else self._relay.subscribe(track.remote)
                )
                sender = sub.sub_pc.addTransceiver(copy, direction="sendonly").sender
                sender._stream_id = f"{pub.sid}|{track.info.sid}"  # LiveKit: "PA_sid|TR_sid"
                sender._track_id = track.info.sid
            await sub.sub_pc.setLocalDescription(await sub.sub_pc.createOffer())
            sub.sub_offer_id += 1
            sub.sub_answered.clear()
            await sub.send(
                rtcpb.SignalResponse(
                    offer=rtcpb.SessionDescription(
                        type="offer", sdp=sub.sub_pc.localDescription.sdp, id=sub.sub_offer_id
                    )
                )
            )
            try:
                await asyncio.wait_for(sub.sub_answered.wait(), SUBSCRIBER_ANSWER_TIMEOUT)
            except TimeoutError:
                log.warning("%s never answered the subscriber offer", sub.identity)
                return
        if pub is not None and track is not None:
            self._event(sub.room, "track_subscribed", sub.identity, track=track.info.sid)
            if not track.subscribed_sent:
                # the agents' audio output awaits it (LocalTrackPublication.wait_for_subscription)
                track.subscribed_sent = True
                await pub.send(
                    rtcpb.SignalResponse(
                        track_subscribed=rtcpb.TrackSubscribed(track_sid=track.info.sid)
                    )
                )

    # --------------------------------------------------------------------- data
    def _on_channel(self, p: _Participant, channel: Any) -> None:
        label = str(channel.label)
        channel.on("message", lambda message: self._on_data(p, label, message))
        channel.on("close", p.data_closed.set)

    def _on_data(self, sender: _Participant, label: str, message: object) -> None:
        if not isinstance(message, bytes) or label not in ("_reliable", "_lossy"):
            return
        packet = models.DataPacket()
        try:
            packet.ParseFromString(message)
        except Exception:
            log.warning("%s sent an undecodable data packet", sender.identity)
            return
        which = packet.WhichOneof("value") or ""
        # the kind is the channel's, whatever the sender wrote (as LiveKit does)
        packet.kind = (
            models.DataPacket.RELIABLE if label == "_reliable" else models.DataPacket.LOSSY
        )
        packet.participant_identity = sender.identity
        packet.participant_sid = sender.sid
        destinations = set(packet.destination_identities)
        topic = ""
        if which == "user":
            packet.user.participant_identity = sender.identity
            packet.user.participant_sid = sender.sid
            destinations |= set(packet.user.destination_identities)
            topic = packet.user.topic
        elif which == "stream_header":
            topic = packet.stream_header.topic
        data = packet.SerializeToString()
        receivers = [
            p
            for p in sender.room.participants.values()
            if p is not sender and (not destinations or p.identity in destinations)
        ]
        for receiver in receivers:
            self._send_data(receiver, label, data)
        self._event(
            sender.room,
            "data",
            sender.identity,
            which=which,
            topic=topic,
            to=",".join(r.identity for r in receivers),
        )

    def _send_data(self, receiver: _Participant, label: str, data: bytes) -> None:
        channel = receiver.sub_channels.get(label)
        if channel is not None and channel.readyState == "open":
            channel.send(data)
            return
        pending = receiver.pending.setdefault(label, [])
        if len(pending) < MAX_PENDING_PACKETS:
            pending.append(data)

    def _flush(self, p: _Participant, label: str) -> None:
        channel = p.sub_channels[label]
        pending, p.pending[label] = p.pending.get(label, []), []
        for data in pending:
            channel.send(data)

    # --------------------------------------------------------------------- twirp
    # Twirp over HTTP as livekit-api's TwirpClient speaks it: POST, a protobuf body
    # (``application/protobuf``; JSON is accepted too and answered in kind), a Bearer JWT signed
    # with the API secret whose video grants allow the call, errors as JSON ``{code, msg}``.
    async def _twirp_call(
        self,
        request: web.Request,
        req: _Msg,
        handle: Callable[[_Msg], Coroutine[Any, Any, Message | web.Response]],
        *,
        grant: Literal["room_list", "room_admin"],
        room_of: Callable[[_Msg], str] = lambda _req: "",
    ) -> web.Response:
        body = await request.read()
        as_json = request.content_type == "application/json"
        try:
            if as_json:
                json_format.Parse(body.decode("utf-8") or "{}", req)
            else:
                req.ParseFromString(body)
        except Exception:
            return _twirp_error(400, "malformed", "undecodable request")
        auth = request.headers.get("Authorization", "")
        claims = self._verify(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
        if claims is None:
            if not auth.startswith("Bearer "):
                self.auth_failures += 1
            return _twirp_error(401, "unauthenticated", "invalid or missing API token")
        video = claims.video
        if grant == "room_list":
            allowed = video is not None and bool(video.room_list)
        else:
            # LiveKit checks roomAdmin for the very room named in the request
            allowed = (
                video is not None and bool(video.room_admin) and video.room in ("", room_of(req))
            )
        if not allowed:
            self.auth_failures += 1
            return _twirp_error(401, "unauthenticated", f"permissions denied: {grant} needed")
        answer = await handle(req)
        if isinstance(answer, web.Response):
            return answer
        if as_json:
            return web.json_response(json_format.MessageToDict(answer))
        return web.Response(body=answer.SerializeToString(), content_type="application/protobuf")

    async def _twirp_create_dispatch(self, request: web.Request) -> web.Response:
        """AgentDispatchService.CreateDispatch, as a platform's server (or the playground) calls
        it: answers at once, as LiveKit does; the job is dispatched in the background and
        recorded under the returned dispatch id (``self.dispatches``, ``self.jobs``)."""

        async def handle(req: agent_dispatch.CreateAgentDispatchRequest) -> Message | web.Response:
            if not req.room or not req.agent_name:
                return _twirp_error(400, "invalid_argument", "room and agent_name are required")
            dispatch = self._new_dispatch(self._room(req.room), req.agent_name, req.metadata)
            self._spawn(
                self._dispatch_in_background(
                    req.room, req.metadata, req.agent_name, dispatch.dispatch_id
                )
            )
            return self._dispatch_proto(dispatch)

        return await self._twirp_call(
            request,
            agent_dispatch.CreateAgentDispatchRequest(),
            handle,
            grant="room_admin",
            room_of=lambda req: req.room,
        )

    async def _twirp_list_dispatch(self, request: web.Request) -> web.Response:
        """AgentDispatchService.ListDispatch: the open room's dispatches (or the one asked for),
        each with its jobs and their state."""

        async def handle(req: agent_dispatch.ListAgentDispatchRequest) -> Message | web.Response:
            room = self._rooms.get(req.room)
            if room is None:
                return _twirp_error(404, "not_found", "requested room does not exist")
            return agent_dispatch.ListAgentDispatchResponse(
                agent_dispatches=[
                    self._dispatch_proto(d)
                    for d in self.dispatches.values()
                    if d.room_sid == room.sid
                    and (not req.dispatch_id or d.dispatch_id == req.dispatch_id)
                ]
            )

        return await self._twirp_call(
            request,
            agent_dispatch.ListAgentDispatchRequest(),
            handle,
            grant="room_admin",
            room_of=lambda req: req.room,
        )

    async def _twirp_list_rooms(self, request: web.Request) -> web.Response:
        """RoomService.ListRooms: the open rooms (only those named, if any are)."""

        async def handle(req: room_pb.ListRoomsRequest) -> Message | web.Response:
            names = set(req.names)
            return room_pb.ListRoomsResponse(
                rooms=[
                    room.proto()
                    for room in self._rooms.values()
                    if not room.closed and (not names or room.name in names)
                ]
            )

        return await self._twirp_call(
            request, room_pb.ListRoomsRequest(), handle, grant="room_list"
        )

    async def _twirp_list_participants(self, request: web.Request) -> web.Response:
        """RoomService.ListParticipants: kind AGENT for agents, STANDARD for callers, with the
        attributes they joined with or set (an agent's ``lk.agent.name``, ``lk.agent.state``)."""

        async def handle(req: room_pb.ListParticipantsRequest) -> Message | web.Response:
            room = self._rooms.get(req.room)
            if room is None:
                return _twirp_error(404, "not_found", "requested room does not exist")
            return room_pb.ListParticipantsResponse(
                participants=[p.info() for p in room.participants.values()]
            )

        return await self._twirp_call(
            request,
            room_pb.ListParticipantsRequest(),
            handle,
            grant="room_admin",
            room_of=lambda req: req.room,
        )

    def _dispatch_proto(self, dispatch: DispatchRecord) -> agent_dispatch.AgentDispatch:
        jobs = [self.jobs[job_id] for job_id in dispatch.job_ids if job_id in self.jobs]
        return agent_dispatch.AgentDispatch(
            id=dispatch.dispatch_id,
            agent_name=dispatch.agent_name,
            room=dispatch.room_name,
            metadata=dispatch.metadata,
            state=agent_dispatch.AgentDispatchState(
                created_at=dispatch.created_at,
                jobs=[
                    agent.Job(
                        id=job.job_id,
                        dispatch_id=job.dispatch_id,
                        type=agent.JobType.JT_ROOM,
                        room=models.Room(sid=job.room_sid, name=job.room_name),
                        agent_name=job.agent_name,
                        metadata=job.metadata,
                        state=job.state(),
                    )
                    for job in jobs
                ],
            ),
        )

    async def _dispatch_in_background(
        self, room: str, metadata: str, agent_name: str, dispatch_id: str
    ) -> None:
        try:
            await self.dispatch(room, metadata, agent_name, dispatch_id=dispatch_id)
        except (DispatchRefusedError, TimeoutError, RoomClosedError) as error:
            log.warning("dispatch to %s in %s failed: %r", agent_name, room, error)

    # --------------------------------------------------------------------- control API
    async def _ctl_dispatch(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            job_id = await self.dispatch(
                str(body["room"]), str(body.get("metadata", "")), str(body.get("agentName", ""))
            )
        except DispatchRefusedError as error:
            return web.json_response({"jobId": error.job_id, "refused": True}, status=409)
        except TimeoutError as error:
            return web.json_response({"error": str(error)}, status=504)
        return web.json_response({"jobId": job_id})

    async def _ctl_terminate(self, request: web.Request) -> web.Response:
        body = await request.json()
        await self.terminate(str(body["jobId"]))
        return web.json_response({})

    async def _ctl_state(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "workers": [
                    {"id": w.worker_id, "agentName": w.agent_name, "connected": w.connected}
                    for w in self._workers.values()
                ],
                "rooms": {
                    name: [p.identity for p in room.participants.values()]
                    for name, room in self._rooms.items()
                },
                "jobs": [vars(j) for j in self.jobs.values()],
                "redispatches": [vars(r) for r in self.redispatches],
                "terminations": [vars(t) for t in self.terminations],
            }
        )

    async def _not_found(self, request: web.Request) -> web.Response:
        log.info("unhandled %s %s", request.method, request.path)
        return web.Response(status=404, text="not emulated by the stand-in")


async def _serve(port: int, host: str, departure_timeout: float) -> None:
    standin = StandIn(host=host, port=port, departure_timeout=departure_timeout)
    await standin.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await standin.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Loopback LiveKit stand-in (test double)")
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--departure-timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_serve(args.port, args.host, args.departure_timeout))


if __name__ == "__main__":
    main()
