"""What only the turn-taking benchmark needs: the corpus (tests/audio/turns/manifest.json, or a
small stand-in spliced from tests/audio/hello_16k.wav), a caller's microphone that plays clips at
chosen moments in real time, a speaker that plays the agent's audio in real time and records what
was heard when, and a log of the session's own events.

The speaker is the piece the figures rest on. It is a normal `io.AudioOutput` at the end of the
library's output path (the session's audio output), shaped like the room's output: frames are
queued as the session captures them and *played* in 10 ms chunks against a real-time clock;
`pause()` holds the playout (the library's false-interruption pause), `clear_buffer()` drops
what was not played yet (an interruption), `playback_started` fires at the first chunk played
and `playback_finished` once a flushed segment has drained or been cleared. So "the agent's
audio started" and "the agent's audio stopped" are times at which a listener heard it start and
stop, not times at which the library handed frames over (it hands them over faster than real
time, as the TTS delivers them).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
import wave
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import AgentSession, llm
from livekit.agents.voice import io

from bench._audio_in import last_voiced_offset
from bench._common import HELLO_16K, REPO_ROOT, VOICED_ABS
from tests.support.fakes import Int16Array, read_wav_mono16

DEFAULT_CORPUS = REPO_ROOT / "tests" / "audio" / "turns"
KINDS = ("statement", "question", "pause", "continuation", "backchannel", "bargein")
AUDIBLE_RMS = 100.0
"""A 10 ms chunk of agent audio is audible above this RMS (s16 units, about -50 dBFS)."""
CHUNK_SECONDS = 0.01
GAP_SECONDS = 0.15
"""Silence inside the agent's audio longer than this is a stop (the stub's TTS signal never
falls silent inside a reply: its envelope stays above 35 %)."""
LEAD_SILENCE = 0.3
TAIL_SILENCE = 1.0


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Utterance:
    """One caller utterance of the corpus: its audio and where its speech is."""

    id: str
    kind: str
    text: str
    duration: float
    speech: tuple[tuple[float, float], ...]
    end_of_speech: float
    pause: dict[str, Any] | None
    pcm: Int16Array = field(repr=False, compare=False)

    @property
    def onset(self) -> float:
        """Seconds from the start of the WAV to the first speech."""
        return self.speech[0][0] if self.speech else 0.0

    @property
    def resumes_at(self) -> float | None:
        """Seconds from the start of the WAV to the speech after the pause (None: no pause)."""
        if self.pause is None:
            return None
        return self.speech[1][0] if len(self.speech) > 1 else float(self.pause["end"])

    @property
    def pause_seconds(self) -> float | None:
        if not self.pause:
            return None
        return float(self.pause.get("seconds") or (self.pause["end"] - self.pause["start"]))

    def transcript_parts(self) -> list[str]:
        """What the STT hears: the text split at its pause mark ("..."), one part per stretch
        of speech the caller's silence separates (the whole text when there is no pause)."""
        parts = [" ".join(part.split()) for part in self.text.split("...")]
        parts = [part for part in parts if part]
        if self.pause is None or len(parts) < 2:
            return [" ".join(" ".join(parts).split())]
        return [parts[0], " ".join(parts[1:])]

    @property
    def transcript(self) -> str:
        return " ".join(self.transcript_parts())


@dataclass(frozen=True)
class Corpus:
    path: Path
    sample_rate: int
    utterances: tuple[Utterance, ...]
    manifest: dict[str, Any]
    synthetic: bool
    manifest_sha256: str = ""

    def of_kind(self, kind: str) -> list[Utterance]:
        return [u for u in self.utterances if u.kind == kind]

    def describe(self) -> dict[str, Any]:
        counts = {kind: len(self.of_kind(kind)) for kind in KINDS}
        pauses = sorted(p for u in self.of_kind("pause") if (p := u.pause_seconds) is not None)
        return {
            "path": str(self.path),
            "synthetic_stand_in": self.synthetic,
            "generator": self.manifest.get("generator"),
            "voice": self.manifest.get("voice"),
            "manifest_sha256": self.manifest_sha256,
            "sample_rate": self.sample_rate,
            "utterances": len(self.utterances),
            "per_kind": counts,
            "pause_seconds": pauses,
        }


def load_corpus(directory: Path, *, synthetic: bool = False) -> Corpus:
    manifest_path = directory / "manifest.json"
    raw = manifest_path.read_bytes()
    manifest = json.loads(raw)
    rate = int(manifest["sample_rate"])
    utterances: list[Utterance] = []
    for entry in manifest["utterances"]:
        pcm, wav_rate = read_wav_mono16(directory / entry["file"])
        if wav_rate != rate:
            raise ValueError(f"{entry['file']}: {wav_rate} Hz, the manifest says {rate} Hz")
        speech = tuple((float(a), float(b)) for a, b in entry.get("speech") or [])
        end = entry.get("end_of_speech")
        utterances.append(
            Utterance(
                id=str(entry["id"]),
                kind=str(entry["kind"]),
                text=str(entry.get("text") or ""),
                duration=float(entry.get("duration") or len(pcm) / rate),
                speech=speech,
                end_of_speech=float(end if end is not None else last_voiced_offset(pcm, rate)),
                pause=entry.get("pause"),
                pcm=pcm,
            )
        )
    digest = hashlib.sha256(raw).hexdigest()
    return Corpus(directory, rate, tuple(utterances), manifest, synthetic, digest)


def _speech_intervals(pcm: Int16Array, rate: int, *, merge_gap: float = 0.3) -> list[list[float]]:
    """Voiced stretches (10 ms windows with a sample above VOICED_ABS), gaps under `merge_gap`
    merged (the gaps between words)."""
    window = rate // 100
    voiced = [
        bool(np.any(np.abs(pcm[i : i + window].astype(np.int32)) > VOICED_ABS))
        for i in range(0, len(pcm), window)
    ]
    spans: list[list[float]] = []
    for index, on in enumerate(voiced):
        if not on:
            continue
        start, end = index * window / rate, min(len(pcm), (index + 1) * window) / rate
        if spans and start - spans[-1][1] < merge_gap:
            spans[-1][1] = end
        else:
            spans.append([start, end])
    return [[round(a, 3), round(b, 3)] for a, b in spans]


def make_synthetic_corpus(directory: Path) -> Path:
    """A small stand-in corpus, spliced from tests/audio/hello_16k.wav (one speaker, 4.7 s),
    in the manifest shape of bench/make_turn_corpus.py: for developing the bench before the
    real corpus exists, and for `--smoke` when it does not. Its transcripts are made up."""
    data, rate = read_wav_mono16(HELLO_16K)

    def cut(a: float, b: float) -> Int16Array:
        return data[round(a * rate) : round(b * rate)]

    def silence(seconds: float) -> Int16Array:
        return np.zeros(round(seconds * rate), dtype=np.int16)

    head, rest, whole = cut(0.0, 1.15), cut(1.18, 4.36), cut(0.0, 4.36)
    specs: list[tuple[str, str, str, list[Int16Array], dict[str, Any] | None]] = [
        (
            "statement_whole",
            "statement",
            "Hi, I am here to listen, so tell me what is going on.",
            [whole],
            None,
        ),
        (
            "statement_rest",
            "statement",
            "I am here to listen, tell me what is going on.",
            [rest],
            None,
        ),
        (
            "question_whole",
            "question",
            "Hi, can you tell me what is going on with you today?",
            [whole],
            None,
        ),
    ]
    for seconds in (0.6, 1.2, 2.0):
        tag = f"{seconds:.1f}".replace(".", "p")
        specs.append(
            (
                f"pause_here_{tag}",
                "pause",
                "Hi, I am here ... to listen, so tell me what is going on.",
                [head, silence(seconds), rest],
                {"after": "here", "seconds": seconds},
            )
        )
    specs += [
        ("backchannel_hi", "backchannel", "Mm-hm.", [cut(0.0, 0.5)], None),
        ("bargein_rest", "bargein", "Wait, can I say something about that first?", [rest], None),
    ]
    directory.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    for ident, kind, text, pieces, pause in specs:
        pcm = np.concatenate([silence(LEAD_SILENCE), *pieces, silence(TAIL_SILENCE)])
        with wave.open(str(directory / f"{ident}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm.astype("<i2").tobytes())
        speech = _speech_intervals(pcm, rate)
        if pause is not None:
            start = round(LEAD_SILENCE + len(head) / rate, 3)
            pause = {**pause, "start": start, "end": round(start + pause["seconds"], 3)}
        entries.append(
            {
                "id": ident,
                "file": f"{ident}.wav",
                "kind": kind,
                "text": text,
                "duration": round(len(pcm) / rate, 3),
                "speech": speech,
                "pause": pause,
                "end_of_speech": round(last_voiced_offset(pcm, rate), 3),
            }
        )
    manifest = {
        "sample_rate": rate,
        "voice": "tests/audio/hello_16k.wav (spliced)",
        "generator": "bench/_turns.py make_synthetic_corpus (stand-in)",
        "utterances": entries,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return directory


# --------------------------------------------------------------------------- the caller


@dataclass
class _Clip:
    pcm: Int16Array
    at: float | None
    started: asyncio.Future[float]
    pos: int = 0


class CallerMic(io.AudioInput):
    """The caller's microphone: silence, and clips played when asked (`play`), in real time in
    `frame_ms` frames paced against an absolute clock. As from a real microphone (the room's
    input included), a frame is handed to the session once its last sample is due, so a longer
    frame holds the audio back longer. A clip starts on the first frame whose first sample is
    due at or after its `at` (`time.time()`); `play` returns a future of the `time.time()` at
    which that first sample was due, the origin of every offset in the clip."""

    def __init__(self, sample_rate: int, *, frame_ms: int = 10) -> None:
        super().__init__(label="CallerMic")
        self.sample_rate = sample_rate
        self._spf = sample_rate * frame_ms // 1000
        self._interval = frame_ms / 1000
        self._silence: Int16Array = np.zeros(self._spf, dtype=np.int16)
        self._queue: deque[_Clip] = deque()
        self._current: _Clip | None = None
        self._t0: float | None = None
        self._sent = 0
        self.lateness: list[float] = []

    def play(self, pcm: Int16Array, *, at: float | None = None) -> asyncio.Future[float]:
        started: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._queue.append(_Clip(pcm=pcm, at=at, started=started))
        return started

    @property
    def playing(self) -> bool:
        return self._current is not None or bool(self._queue)

    async def __anext__(self) -> rtc.AudioFrame:
        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = now
        delay = self._t0 + (self._sent + 1) * self._interval - now
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            self.lateness.append(-delay)
        self._sent += 1
        if self._current is None and self._queue:
            head = self._queue[0]
            first_sample_at = time.time() - self._interval
            if head.at is None or first_sample_at >= head.at - self._interval / 2:
                self._current = self._queue.popleft()
                if not self._current.started.done():
                    self._current.started.set_result(first_sample_at)
        chunk = self._silence
        if self._current is not None:
            clip = self._current
            chunk = clip.pcm[clip.pos : clip.pos + self._spf]
            clip.pos += self._spf
            if len(chunk) < self._spf:
                chunk = np.pad(chunk, (0, self._spf - len(chunk)))
            if clip.pos >= len(clip.pcm):
                self._current = None
        return rtc.AudioFrame(
            data=chunk.tobytes(),
            sample_rate=self.sample_rate,
            num_channels=1,
            samples_per_channel=self._spf,
        )

    def late_stats(self) -> dict[str, Any]:
        values = self.lateness or [0.0]
        return {
            "frames": self._sent,
            "late_frames": len(self.lateness),
            "max_ms": round(max(values) * 1000, 1),
            "over_50ms": sum(1 for v in self.lateness if v > 0.05),
        }


# --------------------------------------------------------------------------- the speaker


@dataclass
class _Segment:
    index: int
    chunks: deque[tuple[float, bool]] = field(default_factory=deque)
    captured: float = 0.0
    played: float = 0.0
    flushed: bool = False
    cleared: bool = False
    first_played_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True)
class Heard:
    """A 10 ms chunk of audible agent audio, as played (`time.time()`)."""

    start: float
    end: float
    segment: int


@dataclass(frozen=True)
class Stop:
    """How the agent's audio went on after a moment (the caller's speech onset)."""

    speaking: bool
    """The agent was audible at (or within GAP_SECONDS of) the moment."""
    stopped_at: float | None = None
    """End of the last chunk heard before a silence (None: it played to its natural end)."""
    natural_end_at: float | None = None
    """When the segment ended by itself, played whole (None if it was stopped)."""
    resumed_at: float | None = None
    """First chunk of the same segment heard again after the stop (the false-interruption
    resume), if any."""
    next_segment_at: float | None = None
    """First chunk of a later segment (a new reply) after the stop, if any."""
    segment: int | None = None


class SpeakerOutput(io.AudioOutput):
    """The session's audio output, played in real time like a speaker (module docstring)."""

    def __init__(self) -> None:
        super().__init__(
            label="SpeakerOutput",
            capabilities=io.AudioOutputCapabilities(pause=True),
            sample_rate=None,
        )
        self.segments: list[_Segment] = []
        self.heard: list[Heard] = []
        self.events: list[tuple[float, str, int | None]] = []
        """(time.time(), "start" | "finish" | "pause" | "resume" | "clear", segment)."""
        self._capturing: _Segment | None = None
        self._pending: deque[_Segment] = deque()
        self._paused = False
        self._wake_event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- the library's side

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        segment = self._capturing
        if segment is None:
            segment = _Segment(index=len(self.segments))
            self.segments.append(segment)
            self._pending.append(segment)
            self._capturing = segment
        if segment.cleared:
            return
        samples = np.frombuffer(frame.data, dtype=np.int16)
        if frame.num_channels > 1:
            samples = samples.reshape(-1, frame.num_channels)[:, 0]
        step = max(1, round(frame.sample_rate * CHUNK_SECONDS))
        for offset in range(0, len(samples), step):
            part = samples[offset : offset + step].astype(np.float64)
            audible = bool(part.size) and math.sqrt(float(np.mean(part * part))) > AUDIBLE_RMS
            segment.chunks.append((part.size / frame.sample_rate, audible))
        segment.captured += frame.duration
        if self._task is None:
            self._task = asyncio.create_task(self._play(), name="SpeakerOutput.play")
        self._wake()

    def flush(self) -> None:
        super().flush()
        segment, self._capturing = self._capturing, None
        if segment is not None:
            segment.flushed = True
            self._wake()

    def clear_buffer(self) -> None:
        unfinished = [s for s in self.segments if s.finished_at is None and not s.cleared]
        for segment in unfinished:
            segment.cleared = True
            segment.chunks.clear()
        if unfinished:
            self.events.append((time.time(), "clear", unfinished[0].index))
        self._wake()

    def pause(self) -> None:
        super().pause()
        if not self._paused:
            self._paused = True
            self.events.append((time.time(), "pause", self._playing_index()))
            self._wake()

    def resume(self) -> None:
        super().resume()
        if self._paused:
            self._paused = False
            self.events.append((time.time(), "resume", self._playing_index()))
            self._wake()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # ---------------------------------------------------------------- playout

    def _playing_index(self) -> int | None:
        return self._pending[0].index if self._pending else None

    def _wake(self) -> None:
        self._wake_event.set()
        self._wake_event = asyncio.Event()

    async def _wait(self, timeout: float | None) -> None:
        event = self._wake_event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    def _finish(self, segment: _Segment) -> None:
        now = time.time()
        segment.finished_at = now
        self.events.append((now, "finish", segment.index))
        self.on_playback_finished(playback_position=segment.played, interrupted=segment.cleared)

    async def _play(self) -> None:
        clock: float | None = None  # perf_counter() at which the next chunk is due
        offset = 0.0  # time.time() - perf_counter()
        while True:
            if not self._pending:
                clock = None
                await self._wait(None)
                continue
            segment = self._pending[0]
            if segment.cleared or (segment.flushed and not segment.chunks):
                if segment.flushed:  # drained or cleared, and the library is done with it
                    self._pending.popleft()
                    self._finish(segment)
                else:
                    await self._wait(None)
                clock = None
                continue
            if self._paused or not segment.chunks:
                clock = None
                await self._wait(None)
                continue
            duration, audible = segment.chunks.popleft()
            now = time.perf_counter()
            if clock is None or clock < now - 0.05:
                clock, offset = now, time.time() - now  # (re)start after silence or a stall
            start = clock + offset
            if segment.first_played_at is None:
                segment.first_played_at = start
                self.events.append((start, "start", segment.index))
                self.on_playback_started(created_at=start)
            if audible:
                self.heard.append(Heard(start, start + duration, segment.index))
            segment.played += duration
            clock += duration
            while (delay := clock - time.perf_counter()) > 0:
                if self._paused or segment.cleared:
                    break
                await self._wait(delay)

    # ---------------------------------------------------------------- what was heard

    @property
    def idle(self) -> bool:
        """Nothing playing, queued or being captured."""
        return self._capturing is None and not self._pending

    def first_heard_after(self, moment: float, until: float = math.inf) -> Heard | None:
        return next((h for h in self.heard if moment <= h.start < until), None)

    def heard_between(self, start: float, end: float) -> list[Heard]:
        return [h for h in self.heard if h.end > start and h.start < end]

    def runs(self, start: float, end: float) -> list[tuple[float, float, int]]:
        """Stretches of continuous audible agent audio overlapping [start, end)."""
        result: list[list[float]] = []
        for h in self.heard_between(start, end):
            if result and h.segment == result[-1][2] and h.start - result[-1][1] <= GAP_SECONDS:
                result[-1][1] = h.end
            else:
                result.append([h.start, h.end, float(h.segment)])
        return [(a, b, int(s)) for a, b, s in result]

    def stop_after(self, moment: float) -> Stop:
        """Did the agent's audio audible at `moment` stop, and what came after."""
        chunks = [h for h in self.heard if h.end > moment - GAP_SECONDS]
        if not chunks or chunks[0].start > moment + GAP_SECONDS:
            return Stop(speaking=False)
        current = chunks[0]
        following: Heard | None = None
        for chunk in chunks[1:]:
            if chunk.segment != current.segment or chunk.start - current.end > GAP_SECONDS:
                following = chunk
                break
            current = chunk
        segment = self.segments[current.segment]
        whole = (
            following is None
            and not segment.cleared
            and segment.finished_at is not None
            and not segment.chunks
        )
        if whole:
            return Stop(speaking=True, natural_end_at=current.end, segment=segment.index)
        resumed = following if following and following.segment == current.segment else None
        later = next(
            (h.start for h in self.heard if h.start > current.end and h.segment > segment.index),
            None,
        )
        return Stop(
            speaking=True,
            stopped_at=current.end,
            resumed_at=resumed.start if resumed else None,
            next_segment_at=later,
            segment=segment.index,
        )

    def events_between(self, start: float, end: float) -> list[tuple[float, str, int | None]]:
        return [e for e in self.events if start <= e[0] < end]


# --------------------------------------------------------------------------- the session's side


@dataclass(frozen=True)
class Message:
    at: float
    role: str
    text: str
    interrupted: bool
    metrics: dict[str, Any]


class SessionLog:
    """The session's public events, timestamped on arrival (`time.time()`)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.finals: list[tuple[float, str]] = []
        self.agent_states: list[tuple[float, str]] = []
        self.user_states: list[tuple[float, str]] = []
        self.false_interruptions: list[tuple[float, bool]] = []

    def attach(self, session: AgentSession[Any]) -> None:
        session.on("conversation_item_added", self._on_item)
        session.on("user_input_transcribed", self._on_transcribed)
        session.on("agent_state_changed", self._on_agent_state)
        session.on("user_state_changed", self._on_user_state)
        session.on("agent_false_interruption", self._on_false_interruption)

    def _on_item(self, event: Any) -> None:
        item = event.item
        if not isinstance(item, llm.ChatMessage) or item.role not in ("user", "assistant"):
            return
        metrics = {k: v for k, v in dict(item.metrics or {}).items() if isinstance(v, int | float)}
        self.messages.append(
            Message(time.time(), item.role, item.text_content or "", item.interrupted, metrics)
        )

    def _on_transcribed(self, event: Any) -> None:
        if getattr(event, "is_final", False) and getattr(event, "transcript", ""):
            self.finals.append((time.time(), str(event.transcript)))

    def _on_agent_state(self, event: Any) -> None:
        self.agent_states.append((time.time(), str(event.new_state)))

    def _on_user_state(self, event: Any) -> None:
        self.user_states.append((time.time(), str(event.new_state)))

    def _on_false_interruption(self, event: Any) -> None:
        self.false_interruptions.append((time.time(), bool(getattr(event, "resumed", False))))

    def role_between(self, role: str, start: float, end: float) -> list[Message]:
        return [m for m in self.messages if m.role == role and start <= m.at < end]

    def last(self, role: str) -> Message | None:
        return next((m for m in reversed(self.messages) if m.role == role), None)


class LibraryLogProbe(logging.Handler):
    """The library's debug records that carry what its public events do not: each end-of-turn
    prediction ("eot prediction": probability, threshold, the delay chosen) and each dynamic
    endpointing update ("min endpointing delay updated"). Installed on `livekit.agents` at DEBUG
    with the root handlers kept at WARNING, so nothing is printed."""

    MESSAGES = ("eot prediction", "min endpointing delay updated")

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.predictions: list[dict[str, Any]] = []
        self.delay_updates: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            if record.msg == "eot prediction":
                self.predictions.append(
                    {
                        "at": record.created,
                        "probability": getattr(record, "probability", None),
                        "threshold": getattr(record, "unlikely_threshold", None),
                        "endpointing_delay": getattr(record, "endpointing_delay", None),
                        "trigger": getattr(record, "trigger", None),
                    }
                )
            elif str(record.msg).startswith("min endpointing delay updated"):
                self.delay_updates.append(
                    {
                        "at": record.created,
                        "min_delay": getattr(record, "min_delay", None),
                        "reason": getattr(record, "reason", None),
                        "pause": getattr(record, "pause", None),
                    }
                )

    def install(self) -> None:
        for handler in logging.getLogger().handlers:
            if handler.level < logging.WARNING:
                handler.setLevel(logging.WARNING)
        library = logging.getLogger("livekit.agents")
        library.setLevel(logging.DEBUG)
        library.addHandler(self)


def ms(value: float | None, origin: float) -> float | None:
    """`value - origin` in milliseconds, rounded (None stays None)."""
    return None if value is None else round((value - origin) * 1000, 1)
