"""A caller on the real ``livekit`` rtc SDK, for the e2e tests: what a trainee's browser does.

It joins a room with its own token, publishes a microphone track that carries silence until
told to speak a WAV (at real-time pace, then silence again), and records:

* what it hears from agents: per-frame RMS with timestamps (``heard``), so a test can say "heard
  speech between t1 and t2" (``heard_between``, ``wait_for_audio``, ``dominant_frequency``);
* ``transcript`` data messages (JSON), only from participants of kind AGENT (and, if given,
  whose ``lk.agent.name`` attribute is ``agent_name``); packets split into ``parts`` are
  reassembled (each part repeats every field, ``part`` = 1..parts, text concatenated in part
  order) before they are recorded;
* ``lk.transcription`` text streams (LiveKit's own transcriptions), from anyone.

The agent may change during a call (its worker died and a new job joined the room under a new
identity): the caller keeps one timeline across agents. Every agent's audio track is subscribed
and recorded with its sender, ``agent_joins``/``agent_leaves`` say when each agent came and went,
``wait_for_agent`` and ``end_call`` address the newest agent present, and the waits for audio
can be narrowed to one sender.

It can call the agent's ``agent.end_call`` RPC and leave. Times are seconds since the caller
was created (``time.monotonic()`` based). Every wait is bounded.

    async with Caller(url, token) as caller:           # connect + microphone
        agent = await caller.wait_for_agent(timeout=20)
        start, end = await caller.speak(WAV, timeout=15)
        await caller.wait_for_audio(after=end, timeout=15)
        await caller.leave()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from livekit import rtc

log = logging.getLogger("tests.e2e.caller")

SAMPLE_RATE: Final = 48000
FRAME_SAMPLES: Final = SAMPLE_RATE // 100  # 10 ms
TRANSCRIPT_TOPIC: Final = "transcript"
TRANSCRIPTION_TOPIC: Final = "lk.transcription"
SESSION_TOPIC: Final = "lk.agent.session"
END_CALL_METHOD: Final = "agent.end_call"
AGENT_NAME_ATTRIBUTE: Final = "lk.agent.name"
# RMS (int16 scale) above which a frame counts as sound; speech and the tone agent's voice are
# in the thousands, Opus-coded digital silence is 0
DEFAULT_MIN_RMS: Final = 300.0
# the caller keeps at most this much of the agent's audio for frequency analysis
MAX_KEPT_SECONDS: Final = 180

Samples = npt.NDArray[np.int16]


@dataclass(frozen=True)
class HeardFrame:
    t: float  # seconds since the caller was created, when the frame arrived
    rms: float
    sender: str
    seconds: float  # the frame's duration


@dataclass(frozen=True)
class DataMessage:
    t: float
    sender: str
    topic: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class TextStream:
    t: float
    sender: str
    topic: str
    text: str
    attributes: dict[str, str]


def read_wav(path: Path) -> Samples:
    """A 16-bit WAV as mono int16 samples (first channel) at 48 kHz: a lower rate that divides
    48 kHz (the 16 kHz turn-taking corpus) is brought up by linear interpolation."""
    with wave.open(str(path), "rb") as wav:
        rate = wav.getframerate()
        if wav.getsampwidth() != 2 or SAMPLE_RATE % rate:
            raise ValueError(f"{path}: need 16-bit PCM at {SAMPLE_RATE} Hz or a divisor of it")
        channels = wav.getnchannels()
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    if channels > 1:
        data = data.reshape(-1, channels)[:, 0]
    if rate != SAMPLE_RATE:
        step = SAMPLE_RATE // rate
        positions = np.arange(data.size * step) / step
        data = np.interp(positions, np.arange(data.size), data).astype(np.int16)
    return data.copy()


def frame_rms(samples: Samples) -> float:
    if samples.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


@dataclass
class PartsAssembler:
    """Reassembles ``parts`` packets: each part repeats every field with ``part`` = 1..parts;
    the text is the concatenation of the parts' ``text`` in part order. Messages without
    ``parts`` pass through unchanged. The result has no ``part``/``parts`` keys."""

    _pending: dict[tuple[str, str], dict[int, dict[str, Any]]] = field(default_factory=dict)

    def add(self, sender: str, message: dict[str, Any]) -> dict[str, Any] | None:
        parts = message.get("parts")
        if not isinstance(parts, int) or parts <= 1:
            return {k: v for k, v in message.items() if k not in ("part", "parts")}
        part = message.get("part")
        if not isinstance(part, int) or not 1 <= part <= parts:
            raise ValueError(f"bad part {part!r} of {parts}")
        common = {k: v for k, v in message.items() if k not in ("part", "text")}
        key = (sender, json.dumps(common, sort_keys=True, default=str))
        received = self._pending.setdefault(key, {})
        received[part] = message
        if len(received) < parts:
            return None
        del self._pending[key]
        whole = {k: v for k, v in common.items() if k != "parts"}
        whole["text"] = "".join(str(received[i].get("text", "")) for i in range(1, parts + 1))
        return whole

    @property
    def incomplete(self) -> int:
        return len(self._pending)


class Caller:
    """One caller in one room. Create, ``await connect()`` (or ``async with``), then drive."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        agent_name: str | None = None,
        connect_timeout: float = 15.0,
    ) -> None:
        self.url = url
        self.token = token
        self.agent_name = agent_name
        self.connect_timeout = connect_timeout
        self.room = rtc.Room()
        self.t0 = time.monotonic()
        self.heard: list[HeardFrame] = []
        self.transcript: list[DataMessage] = []
        self.rejected: list[DataMessage] = []  # `transcript` packets from non-agents
        self.text_streams: list[TextStream] = []
        # (time, sender, topic) of byte streams on SESSION_TOPIC (the agents' remote-session
        # protocol, which the project's worker turns off with session_host=False)
        self.byte_streams: list[tuple[float, str, str]] = []
        self.disconnect_reasons: list[int] = []
        # identity -> time each agent was first seen / left (one call may see several agents)
        self.agent_joins: dict[str, float] = {}
        self.agent_leaves: dict[str, float] = {}
        # (time, participant identity, track sid) of every track subscribed
        self.subscribed: list[tuple[float, str, str]] = []
        # identity -> its audio listeners, stopped when that participant leaves
        self._listeners: dict[str, set[asyncio.Task[None]]] = {}
        self._assembler = PartsAssembler()
        self._kept: list[tuple[float, Samples]] = []
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._speech: asyncio.Queue[tuple[Samples, asyncio.Future[tuple[float, float]]]] = (
            asyncio.Queue()
        )
        self._source: rtc.AudioSource | None = None
        self._connected = False
        self.room.on("track_subscribed", self._on_track_subscribed)
        self.room.on("data_received", self._on_data)
        self.room.on("participant_connected", self._on_participant_connected)
        self.room.on("participant_disconnected", self._on_participant_disconnected)
        self.room.on("participant_attributes_changed", lambda *_a: self._notify())
        self.room.on("disconnected", self._on_disconnected)
        self.room.register_text_stream_handler(TRANSCRIPTION_TOPIC, self._on_text_stream)
        self.room.register_byte_stream_handler(SESSION_TOPIC, self._on_byte_stream)

    # --------------------------------------------------------------------- lifecycle
    def now(self) -> float:
        return time.monotonic() - self.t0

    async def connect(self) -> None:
        """Join the room and publish the microphone (silence until ``speak``)."""
        await asyncio.wait_for(self.room.connect(self.url, self.token), self.connect_timeout)
        self._connected = True
        self._source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=100)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self._source)
        await asyncio.wait_for(
            self.room.local_participant.publish_track(
                track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            ),
            self.connect_timeout,
        )
        self._spawn(self._microphone(self._source))
        log.info("caller %s connected", self.identity)

    async def leave(self, *, timeout: float = 10.0) -> None:
        """Disconnect (the SDK sends a leave: the others see CLIENT_INITIATED)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)
        if self._connected:
            self._connected = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.room.disconnect(), timeout)

    async def __aenter__(self) -> Caller:
        await self.connect()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.leave()

    @property
    def identity(self) -> str:
        return self.room.local_participant.identity if self._connected else ""

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], Any], *, timeout: float, what: str) -> Any:
        """Wait until ``predicate()`` is truthy; return its value, else raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            changed = self._changed
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"caller: timed out after {timeout:.1f}s waiting for {what}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, 0.5))

    # --------------------------------------------------------------------- participants
    def is_agent(self, participant: rtc.RemoteParticipant | None) -> bool:
        if participant is None or participant.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            return False
        if self.agent_name is None:
            return True
        return participant.attributes.get(AGENT_NAME_ATTRIBUTE) == self.agent_name

    def agents(self) -> list[rtc.RemoteParticipant]:
        """The agents in the room now, oldest first."""
        present = [p for p in self.room.remote_participants.values() if self.is_agent(p)]
        for p in present:  # already there when we joined, or its attributes came late
            self.agent_joins.setdefault(p.identity, self.now())
        return sorted(present, key=lambda p: self.agent_joins[p.identity])

    async def wait_for_agent(
        self, *, timeout: float, exclude: tuple[str, ...] = ()
    ) -> rtc.RemoteParticipant:
        """The newest agent present whose identity is not in ``exclude`` (e.g. the agent of a
        worker that died), once there is one."""

        def found() -> rtc.RemoteParticipant | None:
            fresh = [p for p in self.agents() if p.identity not in exclude]
            return fresh[-1] if fresh else None

        agent: rtc.RemoteParticipant = await self.wait_until(
            found, timeout=timeout, what="an agent participant"
        )
        return agent

    async def wait_for_agent_gone(self, *, timeout: float) -> None:
        await self.wait_until(
            lambda: not self.agents(), timeout=timeout, what="the agent to leave the room"
        )

    def _on_participant_connected(self, participant: rtc.RemoteParticipant) -> None:
        if self.is_agent(participant):
            self.agent_joins.setdefault(participant.identity, self.now())
        self._notify()

    def _on_participant_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity in self.agent_joins:
            self.agent_leaves.setdefault(participant.identity, self.now())
        # A departed agent's track is not ended by the stand-in, and libwebrtc keeps producing
        # (silent) frames for a receiver that gets no more RTP: without this, those frames
        # would interleave with the next agent's audio in `heard` and the kept samples.
        for task in self._listeners.pop(participant.identity, set()):
            task.cancel()
        self._notify()

    def _on_disconnected(self, reason: int) -> None:
        self.disconnect_reasons.append(reason)
        self._notify()

    # --------------------------------------------------------------------- microphone
    async def speak(self, wav: Path, *, timeout: float = 60.0) -> tuple[float, float]:
        """Play ``wav`` as the microphone at real-time pace; return (start, end) times."""
        done: asyncio.Future[tuple[float, float]] = asyncio.get_running_loop().create_future()
        await self._speech.put((read_wav(wav), done))
        return await asyncio.wait_for(done, timeout)

    def speak_soon(self, wav: Path) -> asyncio.Future[tuple[float, float]]:
        """Queue ``wav`` without waiting; the future gives (start, end) times."""
        done: asyncio.Future[tuple[float, float]] = asyncio.get_running_loop().create_future()
        self._speech.put_nowait((read_wav(wav), done))
        return done

    async def _microphone(self, source: rtc.AudioSource) -> None:
        silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        start = time.monotonic()
        sent = 0
        current: Samples | None = None
        done: asyncio.Future[tuple[float, float]] | None = None
        offset = 0
        started_at = 0.0
        while True:
            if current is None and not self._speech.empty():
                current, done = self._speech.get_nowait()
                offset, started_at = 0, self.now()
            if current is not None:
                chunk = current[offset : offset + FRAME_SAMPLES]
                offset += FRAME_SAMPLES
                if chunk.size < FRAME_SAMPLES:
                    chunk = np.pad(chunk, (0, FRAME_SAMPLES - chunk.size))
                if offset >= current.size:
                    current = None
                    if done is not None and not done.done():
                        done.set_result((started_at, self.now()))
            else:
                chunk = silence
            frame = rtc.AudioFrame(chunk.tobytes(), SAMPLE_RATE, 1, FRAME_SAMPLES)
            await source.capture_frame(frame)
            sent += 1
            # pace against the clock: real time, no drift, no burst
            delay = start + sent * 0.01 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    # --------------------------------------------------------------------- hearing
    def _on_track_subscribed(
        self,
        track: rtc.Track,
        _publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        self.subscribed.append((self.now(), participant.identity, track.sid))
        if track.kind == rtc.TrackKind.KIND_AUDIO and self.is_agent(participant):
            # one listener per agent track: a new agent (new identity, new track) is heard too
            self.agent_joins.setdefault(participant.identity, self.now())
            log.info("caller hears %s", participant.identity)
            listener = self._spawn(self._listen(track, participant.identity))
            self._listeners.setdefault(participant.identity, set()).add(listener)
        self._notify()

    async def _listen(self, track: rtc.Track, sender: str) -> None:
        stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
        max_kept = MAX_KEPT_SECONDS * 100
        try:
            async for event in stream:
                samples = np.frombuffer(event.frame.data, dtype=np.int16).copy()
                t = self.now()
                self.heard.append(
                    HeardFrame(t, frame_rms(samples), sender, samples.size / SAMPLE_RATE)
                )
                if len(self._kept) < max_kept:
                    self._kept.append((t, samples))
                self._notify()
        finally:
            await stream.aclose()

    def heard_between(
        self, t1: float, t2: float, *, min_rms: float = DEFAULT_MIN_RMS, min_seconds: float = 0.2
    ) -> bool:
        """True if ``min_seconds`` of frames louder than ``min_rms`` arrived within [t1, t2]."""
        loud = [f.seconds for f in self.heard if t1 <= f.t <= t2 and f.rms >= min_rms]
        return sum(loud) >= min_seconds

    def sound_segments(
        self, *, min_rms: float = DEFAULT_MIN_RMS, max_gap: float = 0.3
    ) -> list[tuple[float, float]]:
        """Stretches of sound (frames louder than ``min_rms``, gaps up to ``max_gap`` merged)."""
        segments: list[tuple[float, float]] = []
        for f in self.heard:
            if f.rms < min_rms:
                continue
            if segments and f.t - segments[-1][1] <= max_gap:
                segments[-1] = (segments[-1][0], f.t)
            else:
                segments.append((f.t, f.t))
        return segments

    async def wait_for_audio(
        self,
        *,
        after: float = 0.0,
        min_rms: float = DEFAULT_MIN_RMS,
        min_seconds: float = 0.2,
        sender: str | None = None,
        timeout: float,
    ) -> float:
        """Wait until ``min_seconds`` of sound arrived after time ``after`` (from ``sender``
        only, when given); return the time the first loud frame of it arrived."""

        def found() -> float | None:
            loud = [
                f
                for f in self.heard
                if f.t >= after and f.rms >= min_rms and (sender is None or f.sender == sender)
            ]
            return loud[0].t if sum(f.seconds for f in loud) >= min_seconds else None

        first: float = await self.wait_until(found, timeout=timeout, what="audio from the agent")
        return first

    def dominant_frequency(self, t1: float, t2: float) -> float | None:
        """The strongest frequency (Hz) of what was heard in [t1, t2], None if too little."""
        chunks = [s for t, s in self._kept if t1 <= t <= t2]
        if len(chunks) < 10:
            return None
        pcm = np.concatenate(chunks).astype(np.float64)
        spectrum = np.abs(np.fft.rfft(pcm * np.hanning(pcm.size)))
        freqs = np.fft.rfftfreq(pcm.size, 1 / SAMPLE_RATE)
        return float(freqs[int(np.argmax(spectrum))])

    # --------------------------------------------------------------------- data
    def _on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic != TRANSCRIPT_TOPIC:
            return
        sender = packet.participant.identity if packet.participant else ""
        try:
            message = json.loads(packet.data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            log.warning("undecodable transcript packet from %s", sender)
            return
        if not isinstance(message, dict):
            return
        record = DataMessage(self.now(), sender, TRANSCRIPT_TOPIC, message)
        if not self.is_agent(packet.participant):
            self.rejected.append(record)
            return
        whole = self._assembler.add(sender, message)
        if whole is not None:
            self.transcript.append(DataMessage(record.t, sender, TRANSCRIPT_TOPIC, whole))
            self._notify()

    def messages(self, type_: str | None = None) -> list[dict[str, Any]]:
        """The reassembled ``transcript`` messages (of ``type`` ``type_``), in arrival order."""
        return [
            m.payload for m in self.transcript if type_ is None or m.payload.get("type") == type_
        ]

    async def wait_for_message(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        timeout: float,
        what: str = "a message",
    ) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((m for m in self.messages() if predicate(m)), None)

        message: dict[str, Any] = await self.wait_until(found, timeout=timeout, what=what)
        return message

    def _on_text_stream(self, reader: rtc.TextStreamReader, sender: str) -> None:
        self._spawn(self._read_text_stream(reader, sender))

    async def _read_text_stream(self, reader: rtc.TextStreamReader, sender: str) -> None:
        text = await reader.read_all()
        info = reader.info
        self.text_streams.append(
            TextStream(self.now(), sender, info.topic, text, dict(info.attributes or {}))
        )
        self._notify()

    async def wait_for_text_stream(
        self,
        predicate: Callable[[TextStream], bool],
        *,
        timeout: float,
        what: str = "a text stream",
    ) -> TextStream:
        def found() -> TextStream | None:
            return next((s for s in self.text_streams if predicate(s)), None)

        stream: TextStream = await self.wait_until(found, timeout=timeout, what=what)
        return stream

    def _on_byte_stream(self, reader: rtc.ByteStreamReader, sender: str) -> None:
        self.byte_streams.append((self.now(), sender, reader.info.topic))
        self._spawn(self._drain_byte_stream(reader))

    async def _drain_byte_stream(self, reader: rtc.ByteStreamReader) -> None:
        async for _chunk in reader:
            pass

    # --------------------------------------------------------------------- RPC
    async def end_call(
        self, *, destination: str | None = None, payload: str = "{}", timeout: float = 15.0
    ) -> str:
        """Call ``agent.end_call`` on the agent (the newest agent present unless named)."""
        if destination is None:
            destination = (await self.wait_for_agent(timeout=timeout)).identity
        return await asyncio.wait_for(
            self.room.local_participant.perform_rpc(
                destination_identity=destination,
                method=END_CALL_METHOD,
                payload=payload,
                response_timeout=timeout,
            ),
            timeout + 1,
        )
