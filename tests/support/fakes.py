"""Offline fakes for driving a livekit-agents 1.8.9 ``AgentSession`` in tests.

Nothing here touches the network.

- :class:`FakeLLM`: an ``llm.LLM`` streaming a fixed or computed reply word by word (or tool
  calls), recording every call, with optional per-attempt failure injection.
- :class:`FakeSTT`: a batch ``stt.STT`` returning fixed transcripts. The session wraps it in
  ``stt.StreamAdapter`` with its VAD, so end of speech comes from the (real) VAD.
- :class:`FakeStreamingSTT`: a streaming ``stt.STT`` that emits ``INTERIM_TRANSCRIPT`` events then
  a ``FINAL_TRANSCRIPT``, driven by its own VAD stream over the pushed audio and/or by explicit
  calls (:meth:`FakeStreamingSTT.emit_interim`, :meth:`FakeStreamingSTT.emit_final`).
- :class:`FakeTTS`: a batch ``tts.TTS`` emitting a quiet tone whose length follows the text.
- :class:`WavAudioInput`: an ``io.AudioInput`` playing a WAV in real time, like a microphone.
- :class:`CaptureAudioOutput`: an ``io.AudioOutput`` recording frames and simulating playout.
- :class:`CaptureTextOutput`: an ``io.TextOutput`` recording the agent's transcript segments.
- :class:`CaptureRoom`: the parts of ``rtc.Room`` the call's transcript wiring uses (data packets
  kept, RPC handlers registered by name, a settable connection state).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
import wave
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Never, TypeAlias, cast

import numpy as np
import numpy.typing as npt
from livekit import rtc
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    APIStatusError,
    LanguageCode,
    NotGivenOr,
    llm,
    stt,
    tts,
    utils,
    vad,
)
from livekit.agents.voice import io

__all__ = [
    "CaptureAudioOutput",
    "CaptureRoom",
    "CaptureTextOutput",
    "FakeLLM",
    "FakeSTT",
    "FakeStreamingSTT",
    "FakeTTS",
    "LLMCall",
    "LLMReply",
    "PlayoutSegment",
    "WavAudioInput",
    "echo_reply",
    "last_user_text",
    "read_wav_mono16",
    "tone_pcm16",
]

Int16Array: TypeAlias = npt.NDArray[np.int16]


# --------------------------------------------------------------------------- helpers


def read_wav_mono16(path: str | os.PathLike[str]) -> tuple[Int16Array, int]:
    """Read a 16-bit PCM WAV as mono int16 samples (first channel) and its sample rate."""
    with wave.open(os.fspath(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
        rate, channels = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    if channels > 1:
        data = data.reshape(-1, channels)[:, 0].copy()
    return data, rate


def tone_pcm16(
    duration: float,
    *,
    sample_rate: int = 24000,
    frequency: float = 550.0,
    amplitude: float = 0.05,
    fade: float = 0.005,
) -> Int16Array:
    """A sine tone as int16 samples, faded in and out over ``fade`` seconds to avoid clicks.

    ``amplitude`` is a fraction of full scale (0 gives digital silence).
    """
    n = max(0, round(duration * sample_rate))
    t = np.arange(n, dtype=np.float64) / sample_rate
    signal = amplitude * np.sin(2.0 * math.pi * frequency * t)
    n_fade = min(n // 2, round(fade * sample_rate))
    if n_fade > 0:
        ramp = np.linspace(0.0, 1.0, n_fade, dtype=np.float64)
        signal[:n_fade] *= ramp
        signal[n - n_fade :] *= ramp[::-1]
    out: Int16Array = np.clip(signal * 32767.0, -32768, 32767).astype(np.int16)
    return out


def last_user_text(chat_ctx: llm.ChatContext) -> str:
    """The text of the last user message in ``chat_ctx`` ("" if there is none)."""
    for item in reversed(chat_ctx.items):
        if item.type == "message" and item.role == "user":
            return item.text_content or ""
    return ""


def echo_reply(chat_ctx: llm.ChatContext) -> str:
    """A reply callable for :class:`FakeLLM`: ``"You said: <last user text>"``."""
    return f"You said: {last_user_text(chat_ctx)}"


class _FailureQueue:
    """Errors to raise on the next attempts, one per attempt, then recover."""

    def __init__(self) -> None:
        self._errors: deque[Exception] = deque()

    def add(self, count: int, error: Exception) -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        self._errors.extend(error for _ in range(count))

    def pop(self) -> Exception | None:
        return self._errors.popleft() if self._errors else None

    def __len__(self) -> int:
        return len(self._errors)


def _injected_error(what: str) -> APIStatusError:
    return APIStatusError(f"injected {what} failure", status_code=500, retryable=True)


# --------------------------------------------------------------------------- LLM

LLMReply: TypeAlias = str | list[llm.FunctionToolCall]
"""What a :class:`FakeLLM` answers with: text, or tool calls (the agent then runs the tools)."""


@dataclass
class LLMCall:
    """One ``FakeLLM.chat()`` call as the framework made it."""

    chat_ctx: llm.ChatContext
    """A copy of the context sent."""
    tools: list[llm.Tool]
    at: float
    """``time.time()`` of the call."""
    reply: LLMReply
    """What the fake answered (or was going to answer, if an attempt failed)."""

    @property
    def user_text(self) -> str:
        """The last user message in the context sent."""
        return last_user_text(self.chat_ctx)

    @property
    def tool_names(self) -> list[str]:
        names: list[str] = []
        for tool in self.tools:
            info = getattr(tool, "info", None)
            name = getattr(info, "name", None) or getattr(tool, "id", None)
            if isinstance(name, str):
                names.append(name)
        return names


class FakeLLM(llm.LLM[Never]):
    """An ``llm.LLM`` streaming a reply word by word, then a usage chunk.

    ``reply`` is a ``str``, a list of ``llm.FunctionToolCall`` (to make the agent call tools), or a
    callable receiving the ``ChatContext`` and returning either. :func:`echo_reply` answers
    ``"You said: ..."``. Use ``token_delay=0`` and ``first_token_delay=0`` for zero latency.

    :meth:`fail_next` makes the next attempts raise (one error per attempt); the library retries
    inside a single ``chat()`` call according to its ``conn_options.max_retry``.
    """

    def __init__(
        self,
        reply: LLMReply | Callable[[llm.ChatContext], LLMReply] = "Sure, I can help with that.",
        *,
        token_delay: float = 0.005,
        first_token_delay: float = 0.0,
        model: str = "fake-llm",
    ) -> None:
        super().__init__()
        self._reply = reply
        self._token_delay = token_delay
        self._first_token_delay = first_token_delay
        self._model = model
        self._failures = _FailureQueue()
        self.calls: list[LLMCall] = []
        self.attempts = 0
        """Number of stream attempts (``_run`` calls), failed ones included."""

    @property
    def model(self) -> str:
        return self._model

    @property
    def provider(self) -> str:
        return "fake"

    def fail_next(self, count: int = 1, *, error: Exception | None = None) -> None:
        """Make the next ``count`` attempts raise ``error`` (default: a retryable HTTP 500)."""
        self._failures.add(count, error if error is not None else _injected_error("LLM"))

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        reply = self._reply(chat_ctx) if callable(self._reply) else self._reply
        tool_list = list(tools or [])
        self.calls.append(
            LLMCall(chat_ctx=chat_ctx.copy(), tools=tool_list, at=time.time(), reply=reply)
        )
        return _FakeLLMStream(
            self, chat_ctx=chat_ctx, tools=tool_list, conn_options=conn_options, reply=reply
        )


class _FakeLLMStream(llm.LLMStream):
    def __init__(
        self,
        fake: FakeLLM,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
        reply: LLMReply,
    ) -> None:
        super().__init__(fake, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._fake = fake
        self._reply = reply

    async def _run(self) -> None:
        fake = self._fake
        fake.attempts += 1
        request_id = utils.shortuuid("fake-llm-")
        if fake._first_token_delay > 0:
            await asyncio.sleep(fake._first_token_delay)
        error = fake._failures.pop()
        if error is not None:
            raise error

        if isinstance(self._reply, list):
            self._event_ch.send_nowait(
                llm.ChatChunk(
                    id=request_id,
                    delta=llm.ChoiceDelta(role="assistant", tool_calls=list(self._reply)),
                )
            )
            completion_tokens = len(self._reply)
        else:
            words = self._reply.split(" ")
            for i, word in enumerate(words):
                if i > 0 and fake._token_delay > 0:
                    await asyncio.sleep(fake._token_delay)
                self._event_ch.send_nowait(
                    llm.ChatChunk(
                        id=request_id,
                        delta=llm.ChoiceDelta(
                            role="assistant", content=word if i == 0 else " " + word
                        ),
                    )
                )
            completion_tokens = len(words)

        prompt_tokens = 10
        self._event_ch.send_nowait(
            llm.ChatChunk(
                id=request_id,
                usage=llm.CompletionUsage(
                    completion_tokens=completion_tokens,
                    prompt_tokens=prompt_tokens,
                    total_tokens=prompt_tokens + completion_tokens,
                ),
            )
        )


# --------------------------------------------------------------------------- STT (batch)


class _Transcripts:
    """The i-th utterance gets the i-th transcript; the last one repeats."""

    def __init__(self, transcripts: str | Sequence[str]) -> None:
        items = [transcripts] if isinstance(transcripts, str) else list(transcripts)
        if not items:
            raise ValueError("at least one transcript is required")
        self._items = items
        self._next = 0

    def take(self) -> str:
        text = self._items[min(self._next, len(self._items) - 1)]
        self._next += 1
        return text


class FakeSTT(stt.STT[Never]):
    """A batch (non-streaming) STT returning fixed transcripts.

    ``AgentSession`` wraps it in ``stt.StreamAdapter`` with the session VAD. ``transcripts`` is one
    string, or a sequence used in order, one per recognized utterance (the last one repeats).
    """

    def __init__(
        self,
        transcripts: str | Sequence[str] = "Hello, I would like to book a table.",
        *,
        delay: float = 0.0,
        language: str = "en",
    ) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._transcripts = _Transcripts(transcripts)
        self._delay = delay
        self._language = LanguageCode(language)
        self._failures = _FailureQueue()
        self.recognize_calls: list[float] = []
        """Seconds of audio received per recognition attempt."""

    @property
    def model(self) -> str:
        return "fake-stt"

    @property
    def provider(self) -> str:
        return "fake"

    def fail_next(self, count: int = 1, *, error: Exception | None = None) -> None:
        """Make the next ``count`` recognitions raise ``error`` (default: a retryable HTTP 500)."""
        self._failures.add(count, error if error is not None else _injected_error("STT"))

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        self.recognize_calls.append(utils.audio.calculate_audio_duration(buffer))
        if self._delay > 0:
            await asyncio.sleep(self._delay)
        error = self._failures.pop()
        if error is not None:
            raise error
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=utils.shortuuid("fake-stt-"),
            alternatives=[
                stt.SpeechData(
                    language=self._language, text=self._transcripts.take(), confidence=1.0
                )
            ],
        )


# --------------------------------------------------------------------------- STT (streaming)


class FakeStreamingSTT(stt.STT[Never]):
    """A streaming STT with interim results, for testing what is done with interim transcripts.

    Two ways to drive it, usable together:

    - ``vad=`` given: each stream runs its own stream of that VAD over the pushed audio. On start
      of speech it sends ``START_OF_SPEECH``; while speech goes on, every ``interim_interval``
      seconds of speech an ``INTERIM_TRANSCRIPT`` with a growing prefix of the utterance's
      transcript; on end of speech ``END_OF_SPEECH``, then ``FINAL_TRANSCRIPT`` with the whole
      transcript, then ``RECOGNITION_USAGE``.
    - explicit calls: :meth:`emit_interim` / :meth:`emit_final` (and :meth:`emit`) send an event on
      every open stream, whatever the audio.

    ``transcripts`` is one string or a sequence used in order, one per VAD utterance.
    ``emitted`` records every event sent, on any stream.
    """

    def __init__(
        self,
        transcripts: str | Sequence[str] = "Hello, I would like to book a table.",
        *,
        vad: vad.VAD | None = None,
        interim_interval: float = 0.3,
        language: str = "en",
    ) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=True, interim_results=True))
        if interim_interval <= 0:
            raise ValueError("interim_interval must be > 0")
        self._transcripts = _Transcripts(transcripts)
        self._vad = vad
        self._interim_interval = interim_interval
        self._language = LanguageCode(language)
        self.streams: list[FakeSpeechStream] = []
        """Every stream opened, closed ones included."""
        self.emitted: list[stt.SpeechEvent] = []

    @property
    def model(self) -> str:
        return "fake-streaming-stt"

    @property
    def provider(self) -> str:
        return "fake"

    @property
    def open_streams(self) -> list[FakeSpeechStream]:
        return [s for s in self.streams if not s.closed]

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[self._speech_data(self._transcripts.take())],
        )

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> FakeSpeechStream:
        stream = FakeSpeechStream(stt=self, conn_options=conn_options)
        self.streams.append(stream)
        return stream

    def emit_event(self, event: stt.SpeechEvent) -> None:
        """Send ``event`` on every open stream.

        (Not named ``emit``: that is the ``EventEmitter`` method the library uses for metrics.)
        """
        for stream in self.open_streams:
            stream.send_event(event)

    def emit_interim(self, text: str) -> None:
        """Send an ``INTERIM_TRANSCRIPT`` with ``text`` on every open stream."""
        self.emit_event(self._interim_event(text))

    def emit_final(self, text: str) -> None:
        """Send a ``FINAL_TRANSCRIPT`` with ``text`` on every open stream."""
        self.emit_event(
            stt.SpeechEvent(
                type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                alternatives=[self._speech_data(text)],
            )
        )

    def _interim_event(self, text: str) -> stt.SpeechEvent:
        return stt.SpeechEvent(
            type=stt.SpeechEventType.INTERIM_TRANSCRIPT,
            alternatives=[self._speech_data(text, confidence=0.5)],
        )

    def _speech_data(self, text: str, *, confidence: float = 1.0) -> stt.SpeechData:
        return stt.SpeechData(language=self._language, text=text, confidence=confidence)

    def _next_transcript(self) -> str:
        return self._transcripts.take()

    async def aclose(self) -> None:
        for stream in self.open_streams:
            await stream.aclose()


class FakeSpeechStream(stt.RecognizeStream):
    """The stream of a :class:`FakeStreamingSTT` (see there)."""

    def __init__(self, *, stt: FakeStreamingSTT, conn_options: APIConnectOptions) -> None:
        super().__init__(stt=stt, conn_options=conn_options)
        self._fake = stt
        self.audio_duration = 0.0
        """Seconds of audio pushed so far."""

    @property
    def closed(self) -> bool:
        return self._event_ch.closed

    def send_event(self, event: stt.SpeechEvent) -> None:
        if self._event_ch.closed:
            return
        if not event.request_id:
            event.request_id = utils.shortuuid("fake-stt-")
        self._fake.emitted.append(event)
        self._event_ch.send_nowait(event)

    async def _run(self) -> None:
        fake_vad = self._fake._vad
        vad_stream = fake_vad.stream() if fake_vad is not None else None

        async def forward_input() -> None:
            async for item in self._input_ch:
                if isinstance(item, self._FlushSentinel):
                    if vad_stream is not None:
                        vad_stream.flush()
                    continue
                self.audio_duration += item.duration
                if vad_stream is not None:
                    vad_stream.push_frame(item)
            if vad_stream is not None:
                vad_stream.end_input()

        async def recognize(vad_stream: vad.VADStream) -> None:
            words: list[str] = []
            transcript = ""
            interims_sent = 0
            async for ev in vad_stream:
                if ev.type == vad.VADEventType.START_OF_SPEECH:
                    transcript = self._fake._next_transcript()
                    words = transcript.split()
                    interims_sent = 0
                    self.send_event(stt.SpeechEvent(type=stt.SpeechEventType.START_OF_SPEECH))
                elif ev.type == vad.VADEventType.INFERENCE_DONE and ev.speaking and words:
                    due = int(ev.speech_duration // self._fake._interim_interval)
                    if due > interims_sent:
                        interims_sent = due
                        prefix = " ".join(words[: min(len(words), due)])
                        self.send_event(self._fake._interim_event(prefix))
                elif ev.type == vad.VADEventType.END_OF_SPEECH:
                    if not words:  # a START_OF_SPEECH was missed
                        transcript = self._fake._next_transcript()
                    self.send_event(
                        stt.SpeechEvent(
                            type=stt.SpeechEventType.END_OF_SPEECH,
                            speech_end_time=time.time() - ev.silence_duration,
                        )
                    )
                    self.send_event(
                        stt.SpeechEvent(
                            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                            alternatives=[self._fake._speech_data(transcript)],
                        )
                    )
                    self.send_event(
                        stt.SpeechEvent(
                            type=stt.SpeechEventType.RECOGNITION_USAGE,
                            recognition_usage=stt.RecognitionUsage(
                                audio_duration=ev.speech_duration
                            ),
                        )
                    )
                    words, transcript = [], ""

        tasks = [asyncio.create_task(forward_input(), name="FakeSpeechStream.forward_input")]
        if vad_stream is not None:
            tasks.append(
                asyncio.create_task(recognize(vad_stream), name="FakeSpeechStream.recognize")
            )
        try:
            await asyncio.gather(*tasks)
        finally:
            await utils.aio.cancel_and_wait(*tasks)
            if vad_stream is not None:
                await vad_stream.aclose()


# --------------------------------------------------------------------------- TTS


class FakeTTS(tts.TTS[Never]):
    """A batch TTS emitting a quiet tone (default 550 Hz, 5% of full scale) at 24 kHz.

    The duration is ``len(text) * sec_per_char``, clamped to ``[min_duration, max_duration]``.
    ``amplitude=0`` gives digital silence. ``inputs`` records every text synthesized.
    """

    def __init__(
        self,
        *,
        sample_rate: int = 24000,
        sec_per_char: float = 0.02,
        min_duration: float = 0.2,
        max_duration: float = 5.0,
        frequency: float = 550.0,
        amplitude: float = 0.05,
        delay: float = 0.0,
        chunk_duration: float = 0.05,
    ) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=sample_rate,
            num_channels=1,
        )
        self._sec_per_char = sec_per_char
        self._min_duration = min_duration
        self._max_duration = max_duration
        self._frequency = frequency
        self._amplitude = amplitude
        self._delay = delay
        self._chunk_duration = chunk_duration
        self._failures = _FailureQueue()
        self.inputs: list[str] = []

    @property
    def model(self) -> str:
        return "fake-tts"

    @property
    def provider(self) -> str:
        return "fake"

    def duration_for(self, text: str) -> float:
        """Seconds of audio synthesized for ``text``."""
        return min(max(len(text) * self._sec_per_char, self._min_duration), self._max_duration)

    def fail_next(self, count: int = 1, *, error: Exception | None = None) -> None:
        """Make the next ``count`` syntheses raise ``error`` (default: a retryable HTTP 500)."""
        self._failures.add(count, error if error is not None else _injected_error("TTS"))

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        self.inputs.append(text)
        return _FakeChunkedStream(fake=self, input_text=text, conn_options=conn_options)


class _FakeChunkedStream(tts.ChunkedStream):
    def __init__(self, *, fake: FakeTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=fake, input_text=input_text, conn_options=conn_options)
        self._fake = fake

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        fake = self._fake
        if fake._delay > 0:
            await asyncio.sleep(fake._delay)
        error = fake._failures.pop()
        if error is not None:
            raise error
        output_emitter.initialize(
            request_id=utils.shortuuid("fake-tts-"),
            sample_rate=fake.sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
        )
        pcm = tone_pcm16(
            fake.duration_for(self.input_text),
            sample_rate=fake.sample_rate,
            frequency=fake._frequency,
            amplitude=fake._amplitude,
        )
        step = max(1, round(fake._chunk_duration * fake.sample_rate))
        for offset in range(0, len(pcm), step):
            output_emitter.push(pcm[offset : offset + step].tobytes())
        output_emitter.flush()


# --------------------------------------------------------------------------- audio input


class WavAudioInput(io.AudioInput):
    """Plays a WAV into an ``AgentSession`` at real-time pace, like a microphone.

    ``lead_silence`` seconds of silence, the WAV, ``tail_silence`` seconds of silence, then
    silence forever (or the end of input if ``end_after_tail``). Frames are ``frame_ms`` long and
    paced against a monotonic clock; ``speed`` > 1 plays faster than real time.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lead_silence: float = 0.5,
        tail_silence: float = 3.0,
        speed: float = 1.0,
        frame_ms: int = 10,
        end_after_tail: bool = False,
    ) -> None:
        super().__init__(label="WavAudioInput")
        if speed <= 0:
            raise ValueError("speed must be > 0")
        data, rate = read_wav_mono16(path)
        self.sample_rate = rate
        self.wav_duration = len(data) / rate
        self.speech_end_offset = lead_silence + self.wav_duration
        """Seconds from the first frame to the end of the WAV content."""
        self._samples_per_frame = rate * frame_ms // 1000
        lead = np.zeros(round(lead_silence * rate), dtype=np.int16)
        tail = np.zeros(round(tail_silence * rate), dtype=np.int16)
        self._pcm: Int16Array = np.concatenate([lead, data, tail])
        self._pos = 0
        self._speed = speed
        self._frame_interval = frame_ms / 1000 / speed
        self._end_after_tail = end_after_tail
        self._t0: float | None = None
        self._frames_sent = 0
        self.started_at: float | None = None
        """``time.time()`` when the first frame was delivered."""
        self.finished_at: float | None = None
        """``time.time()`` when the last frame of WAV + tail silence was delivered."""

    @property
    def speech_end_at(self) -> float | None:
        """``time.time()`` at which the WAV content ended (None before the first frame)."""
        if self.started_at is None:
            return None
        return self.started_at + self.speech_end_offset / self._speed

    async def __anext__(self) -> rtc.AudioFrame:
        if self._t0 is None:
            self._t0 = time.perf_counter()
            self.started_at = time.time()
        if self._end_after_tail and self._pos >= len(self._pcm):
            raise StopAsyncIteration
        delay = self._t0 + self._frames_sent * self._frame_interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        self._frames_sent += 1

        spf = self._samples_per_frame
        if self._pos < len(self._pcm):
            chunk = self._pcm[self._pos : self._pos + spf]
            self._pos += len(chunk)
            if len(chunk) < spf:
                chunk = np.pad(chunk, (0, spf - len(chunk)))
            if self._pos >= len(self._pcm):
                self.finished_at = time.time()
        else:
            chunk = np.zeros(spf, dtype=np.int16)
        return rtc.AudioFrame(
            data=chunk.tobytes(),
            sample_rate=self.sample_rate,
            num_channels=1,
            samples_per_channel=spf,
        )


# --------------------------------------------------------------------------- outputs


@dataclass
class PlayoutSegment:
    """One playback segment of a :class:`CaptureAudioOutput` (frames between two flushes)."""

    started_at: float
    """``time.time()`` of its first frame (playback start)."""
    duration: float = 0.0
    """Seconds of audio captured."""
    finished_at: float | None = None
    played: float = 0.0
    """Seconds reported as played out."""
    interrupted: bool = False
    paused_total: float = 0.0
    """Seconds spent paused so far."""
    _paused_since: float | None = field(default=None, repr=False)
    _interrupt: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def position(self, now: float) -> float:
        """Seconds played out at ``now`` (real-time playout from ``started_at``, minus pauses)."""
        paused = self.paused_total + (now - self._paused_since if self._paused_since else 0.0)
        return min(self.duration, max(0.0, now - self.started_at - paused))


class CaptureAudioOutput(io.AudioOutput):
    """Records every frame the agent plays and simulates playout.

    With ``realtime=True`` a segment "plays" in real time from its first frame for its captured
    duration, so ``playback_finished`` fires when a real sink's would; ``clear_buffer()`` ends it
    early as interrupted, and ``pause()``/``resume()`` (when ``pausable``, like the room's audio
    output) hold the playout clock. With ``realtime=False`` a segment finishes when flushed.
    """

    def __init__(
        self,
        *,
        sample_rate: int | None = None,
        realtime: bool = True,
        pausable: bool = True,
        label: str = "CaptureAudioOutput",
    ) -> None:
        super().__init__(
            label=label,
            capabilities=io.AudioOutputCapabilities(pause=pausable),
            sample_rate=sample_rate,
        )
        self._realtime = realtime
        self._current: PlayoutSegment | None = None
        self._playout_tasks: set[asyncio.Task[None]] = set()
        self._paused = False
        self._state_changed = asyncio.Event()
        self.frames: list[rtc.AudioFrame] = []
        self.segments: list[PlayoutSegment] = []
        self.first_frame_at: float | None = None
        """``time.time()`` of the first frame ever captured."""
        self.first_frame = asyncio.Event()

    @property
    def total_duration(self) -> float:
        """Seconds of audio captured in total."""
        return sum(f.duration for f in self.frames)

    @property
    def paused(self) -> bool:
        return self._paused

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if self._current is None:
            now = time.time()
            self._current = PlayoutSegment(started_at=now)
            if self._paused:
                self._current._paused_since = now
            self.segments.append(self._current)
            if self.first_frame_at is None:
                self.first_frame_at = now
                self.first_frame.set()
            self.on_playback_started(created_at=now)
        self.frames.append(frame)
        self._current.duration += frame.duration

    def flush(self) -> None:
        super().flush()
        segment, self._current = self._current, None
        if segment is None:
            return
        task = asyncio.create_task(self._playout(segment), name="CaptureAudioOutput.playout")
        self._playout_tasks.add(task)
        task.add_done_callback(self._playout_tasks.discard)

    def clear_buffer(self) -> None:
        for segment in self.segments:
            if segment.finished_at is None:
                segment._interrupt.set()
        self._wake()

    def pause(self) -> None:
        super().pause()
        if self._paused:
            return
        self._paused, now = True, time.time()
        for segment in self._unfinished():
            segment._paused_since = now
        self._wake()

    def resume(self) -> None:
        super().resume()
        if not self._paused:
            return
        self._paused, now = False, time.time()
        for segment in self._unfinished():
            if segment._paused_since is not None:
                segment.paused_total += now - segment._paused_since
                segment._paused_since = None
        self._wake()

    def _unfinished(self) -> list[PlayoutSegment]:
        return [s for s in self.segments if s.finished_at is None]

    def _wake(self) -> None:
        self._state_changed.set()
        self._state_changed = asyncio.Event()

    async def _playout(self, segment: PlayoutSegment) -> None:
        while self._realtime and not segment._interrupt.is_set():
            remaining = segment.duration - segment.position(time.time())
            if remaining <= 0:
                break
            # wait for the end of the segment, or any pause/resume/clear_buffer
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._state_changed.wait(), None if self._paused else remaining
                )
        now = time.time()
        interrupted = segment._interrupt.is_set()
        segment.finished_at = now
        segment.interrupted = interrupted
        segment.played = segment.position(now) if interrupted else segment.duration
        self.on_playback_finished(playback_position=segment.played, interrupted=interrupted)

    async def aclose(self) -> None:
        """Cancel simulated playouts still running (sessions normally wait for them)."""
        await utils.aio.cancel_and_wait(*self._playout_tasks)


class CaptureTextOutput(io.TextOutput):
    """Records the agent transcript text as the framework streams it, one entry per segment."""

    def __init__(self, *, label: str = "CaptureTextOutput") -> None:
        super().__init__(label=label, next_in_chain=None)
        self.segments: list[str] = []
        self.chunks: list[str] = []
        """Every text chunk captured, in order."""
        self._current: list[str] = []

    @property
    def pending(self) -> str:
        """Text of the current, not yet flushed, segment."""
        return "".join(self._current)

    async def capture_text(self, text: str) -> None:
        self.chunks.append(text)
        self._current.append(text)

    def flush(self) -> None:
        if self._current:
            self.segments.append("".join(self._current))
        self._current = []


class CaptureLocalParticipant:
    """``publish_data`` and ``register_rpc_method`` of ``rtc.LocalParticipant``, recorded."""

    def __init__(self) -> None:
        self.packets: list[tuple[str, bytes]] = []
        """(topic, payload) of every packet published, in order."""
        self.rpc_methods: dict[str, Callable[[rtc.RpcInvocationData], Any]] = {}

    async def publish_data(
        self, payload: bytes | str, *, reliable: bool = True, topic: str = ""
    ) -> None:
        assert reliable
        self.packets.append((topic, payload.encode() if isinstance(payload, str) else payload))

    def register_rpc_method(
        self, method_name: str, handler: Callable[[rtc.RpcInvocationData], Any]
    ) -> None:
        self.rpc_methods[method_name] = handler


class CaptureRoom:
    """What the call's transcript wiring touches of ``rtc.Room``: the local participant (data
    channel, hang-up RPC) and ``isconnected()``. No WebRTC: ``session.start`` gets no room."""

    def __init__(self, *, connected: bool = True) -> None:
        self.local_participant = CaptureLocalParticipant()
        self.connected = connected

    def isconnected(self) -> bool:
        return self.connected

    def as_room(self) -> rtc.Room:
        return cast(rtc.Room, self)
