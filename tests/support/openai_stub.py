"""An OpenAI-compatible HTTP server on loopback, for the real ``livekit.plugins.openai`` classes.

Point ``openai.LLM`` / ``openai.STT`` / ``openai.TTS`` at :attr:`OpenAIStub.base_url` (with any
``api_key``). Endpoints:

- ``GET /v1/models`` (``openai.LLM`` prewarm), ``GET /v1/models/{id}``
- ``POST /v1/chat/completions``: streamed SSE ``chat.completion.chunk`` lines, a usage chunk when
  ``stream_options.include_usage`` is set, then ``data: [DONE]``; a plain ``chat.completion`` when
  not streaming. The reply is :attr:`OpenAIStub.reply` (a string, or a callable receiving the
  request's messages), by default ``"You said: <last user text>"``. A tool call queued with
  :meth:`OpenAIStub.queue_tool_call` answers the next request that offers tools. The
  ``context`` reply mode (:func:`context_reply`: ``reply_mode="context"``, ``--reply-mode`` or
  ``config {"reply_mode": "context"}``) answers with a marker of every user message the request
  carried, ``"You said: <last>; earlier user turns: <n> (<first> | <second> ...)"``, so a test
  can prove which earlier turns reached the LLM (e.g. a resumed call's restored context).
- ``POST /v1/audio/transcriptions`` (multipart): ``{"text": transcript}`` (``verbose_json`` and
  ``text`` formats too).
- ``POST /v1/audio/speech``: a synthetic speech-like signal (a 550 Hz tone, amplitude-modulated at
  a syllable rate), 24 kHz mono, its length proportional to the input (capped, 3 s by default).
  ``response_format="pcm"`` is answered as raw s16le ``audio/pcm``; every other format as
  ``audio/wav`` (the plugin decodes by the response Content-Type). With ``tts_sse=True`` a
  ``stream_format="sse"`` request for pcm is answered with ``speech.audio.delta`` events.

- ``GET /v1/realtime?intent=transcription`` (WebSocket): OpenAI's realtime transcription protocol
  as ``openai.STT(use_realtime=True)`` (livekit-plugins-openai 1.8.9) speaks it. The client sends
  ``session.update`` (``session.audio.input``: ``format`` pcm 24 kHz, ``transcription.model``,
  ``turn_detection`` server_vad with ``silence_duration_ms``, or none), then
  ``input_audio_buffer.append`` (base64 s16le 24 kHz mono) and, without server VAD,
  ``input_audio_buffer.commit``. The stub answers ``session.created`` / ``session.updated``; with
  server VAD an energy detector (RMS over 10 ms windows) sends
  ``input_audio_buffer.speech_started`` / ``speech_stopped`` (``item_id``, ``audio_start_ms`` /
  ``audio_end_ms``) and commits after ``silence_duration_ms`` of silence; every commit sends
  ``input_audio_buffer.committed`` and, ``realtime_final_delay`` later,
  ``conversation.item.input_audio_transcription.completed`` (``item_id``, ``content_index``,
  ``transcript``, ``usage``). While speech arrives, ``...transcription.delta`` events
  (``item_id``, ``delta``) carry the transcript word by word, one per
  ``realtime_delta_interval`` of speech audio. A commit of an empty buffer is an ``error`` event.

Timing: a :class:`TimingProfile` (``zero``, ``typical``, ``slow``; see :data:`PROFILES` for each
figure and where it comes from) chosen by ``OpenAIStub(profile=...)``, by the environment variable
``OPENAI_STUB_PROFILE``, by ``--profile`` or by ``POST /_control/config {"profile": "typical"}``.
``zero`` (the default) is the stub as it always was: answers at once.

Every request is recorded (:attr:`OpenAIStub.requests`: path, headers incl. Authorization, JSON
body or multipart fields). Faults for tests: :meth:`OpenAIStub.fail_next_chat`,
:meth:`OpenAIStub.stall_next_chat` (and :meth:`OpenAIStub.fail_next` / :meth:`OpenAIStub.stall_next`
for any endpoint); each applies to that many requests, then the stub recovers.

In-process::

    async with OpenAIStub() as stub:
        llm = openai.LLM(model="fake-model", api_key="sk-test", base_url=stub.base_url)

Standalone (prints ``OPENAI_STUB_READY <base_url>`` on stdout once listening)::

    python -m tests.support.openai_stub --host 127.0.0.1 --port 0

The standalone server is steered over HTTP (not under ``/v1``, and not recorded):

- ``POST /_control/fail_chat`` ``{"count": 2, "status": 500}``
- ``POST /_control/stall_chat`` ``{"count": 1, "seconds": 12, "mid_stream": false}``
- ``POST /_control/fail`` / ``/_control/stall``: the same with ``"endpoint"``
  (``chat``, ``transcriptions``, ``speech``, ``models``)
- ``POST /_control/tool_call`` ``{"name": "book_table", "arguments": {"people": 2}}``
- ``POST /_control/config`` ``{"reply": "..." | null, "reply_mode": "echo" | "context",
  "transcript": "...", "profile": "typical", ...}``
- ``POST /_control/reset``: forget requests, faults and queued tool calls
- ``GET /_control/requests[?endpoint=chat]``: the recorded requests as a JSON list;
  ``DELETE /_control/requests`` clears them
- ``GET /_control/realtime_events[?dir=out&since=<time.time()>]``: the realtime transcription
  events (:attr:`OpenAIStub.realtime_events`, both ways, each ``{"at", "dir", "event"}`` with
  ``at`` its ``time.time()``) as a JSON list, optionally only one direction and only those at or
  after ``since``; ``DELETE /_control/realtime_events`` clears them
- ``GET /_control/health``

This module does not import livekit, so the standalone server starts quickly.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import math
import os
import signal
import sys
import time
import wave
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeAlias, cast, get_args

import numpy as np
from aiohttp import BodyPartReader, WSMsgType, web

__all__ = [
    "DEFAULT_TRANSCRIPT",
    "ENDPOINT_PATHS",
    "PROFILES",
    "PROFILE_ENV",
    "READY_PREFIX",
    "SPEECH_SAMPLE_RATE",
    "Endpoint",
    "Fault",
    "OpenAIStub",
    "RecordedRequest",
    "TimingProfile",
    "context_reply",
    "default_reply",
    "last_user_text",
    "main",
    "profile_from_env",
    "speech_like_pcm16",
]

Endpoint: TypeAlias = Literal["chat", "transcriptions", "speech", "models", "realtime"]
ReplyMode: TypeAlias = Literal["echo", "context"]
REPLY_MODES: Final[tuple[str, ...]] = get_args(ReplyMode)
ENDPOINT_PATHS: Final[dict[Endpoint, str]] = {
    "chat": "/v1/chat/completions",
    "transcriptions": "/v1/audio/transcriptions",
    "speech": "/v1/audio/speech",
    "models": "/v1/models",
    "realtime": "/v1/realtime",
}
PROFILE_ENV: Final = "OPENAI_STUB_PROFILE"
REALTIME_SAMPLE_RATE: Final = 24000
"""The realtime transcription API's input rate (``audio/pcm`` at 24 kHz, s16le mono)."""
SPEECH_SAMPLE_RATE: Final = 24000
"""The sample rate of ``/v1/audio/speech`` audio (what ``openai.TTS`` assumes for pcm)."""
DEFAULT_TRANSCRIPT: Final = "Hello, I would like to book a table for two."
READY_PREFIX: Final = "OPENAI_STUB_READY"

JSON: TypeAlias = Any
Messages: TypeAlias = list[dict[str, Any]]
ReplyFn: TypeAlias = Callable[[Messages], str]
Handler: TypeAlias = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REQUEST_ID: Final = web.RequestKey("openai_stub.request_id", str)


def speech_like_pcm16(
    duration: float,
    *,
    sample_rate: int = SPEECH_SAMPLE_RATE,
    carrier: float = 550.0,
    syllable_rate: float = 4.0,
    amplitude: float = 0.3,
) -> bytes:
    """A speech-like test signal as raw s16le mono bytes.

    A ``carrier`` Hz tone (with a weak second harmonic), amplitude-modulated by a raised cosine
    at ``syllable_rate`` Hz so it comes in syllable-like bursts, with 10 ms fades at both ends.
    """
    n = max(0, round(duration * sample_rate))
    t = np.arange(n, dtype=np.float64) / sample_rate
    tone = np.sin(2 * math.pi * carrier * t) + 0.25 * np.sin(4 * math.pi * carrier * t)
    envelope = 0.35 + 0.65 * 0.5 * (1 - np.cos(2 * math.pi * syllable_rate * t))
    signal = amplitude / 1.25 * tone * envelope
    n_fade = min(n // 2, round(0.01 * sample_rate))
    if n_fade > 0:
        ramp = np.linspace(0.0, 1.0, n_fade)
        signal[:n_fade] *= ramp
        signal[n - n_fade :] *= ramp[::-1]
    return bytes(np.clip(signal * 32767, -32768, 32767).astype("<i2").tobytes())


def _pcm_to_wav(pcm: bytes, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return buf.getvalue()


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "input_text")
        ]
        return " ".join(p for p in parts if p)
    return ""


def last_user_text(messages: Messages) -> str:
    """The text of the last ``role == "user"`` message ("" if none)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return _message_text(message)
    return ""


def default_reply(messages: Messages) -> str:
    """``"You said: <last user text>"``, or a greeting when there is no user message yet."""
    text = last_user_text(messages).strip()
    return f"You said: {text}" if text else "Hello! How can I help you today?"


def context_reply(messages: Messages) -> str:
    """``"You said: <last>; earlier user turns: <n> (<t1> | <t2> ...)"`` over the request's user
    messages (the parenthesis only when n > 0): a reply that depends on the whole context, not
    just the last message."""
    said = [t for t in (_message_text(m).strip() for m in messages if m.get("role") == "user") if t]
    if not said:
        return default_reply(messages)
    *earlier, last = said
    marker = f"You said: {last}; earlier user turns: {len(earlier)}"
    return f"{marker} ({' | '.join(earlier)})" if earlier else marker


@dataclass
class Fault:
    """A fault to apply to one request of an endpoint."""

    kind: Literal["status", "stall"]
    status: int = 500
    """HTTP status for ``kind="status"``."""
    seconds: float = 0.0
    """How long a ``kind="stall"`` holds the request before answering normally."""
    mid_stream: bool = False
    """For a chat stall: send the headers and the first chunk, then stall (a body read stall)."""
    message: str = "injected failure"


@dataclass(frozen=True)
class TimingProfile:
    """How long the stub takes to answer, per endpoint (seconds). ``zero`` answers at once."""

    name: str
    stt_base: float = 0.0
    """Batch transcription: fixed time before the response..."""
    stt_per_audio_second: float = 0.0
    """...plus this much per second of uploaded audio."""
    llm_first_token: float = 0.0
    """Chat: request -> response headers and first token."""
    llm_tokens_per_second: float | None = None
    """Chat: pace of the following tokens (one word = one token); None keeps
    ``chat_token_delay``."""
    tts_first_byte: float = 0.0
    """Speech: request -> first audio bytes."""
    tts_speed: float = math.inf
    """Speech: seconds of audio sent per wall-clock second after the first byte (inf: all at
    once)."""
    realtime_final_delay: float = 0.0
    """Realtime transcription: commit -> ``...transcription.completed``."""
    realtime_delta_interval: float = 0.25
    """Realtime transcription: seconds of speech audio per ``...transcription.delta`` word."""


PROFILES: Final[dict[str, TimingProfile]] = {
    # today's stub: every answer at once (chat keeps its 5 ms between words)
    "zero": TimingProfile("zero"),
    # Public figures for OpenAI's hosted models, rounded (issue 11): gpt-4o-mini-transcribe
    # answers a short upload in ~0.25 s plus ~0.1 s per second of audio; gpt-4.1-mini's first
    # token ~0.35 s, then ~50 tokens/s; gpt-4o-mini-tts's first byte ~0.25 s, then faster than
    # real time (2x here); the realtime transcription API streams deltas while audio arrives and
    # sends the final ~0.15 s after the commit.
    "typical": TimingProfile(
        "typical",
        stt_base=0.25,
        stt_per_audio_second=0.1,
        llm_first_token=0.35,
        llm_tokens_per_second=50.0,
        tts_first_byte=0.25,
        tts_speed=2.0,
        realtime_final_delay=0.15,
    ),
    # a loaded provider: roughly double every figure, TTS only just real time
    "slow": TimingProfile(
        "slow",
        stt_base=0.5,
        stt_per_audio_second=0.2,
        llm_first_token=0.7,
        llm_tokens_per_second=25.0,
        tts_first_byte=0.5,
        tts_speed=1.0,
        realtime_final_delay=0.3,
        realtime_delta_interval=0.5,
    ),
}


def profile_from_env(environ: dict[str, str] | None = None) -> TimingProfile:
    """The profile named by ``OPENAI_STUB_PROFILE`` (``zero`` when unset)."""
    name = (environ if environ is not None else dict(os.environ)).get(PROFILE_ENV) or "zero"
    return resolve_profile(name)


def resolve_profile(profile: str | TimingProfile) -> TimingProfile:
    if isinstance(profile, TimingProfile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown timing profile {profile!r}; one of {sorted(PROFILES)}") from None


@dataclass
class RecordedRequest:
    """One request the stub received."""

    at: float
    """``time.time()`` at arrival."""
    method: str
    path: str
    endpoint: Endpoint | None
    headers: dict[str, str]
    query: dict[str, str]
    body: JSON = None
    """The parsed JSON body (None for multipart or empty bodies)."""
    form: dict[str, str] = field(default_factory=dict)
    """Multipart text fields (transcriptions)."""
    file: dict[str, Any] | None = None
    """The multipart file: ``filename``, ``content_type``, ``size`` and, for a WAV,
    ``sample_rate``, ``channels``, ``duration``."""
    status: int | None = None
    """The HTTP status answered (None while in progress)."""
    fault: str | None = None
    """The fault applied, e.g. ``"status:500"`` or ``"stall:12.0"``."""
    disconnected: bool = False
    """True when the client went away before the response was complete."""
    first_byte_at: float | None = None
    """``time.time()`` when the answer's first content left the stub: the first chat token, the
    first audio chunk, the transcription (benchmarks build per-turn timelines from it)."""

    def header(self, name: str) -> str | None:
        """A request header, looked up case-insensitively."""
        lower = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lower:
                return value
        return None

    @property
    def authorization(self) -> str | None:
        return self.header("Authorization")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _BadControl(ValueError):
    pass


def _opt(data: dict[str, Any], key: str, kind: type[Any], default: Any) -> Any:
    value = data.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise _BadControl(f"{key!r} must be {kind.__name__}")
    return value


def _endpoint(value: Any) -> Endpoint:
    if value not in get_args(Endpoint):
        raise _BadControl(f"'endpoint' must be one of {list(get_args(Endpoint))}")
    return cast(Endpoint, value)


class OpenAIStub:
    """An OpenAI-compatible aiohttp server on ``host`` (loopback), ``port`` 0 = pick a free one.

    ``api_key``: when set, requests without ``Authorization: Bearer <api_key>`` get a 401.
    The attributes ``reply``, ``transcript``, ``chat_token_delay``, ``tts_sec_per_char``,
    ``tts_max_seconds``, ``tts_sse`` and ``profile`` may be changed at any time.
    ``profile``: a :class:`TimingProfile` or its name; None reads ``OPENAI_STUB_PROFILE``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        reply: str | ReplyFn | None = None,
        transcript: str = DEFAULT_TRANSCRIPT,
        api_key: str | None = None,
        chat_token_delay: float = 0.005,
        tts_sec_per_char: float = 0.06,
        tts_min_seconds: float = 0.3,
        tts_max_seconds: float = 3.0,
        tts_sse: bool = False,
        model_ids: tuple[str, ...] = ("fake-model", "gpt-4.1", "gpt-4o-mini-transcribe"),
        profile: str | TimingProfile | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self.reply: str | ReplyFn | None = reply
        self.transcript = transcript
        self.api_key = api_key
        self.chat_token_delay = chat_token_delay
        self.tts_sec_per_char = tts_sec_per_char
        self.tts_min_seconds = tts_min_seconds
        self.tts_max_seconds = tts_max_seconds
        self.tts_sse = tts_sse
        self.model_ids = model_ids
        self.profile = profile_from_env() if profile is None else resolve_profile(profile)
        self.realtime_events: list[dict[str, Any]] = []
        """Every realtime event, both ways, in order: ``{"at", "dir": "in"|"out", "event"}``
        (appended audio is summarised as ``{"type", "bytes"}``)."""
        self._sockets: set[web.WebSocketResponse] = set()
        self.requests: list[RecordedRequest] = []
        self._faults: dict[Endpoint, deque[Fault]] = {e: deque() for e in get_args(Endpoint)}
        self._tool_calls: deque[tuple[str, str]] = deque()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._completion_seq = 0
        self._request_seq = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """``http://host:port`` (the control endpoints live under it)."""
        if self.port is None:
            raise RuntimeError("OpenAIStub is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to pass as ``base_url=`` to the openai plugin classes (``.../v1``)."""
        return f"{self.url}/v1"

    async def start(self) -> str:
        """Start listening; returns :attr:`base_url`."""
        if self._runner is not None:
            raise RuntimeError("OpenAIStub already started")
        self._closing = asyncio.Event()
        runner = web.AppRunner(self._make_app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port)
        await site.start()
        self._runner = runner
        address = runner.addresses[0]
        self.port = int(address[1])
        return self.base_url

    async def stop(self) -> None:
        """Stop listening. Stalled requests are released at once."""
        self._closing.set()
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ test API

    def requests_to(self, endpoint: Endpoint | str) -> list[RecordedRequest]:
        """Recorded requests for an endpoint name (``"chat"``...) or an exact path."""
        if endpoint in ENDPOINT_PATHS:
            return [r for r in self.requests if r.endpoint == endpoint]
        return [r for r in self.requests if r.path == endpoint]

    def fail_next(
        self,
        endpoint: Endpoint,
        count: int = 1,
        *,
        status: int = 500,
        message: str = "injected failure",
    ) -> None:
        """Answer the next ``count`` requests to ``endpoint`` with HTTP ``status``."""
        self._add_faults(endpoint, count, Fault("status", status=status, message=message))

    def stall_next(
        self, endpoint: Endpoint, count: int = 1, *, seconds: float = 12.0, mid_stream: bool = False
    ) -> None:
        """Hold the next ``count`` requests to ``endpoint`` for ``seconds`` before answering.

        Make ``seconds`` longer than the client's timeout to get a read timeout. For chat,
        ``mid_stream=True`` stalls after the headers and the first content chunk.
        """
        self._add_faults(endpoint, count, Fault("stall", seconds=seconds, mid_stream=mid_stream))

    def fail_next_chat(self, count: int = 1, status: int = 500) -> None:
        self.fail_next("chat", count, status=status)

    def stall_next_chat(
        self, count: int = 1, seconds: float = 12.0, *, mid_stream: bool = False
    ) -> None:
        self.stall_next("chat", count, seconds=seconds, mid_stream=mid_stream)

    def pending_faults(self, endpoint: Endpoint) -> int:
        return len(self._faults[endpoint])

    def queue_tool_call(self, name: str, arguments: dict[str, Any] | str) -> None:
        """Answer the next chat request that offers tools with a call of tool ``name``."""
        args = arguments if isinstance(arguments, str) else json.dumps(arguments)
        self._tool_calls.append((name, args))

    def reset(self) -> None:
        """Forget recorded requests, pending faults and queued tool calls."""
        self.requests.clear()
        for faults in self._faults.values():
            faults.clear()
        self._tool_calls.clear()

    def reply_for(self, messages: Messages) -> str:
        if self.reply is None:
            return default_reply(messages)
        return self.reply if isinstance(self.reply, str) else self.reply(messages)

    def speech_duration(self, text: str) -> float:
        """Seconds of audio ``/v1/audio/speech`` returns for ``text``."""
        return min(
            max(len(text) * self.tts_sec_per_char, self.tts_min_seconds), self.tts_max_seconds
        )

    def _add_faults(self, endpoint: Endpoint, count: int, fault: Fault) -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        self._faults[endpoint].extend(Fault(**asdict(fault)) for _ in range(count))

    # ------------------------------------------------------------------ app

    @web.middleware
    async def _request_id(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Give every /v1 response an ``x-request-id``, as OpenAI does (the plugins log it)."""
        if request.path.startswith("/v1/"):
            self._request_seq += 1
            request_id = f"req_stub_{self._request_seq}"
            request[_REQUEST_ID] = request_id
        return await handler(request)

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        request_id = request.get(_REQUEST_ID)
        if request_id is not None:
            response.headers["x-request-id"] = request_id

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._request_id])
        app.on_response_prepare.append(self._on_prepare)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model_id}", self._model)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        app.router.add_post("/v1/audio/speech", self._speech)
        app.router.add_get("/v1/realtime", self._realtime)
        app.router.add_get("/_control/health", self._control_health)
        app.router.add_get("/_control/requests", self._control_requests)
        app.router.add_delete("/_control/requests", self._control_clear_requests)
        app.router.add_get("/_control/realtime_events", self._control_realtime_events)
        app.router.add_delete("/_control/realtime_events", self._control_clear_realtime_events)
        app.router.add_post("/_control/{action}", self._control)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    def _record(self, request: web.Request, endpoint: Endpoint | None) -> RecordedRequest:
        rec = RecordedRequest(
            at=time.time(),
            method=request.method,
            path=request.path,
            endpoint=endpoint,
            headers=dict(request.headers),
            query=dict(request.query),
        )
        self.requests.append(rec)
        return rec

    async def _record_json(
        self, request: web.Request, endpoint: Endpoint
    ) -> tuple[RecordedRequest, JSON]:
        rec = self._record(request, endpoint)
        raw = await request.read()
        body: JSON = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        rec.body = body
        return rec, body

    def _error(
        self, rec: RecordedRequest, status: int, message: str, *, kind: str = "server_error"
    ) -> web.Response:
        rec.status = status
        payload = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        return web.json_response(payload, status=status)

    def _refuse(self, request: web.Request, rec: RecordedRequest) -> web.Response | None:
        """The API key check: the 401 response to send, or None."""
        if self.api_key is not None and request.headers.get("Authorization") != (
            f"Bearer {self.api_key}"
        ):
            return self._error(
                rec, 401, "Incorrect API key provided.", kind="invalid_request_error"
            )
        return None

    def _take_fault(self, rec: RecordedRequest) -> Fault | None:
        if rec.endpoint is None or not self._faults[rec.endpoint]:
            return None
        fault = self._faults[rec.endpoint].popleft()
        rec.fault = f"status:{fault.status}" if fault.kind == "status" else f"stall:{fault.seconds}"
        return fault

    async def _stall(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    async def _apply_fault(self, rec: RecordedRequest) -> web.Response | None:
        """Apply the next fault of the request's endpoint (for all but chat, which handles its
        own). Returns the error response to send, if any."""
        fault = self._take_fault(rec)
        if fault is None:
            return None
        if fault.kind == "status":
            return self._error(rec, fault.status, fault.message)
        await self._stall(fault.seconds)
        return None

    # ------------------------------------------------------------------ /v1 handlers

    async def _models(self, request: web.Request) -> web.StreamResponse:
        rec = self._record(request, "models")
        if (refused := self._refuse(request, rec) or await self._apply_fault(rec)) is not None:
            return refused
        rec.status = 200
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "openai-stub"}
            for m in self.model_ids
        ]
        return web.json_response({"object": "list", "data": data})

    async def _model(self, request: web.Request) -> web.StreamResponse:
        rec = self._record(request, "models")
        if (refused := self._refuse(request, rec) or await self._apply_fault(rec)) is not None:
            return refused
        rec.status = 200
        model_id = request.match_info["model_id"]
        return web.json_response(
            {"id": model_id, "object": "model", "created": 0, "owned_by": "openai-stub"}
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        rec, body = await self._record_json(request, "chat")
        if (refused := self._refuse(request, rec)) is not None:
            return refused
        fault = self._take_fault(rec)
        if fault is not None and fault.kind == "status":
            return self._error(rec, fault.status, fault.message)
        mid_stream_stall = fault.seconds if fault is not None and fault.mid_stream else None
        if fault is not None and mid_stream_stall is None:
            await self._stall(fault.seconds)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self._error(rec, 400, "'messages' is required", kind="invalid_request_error")

        messages = cast(Messages, [m for m in body["messages"] if isinstance(m, dict)])
        model = str(body.get("model") or "fake-model")
        tools = body.get("tools") or []
        tool_call = self._tool_calls.popleft() if tools and self._tool_calls else None
        text = "" if tool_call else self.reply_for(messages)
        words = text.split(" ") if text else []
        prompt_tokens = max(1, sum(len(_message_text(m)) for m in messages) // 4)
        completion_tokens = len(words) if words else 1 if tool_call else 0
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        self._completion_seq += 1
        completion_id = f"chatcmpl-stub-{self._completion_seq}"
        created = int(time.time())
        finish_reason = "tool_calls" if tool_call else "stop"

        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if tool_call:
                message["tool_calls"] = [
                    {
                        "id": f"call_stub_{self._completion_seq}",
                        "type": "function",
                        "function": {"name": tool_call[0], "arguments": tool_call[1]},
                    }
                ]
            rec.status = 200
            return web.json_response(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
                    "usage": usage,
                }
            )

        def chunk(
            delta: dict[str, Any] | None, finish: str | None = None, with_usage: bool = False
        ) -> bytes:
            obj: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": []
                if delta is None
                else [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if with_usage:
                obj["usage"] = usage
            return f"data: {json.dumps(obj)}\n\n".encode()

        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and bool(
            stream_options.get("include_usage")
        )
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        rec.status = 200
        profile = self.profile
        token_delay = (
            1.0 / profile.llm_tokens_per_second
            if profile.llm_tokens_per_second
            else self.chat_token_delay
        )
        try:
            # the headers come with the first token, as from the real API
            await self._stall(profile.llm_first_token)
            await response.prepare(request)
            await response.write(chunk({"role": "assistant", "content": ""}))
            if tool_call:
                name, arguments = tool_call
                call_id = f"call_stub_{self._completion_seq}"
                await response.write(
                    chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": call_id,
                                    "type": "function",
                                    "function": {"name": name, "arguments": ""},
                                }
                            ]
                        }
                    )
                )
                if mid_stream_stall is not None:
                    await self._stall(mid_stream_stall)
                await response.write(
                    chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]})
                )
            for i, word in enumerate(words):
                if i > 0 and token_delay > 0:
                    await asyncio.sleep(token_delay)
                await response.write(chunk({"content": word if i == 0 else f" {word}"}))
                if i == 0:
                    rec.first_byte_at = time.time()
                if i == 0 and mid_stream_stall is not None:
                    await self._stall(mid_stream_stall)
            await response.write(chunk({}, finish=finish_reason))
            if include_usage:
                await response.write(chunk(None, with_usage=True))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionError:
            rec.disconnected = True
        return response

    async def _transcriptions(self, request: web.Request) -> web.StreamResponse:
        rec = self._record(request, "transcriptions")
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    continue
                if part.filename is not None or part.name == "file":
                    data = await part.read(decode=False)
                    rec.file = self._describe_upload(part, data)
                elif part.name:
                    rec.form[part.name] = await part.text()
        else:
            await request.read()
        if (refused := self._refuse(request, rec) or await self._apply_fault(rec)) is not None:
            return refused
        if rec.file is None:
            return self._error(rec, 400, "'file' is required", kind="invalid_request_error")

        response_format = rec.form.get("response_format", "json")
        duration = float(rec.file.get("duration", 0.0))
        await self._stall(self.profile.stt_base + self.profile.stt_per_audio_second * duration)
        rec.status = 200
        rec.first_byte_at = time.time()
        if response_format == "verbose_json":
            return web.json_response(
                {
                    "task": "transcribe",
                    "text": self.transcript,
                    "language": "english",
                    "duration": rec.file.get("duration", 0.0),
                    "segments": [],
                }
            )
        if response_format in ("text", "srt", "vtt"):
            return web.Response(text=self.transcript, content_type="text/plain")
        return web.json_response({"text": self.transcript})

    @staticmethod
    def _describe_upload(part: BodyPartReader, data: bytes) -> dict[str, Any]:
        info: dict[str, Any] = {
            "filename": part.filename,
            "content_type": part.headers.get("Content-Type"),
            "size": len(data),
        }
        with contextlib.suppress(wave.Error, EOFError), wave.open(io.BytesIO(data), "rb") as w:
            info["sample_rate"] = w.getframerate()
            info["channels"] = w.getnchannels()
            info["duration"] = round(w.getnframes() / w.getframerate(), 3)
        return info

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        rec, body = await self._record_json(request, "speech")
        if (refused := self._refuse(request, rec) or await self._apply_fault(rec)) is not None:
            return refused
        if not isinstance(body, dict) or not isinstance(body.get("input"), str):
            return self._error(rec, 400, "'input' is required", kind="invalid_request_error")

        text: str = body["input"]
        response_format = str(body.get("response_format") or "mp3")
        pcm = speech_like_pcm16(self.speech_duration(text))
        await self._stall(self.profile.tts_first_byte)
        rec.status = 200
        rec.first_byte_at = time.time()
        if response_format == "pcm" and not math.isinf(self.profile.tts_speed):
            return await self._paced_pcm(request, rec, pcm)
        if self.tts_sse and body.get("stream_format") == "sse" and response_format == "pcm":
            response = web.StreamResponse(
                status=200,
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
            )
            step = SPEECH_SAMPLE_RATE * 2 // 10  # 100 ms of s16le mono
            try:
                await response.prepare(request)
                for offset in range(0, len(pcm), step):
                    delta = base64.b64encode(pcm[offset : offset + step]).decode()
                    event = {"type": "speech.audio.delta", "audio": delta}
                    await response.write(f"data: {json.dumps(event)}\n\n".encode())
                done = {
                    "type": "speech.audio.done",
                    "usage": {"input_tokens": len(text) // 4 + 1, "output_tokens": len(pcm) // 960},
                }
                await response.write(f"data: {json.dumps(done)}\n\n".encode())
                await response.write_eof()
            except ConnectionError:
                rec.disconnected = True
            return response
        if response_format == "pcm":
            return web.Response(body=pcm, content_type="audio/pcm")
        # wav, and every format we do not encode (mp3, opus, aac, flac): the plugin picks its
        # decoder from the response Content-Type, not from the format it asked for
        return web.Response(body=_pcm_to_wav(pcm, SPEECH_SAMPLE_RATE), content_type="audio/wav")

    async def _realtime(self, request: web.Request) -> web.StreamResponse:
        rec = self._record(request, "realtime")
        if (refused := self._refuse(request, rec) or await self._apply_fault(rec)) is not None:
            return refused
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        rec.status = 101
        self._sockets.add(ws)
        session = _RealtimeSession(self, ws)
        try:
            await session.run()
        finally:
            self._sockets.discard(ws)
            await session.aclose()
        return ws

    async def _paced_pcm(
        self, request: web.Request, rec: RecordedRequest, pcm: bytes
    ) -> web.StreamResponse:
        """Raw pcm in 100 ms chunks at ``profile.tts_speed`` x real time (the first at once)."""
        response = web.StreamResponse(status=200, headers={"Content-Type": "audio/pcm"})
        step = SPEECH_SAMPLE_RATE * 2 // 10
        interval = 0.1 / self.profile.tts_speed
        start = time.perf_counter()
        try:
            await response.prepare(request)
            for index, offset in enumerate(range(0, len(pcm), step)):
                delay = start + index * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await response.write(pcm[offset : offset + step])
            await response.write_eof()
        except ConnectionError:
            rec.disconnected = True
        return response

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        rec = self._record(request, None)
        await request.read()
        return self._error(
            rec, 404, f"no route for {request.method} {request.path}", kind="invalid_request_error"
        )

    # ------------------------------------------------------------------ control

    async def _control_health(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True, "base_url": self.base_url})

    async def _control_requests(self, request: web.Request) -> web.StreamResponse:
        endpoint = request.query.get("endpoint")
        recs = self.requests_to(endpoint) if endpoint else self.requests
        return web.json_response([r.to_dict() for r in recs])

    async def _control_clear_requests(self, request: web.Request) -> web.StreamResponse:
        self.requests.clear()
        return web.json_response({"ok": True})

    async def _control_realtime_events(self, request: web.Request) -> web.StreamResponse:
        direction = request.query.get("dir")
        if direction not in (None, "in", "out"):
            return web.json_response({"ok": False, "error": "'dir' must be in or out"}, status=400)
        try:
            since = float(request.query.get("since", "-inf"))
        except ValueError:
            return web.json_response({"ok": False, "error": "'since' must be a number"}, status=400)
        events = [
            e
            for e in self.realtime_events
            if (direction is None or e["dir"] == direction) and e["at"] >= since
        ]
        return web.json_response(events)

    async def _control_clear_realtime_events(self, request: web.Request) -> web.StreamResponse:
        self.realtime_events.clear()
        return web.json_response({"ok": True})

    async def _control(self, request: web.Request) -> web.StreamResponse:
        action = request.match_info["action"]
        raw = await request.read()
        try:
            data = json.loads(raw) if raw else {}
            if not isinstance(data, dict):
                raise _BadControl("the body must be a JSON object")
            result = self._apply_control(action, data)
        except (ValueError, _BadControl) as e:
            return web.json_response({"ok": False, "error": str(e)}, status=400)
        if result is None:
            return web.json_response(
                {"ok": False, "error": f"unknown action {action!r}"}, status=404
            )
        return web.json_response({"ok": True, **result})

    def _apply_control(self, action: str, data: dict[str, Any]) -> dict[str, Any] | None:
        if action in ("fail_chat", "fail"):
            endpoint = "chat" if action == "fail_chat" else _endpoint(data.get("endpoint"))
            count = _opt(data, "count", int, 1)
            self.fail_next(
                endpoint,
                count,
                status=_opt(data, "status", int, 500),
                message=_opt(data, "message", str, "injected failure"),
            )
            return {"pending": self.pending_faults(endpoint)}
        if action in ("stall_chat", "stall"):
            endpoint = "chat" if action == "stall_chat" else _endpoint(data.get("endpoint"))
            self.stall_next(
                endpoint,
                _opt(data, "count", int, 1),
                seconds=_opt(data, "seconds", float, 12.0),
                mid_stream=_opt(data, "mid_stream", bool, False),
            )
            return {"pending": self.pending_faults(endpoint)}
        if action == "tool_call":
            arguments = data.get("arguments", {})
            if not isinstance(arguments, dict | str):
                raise _BadControl("'arguments' must be an object or a string")
            name = _opt(data, "name", str, "")
            if not name:
                raise _BadControl("'name' is required")
            self.queue_tool_call(name, arguments)
            return {"queued": len(self._tool_calls)}
        if action == "config":
            if "reply" in data:
                reply = data["reply"]
                if reply is not None and not isinstance(reply, str):
                    raise _BadControl("'reply' must be a string or null")
                self.reply = reply
            if "reply_mode" in data:
                self.reply = _reply_of_mode(data["reply_mode"])
            self.transcript = _opt(data, "transcript", str, self.transcript)
            self.chat_token_delay = _opt(data, "chat_token_delay", float, self.chat_token_delay)
            self.tts_sec_per_char = _opt(data, "tts_sec_per_char", float, self.tts_sec_per_char)
            self.tts_max_seconds = _opt(data, "tts_max_seconds", float, self.tts_max_seconds)
            self.tts_sse = _opt(data, "tts_sse", bool, self.tts_sse)
            if "profile" in data:
                self.profile = resolve_profile(_opt(data, "profile", str, "zero"))
            return {"profile": self.profile.name}
        if action == "reset":
            self.reset()
            return {}
        return None


def _reply_of_mode(mode: Any) -> ReplyFn | None:
    """The ``reply`` of a reply mode: None (the default echo) or :func:`context_reply`."""
    if mode not in REPLY_MODES:
        raise _BadControl(f"'reply_mode' must be one of {', '.join(REPLY_MODES)}")
    return context_reply if mode == "context" else None


# ---------------------------------------------------------------------- realtime


_VOICED_RMS: Final = 200.0
"""A 10 ms window is speech when its RMS exceeds this (s16 units, about -44 dBFS): the test WAVs
are digitally silent between words, and the agent's own audio never reaches the stub."""
_WINDOW: Final = REALTIME_SAMPLE_RATE // 100


class _RealtimeSession:
    """One realtime transcription WebSocket: the server side of the protocol described in the
    module docstring, with an energy detector standing in for OpenAI's server VAD."""

    def __init__(self, stub: OpenAIStub, ws: web.WebSocketResponse) -> None:
        self.stub = stub
        self.ws = ws
        self.turn_detection: dict[str, Any] | None = None
        self.buffer_ms = 0  # audio in the uncommitted buffer
        self.audio_ms = 0  # audio received since the connection opened
        self.item_seq = 0
        self.item_id = ""
        self.speaking = False
        self.speech_start_ms = 0
        self.silence_ms = 0
        self.speech_ms = 0  # speech audio of the current item (for the delta pace)
        self.words_sent = 0
        self.carry = b""
        self.tasks: set[asyncio.Task[None]] = set()

    async def send(self, event: dict[str, Any]) -> None:
        self.stub.realtime_events.append({"at": time.time(), "dir": "out", "event": event})
        if not self.ws.closed:
            await self.ws.send_json(event)

    def _new_item(self) -> str:
        self.item_seq += 1
        self.item_id = f"item_stub_{id(self) % 10000}_{self.item_seq}"
        self.speech_ms = 0
        self.words_sent = 0
        return self.item_id

    async def run(self) -> None:
        await self.send({"type": "session.created", "session": {"type": "transcription"}})
        async for msg in self.ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                event = json.loads(msg.data)
            except ValueError:
                await self._error("invalid_json", "the message is not JSON")
                continue
            kind = event.get("type") if isinstance(event, dict) else None
            if kind == "input_audio_buffer.append":
                audio = base64.b64decode(str(event.get("audio", "")))
                self.stub.realtime_events.append(
                    {"at": time.time(), "dir": "in", "event": {"type": kind, "bytes": len(audio)}}
                )
                await self._append(audio)
                continue
            self.stub.realtime_events.append({"at": time.time(), "dir": "in", "event": event})
            if kind == "session.update":
                await self._session_update(event.get("session") or {})
            elif kind == "input_audio_buffer.commit":
                await self._commit()
            elif kind == "input_audio_buffer.clear":
                self.buffer_ms, self.speaking = 0, False
                await self.send({"type": "input_audio_buffer.cleared"})
            else:
                await self._error("unknown_event", f"unsupported event type {kind!r}")

    async def _session_update(self, session: dict[str, Any]) -> None:
        audio_input = (session.get("audio") or {}).get("input") or {}
        fmt = audio_input.get("format") or {}
        if fmt and (fmt.get("type") != "audio/pcm" or fmt.get("rate") != REALTIME_SAMPLE_RATE):
            await self._error("invalid_format", f"unsupported input format {fmt!r}")
            return
        if session.get("type") != "transcription":
            await self._error("invalid_session", "session.type must be 'transcription'")
            return
        # a field left out keeps its value; an explicit null turns server VAD off
        if "turn_detection" in audio_input:
            self.turn_detection = audio_input["turn_detection"]
        await self.send({"type": "session.updated", "session": session})

    async def _append(self, audio: bytes) -> None:
        data = self.carry + audio
        usable = len(data) - len(data) % (2 * _WINDOW)
        self.carry = data[usable:]
        samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.float64)
        for start in range(0, len(samples), _WINDOW):
            window = samples[start : start + _WINDOW]
            voiced = float(np.sqrt(np.mean(window * window))) > _VOICED_RMS
            self.audio_ms += 10
            self.buffer_ms += 10
            if self.turn_detection is None:
                if voiced:
                    await self._speech_audio()
                continue
            if voiced:
                self.silence_ms = 0
                if not self.speaking:
                    self.speaking = True
                    self.speech_start_ms = self.audio_ms - 10
                    await self.send(
                        {
                            "type": "input_audio_buffer.speech_started",
                            "item_id": self._new_item(),
                            "audio_start_ms": self.speech_start_ms,
                        }
                    )
                await self._speech_audio()
            elif self.speaking:
                self.silence_ms += 10
                if self.silence_ms >= int(self.turn_detection.get("silence_duration_ms", 500)):
                    self.speaking = False
                    await self.send(
                        {
                            "type": "input_audio_buffer.speech_stopped",
                            "item_id": self.item_id,
                            "audio_end_ms": self.audio_ms - self.silence_ms,
                        }
                    )
                    await self._commit()

    async def _speech_audio(self) -> None:
        """One more 10 ms of speech: a delta word each ``realtime_delta_interval``."""
        if not self.item_id:
            self._new_item()
        self.speech_ms += 10
        words = self.stub.transcript.split(" ")
        interval_ms = max(10, round(self.stub.profile.realtime_delta_interval * 1000))
        # the last word is kept for the final, so a delta never completes the transcript
        if self.speech_ms % interval_ms == 0 and self.words_sent < len(words) - 1:
            delta = words[self.words_sent] if self.words_sent == 0 else f" {words[self.words_sent]}"
            self.words_sent += 1
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": self.item_id,
                    "content_index": 0,
                    "delta": delta,
                }
            )

    async def _commit(self) -> None:
        if self.buffer_ms < 100:
            await self._error(
                "input_audio_buffer_commit_empty",
                "buffer too small: expected at least 100ms of audio",
            )
            return
        heard = bool(self.item_id) and self.speech_ms > 0
        item_id = self.item_id or self._new_item()
        # a buffer of silence transcribes to nothing
        words = self.stub.transcript.split(" ") if heard else []
        rest = words[self.words_sent :]
        self.buffer_ms, self.item_id, self.speaking, self.silence_ms = 0, "", False, 0
        await self.send(
            {"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": None}
        )
        task = asyncio.create_task(
            self._complete(item_id, rest, first=len(words) == len(rest), heard=heard),
            name="openai_stub.realtime_complete",
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _complete(self, item_id: str, rest: list[str], *, first: bool, heard: bool) -> None:
        await self.stub._stall(self.stub.profile.realtime_final_delay)
        with contextlib.suppress(ConnectionError, RuntimeError):
            if rest:
                delta = " ".join(rest) if first else " " + " ".join(rest)
                await self.send(
                    {
                        "type": "conversation.item.input_audio_transcription.delta",
                        "item_id": item_id,
                        "content_index": 0,
                        "delta": delta,
                    }
                )
            transcript = self.stub.transcript if heard else ""
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": transcript,
                    "usage": {
                        "type": "tokens",
                        "input_tokens": 10,
                        "output_tokens": max(1, len(transcript.split())),
                        "total_tokens": 10 + max(1, len(transcript.split())),
                    },
                }
            )

    async def _error(self, code: str, message: str) -> None:
        await self.send(
            {
                "type": "error",
                "error": {"type": "invalid_request_error", "code": code, "message": message},
            }
        )

    async def aclose(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


# ---------------------------------------------------------------------- standalone


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.openai_stub",
        description="OpenAI-compatible stub server (see the module docstring).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--reply", default=None, help="fixed chat reply (default: echo)")
    parser.add_argument(
        "--reply-mode", choices=REPLY_MODES, default=None, help="echo or context (see docstring)"
    )
    parser.add_argument("--transcript", default=DEFAULT_TRANSCRIPT)
    parser.add_argument("--api-key", default=None, help="require this bearer key (401 otherwise)")
    parser.add_argument("--chat-token-delay", type=float, default=0.005)
    parser.add_argument("--tts-max-seconds", type=float, default=3.0)
    parser.add_argument("--tts-sse", action="store_true")
    parser.add_argument(
        "--profile", choices=sorted(PROFILES), default=None, help=f"default: ${PROFILE_ENV} or zero"
    )
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    stub = OpenAIStub(
        host=args.host,
        port=args.port,
        reply=_reply_of_mode(args.reply_mode) if args.reply_mode else args.reply,
        transcript=args.transcript,
        api_key=args.api_key,
        chat_token_delay=args.chat_token_delay,
        tts_max_seconds=args.tts_max_seconds,
        tts_sse=args.tts_sse,
        profile=args.profile,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stub.start()
    print(f"{READY_PREFIX} {stub.base_url}", flush=True)
    logged: set[int] = set()
    try:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
            if args.verbose:
                for rec in stub.requests:
                    if rec.status is not None and id(rec) not in logged:
                        logged.add(id(rec))
                        fault = f" ({rec.fault})" if rec.fault else ""
                        line = f"{rec.method} {rec.path} -> {rec.status}{fault}"
                        print(line, file=sys.stderr, flush=True)
    finally:
        await stub.stop()


def main(argv: list[str] | None = None) -> None:
    asyncio.run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()
