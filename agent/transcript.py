"""Turns from session events, live publishing on the data channel, and the hang-up RPC.

Rule: a turn is a `conversation_item_added` ChatMessage with role user or assistant and a
non-empty `text_content`; it gets the next `seq` (1, 2, ... in event order), goes to the sink
(the journal) at once, synchronously and in order, and then to one publisher task per call that
drains a FIFO, so data-channel packets are strictly sequential: every turn once, in order, then at
most one `end`, and nothing after it. Session and RPC handlers are synchronous or return at once,
never raise into the library (every exception is caught and logged) and hand async work to owned
tasks. A failed publish is logged and never breaks the call or the transcript. Transcript text is
never logged above DEBUG.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from livekit import rtc
from livekit.agents import AgentSession, llm
from livekit.agents.metrics import LLMModelUsage, STTModelUsage, TTSModelUsage
from livekit.agents.metrics.usage import ModelUsage
from livekit.agents.voice.events import (
    CloseEvent,
    ConversationItemAddedEvent,
    UserInputTranscribedEvent,
)

from agent.log import get_logger
from agent.models import (
    MAX_PACKET_BYTES,
    TRANSCRIPT_TOPIC,
    EndMessage,
    InterimMessage,
    Latency,
    Percentiles,
    Turn,
    TurnMessage,
    Usage,
    utc_from_timestamp,
    utc_now,
)

log = get_logger(__name__)

END_CALL_RPC_METHOD = "agent.end_call"
# Application error codes outside the library's reserved 1001-1999 range.
RPC_ERROR_FORBIDDEN = 403
RPC_ERROR_FAILED = 500

DEFAULT_FINISH_TIMEOUT = 5.0
DEFAULT_PUBLISH_TIMEOUT = 5.0


# --------------------------------------------------------------------------- data sink


class DataSink(Protocol):
    """Sends one data packet to every participant (the shape of `publish_data`)."""

    def __call__(self, payload: bytes, *, reliable: bool, topic: str) -> Awaitable[None]: ...


def room_data_sink(room: rtc.Room) -> DataSink:
    """The real sink: the room's local participant, looked up at each publish because it only
    exists once the room is connected (a publish before that fails and is logged)."""

    async def publish(payload: bytes, *, reliable: bool, topic: str) -> None:
        await room.local_participant.publish_data(payload, reliable=reliable, topic=topic)

    return publish


# --------------------------------------------------------------------------- packet framing


def _json_size(char: str) -> int:
    """UTF-8 bytes that `char` takes inside a JSON string as `WireModel.to_json_bytes` writes it
    (ensure_ascii=False: only quotes, backslashes and control characters are escaped)."""
    code = ord(char)
    if char in '"\\':
        return 2
    if code < 0x20:
        return len(json.dumps(char)) - 2  # \n, \t ... or \u00XX
    if code < 0x80:
        return 1
    if code < 0x800:
        return 2
    if code < 0x10000:
        return 3
    return 4


def _split_text(text: str, budget: int) -> list[str]:
    """Greedy split on code-point boundaries: a Python str is a sequence of code points, so no
    chunk can end inside a UTF-8 sequence; each chunk's escaped size is at most `budget`."""
    chunks: list[str] = []
    start = 0
    size = 0
    for index, char in enumerate(text):
        char_size = _json_size(char)
        if size + char_size > budget and index > start:
            chunks.append(text[start:index])
            start, size = index, 0
        size += char_size
    chunks.append(text[start:])
    return chunks


def turn_packets(turn: Turn, *, session_id: str, max_bytes: int = MAX_PACKET_BYTES) -> list[bytes]:
    """The data-channel packets for one turn: one TurnMessage, or `parts` of them (part=1..parts,
    every field repeated, texts concatenated in part order) when the JSON would pass `max_bytes`.
    Sizes are measured on the serialized packet, since JSON escaping can grow the text."""
    whole = TurnMessage(
        session_id=session_id,
        seq=turn.seq,
        role=turn.role,
        text=turn.text,
        interrupted=turn.interrupted,
        started_at=turn.started_at,
        ended_at=turn.ended_at,
    )
    packet = whole.to_json_bytes()
    if len(packet) <= max_bytes:
        return [packet]
    # The envelope grows with the digits of part/parts: size it with the largest number of
    # that many digits, and retry with one more digit if the split needed more parts.
    digits = 1
    while True:
        widest = 10**digits - 1
        envelope = len(
            whole.model_copy(update={"text": "", "part": widest, "parts": widest}).to_json_bytes()
        )
        budget = max_bytes - envelope
        if budget < 6:  # the widest escape (\u00XX) must fit, or no split can succeed
            raise ValueError(f"packet envelope of {envelope} bytes leaves no room for text")
        chunks = _split_text(turn.text, budget)
        if len(str(len(chunks))) <= digits:
            break
        digits += 1
    parts = len(chunks)
    packets = [
        whole.model_copy(update={"text": chunk, "part": index, "parts": parts}).to_json_bytes()
        for index, chunk in enumerate(chunks, start=1)
    ]
    if any(len(p) > max_bytes for p in packets):  # a bug in the size arithmetic above
        raise ValueError("split produced a packet above the size limit")
    return packets


# --------------------------------------------------------------------------- publisher


@dataclass(frozen=True)
class _Finish:
    send_end: bool


_Outgoing = Turn | InterimMessage | _Finish


class TranscriptPublisher:
    """Publishes turns, interim captions and `end` on topic `transcript`, reliable, to all.

    One owned task per call drains a FIFO, so publishes are strictly sequential and in order.
    `publish_turn`/`publish_interim` are synchronous (safe from event handlers); `finish` flushes
    what is queued (bounded), sends `end` once when asked and the room is connected, and stops:
    anything offered after `finish` began is dropped from the data channel (it still reaches the
    journal through the recorder's sink).
    """

    def __init__(
        self,
        sink: DataSink,
        *,
        session_id: str,
        is_connected: Callable[[], bool] = lambda: True,
        max_packet_bytes: int = MAX_PACKET_BYTES,
        publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT,
    ) -> None:
        self._sink = sink
        self._session_id = session_id
        self._is_connected = is_connected
        self._max_packet_bytes = max_packet_bytes
        self._publish_timeout = publish_timeout
        self._queue: asyncio.Queue[_Outgoing] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._finishing = False
        self._last_seq = 0
        self.end_sent = False
        self.published_turns = 0
        self.failed_turns = 0
        self.skipped_turns = 0

    @property
    def finishing(self) -> bool:
        return self._finishing

    def publish_turn(self, turn: Turn) -> None:
        if self._finishing:
            log.info("transcript.publish_dropped", seq=turn.seq, reason="after_finish")
            return
        self._last_seq = max(self._last_seq, turn.seq)
        self._enqueue(turn)

    def publish_interim(self, item_id: str, text: str) -> None:
        if self._finishing:
            return
        self._enqueue(InterimMessage(item_id=item_id, text=text))

    async def finish(self, *, send_end: bool, timeout: float = DEFAULT_FINISH_TIMEOUT) -> None:
        """Flush the queue within `timeout` seconds, then publish `end` (turnCount = last seq)
        if `send_end` and the room is still connected. Idempotent: a second call only waits for
        the first one's flush (within its own timeout) and never sends a second `end`."""
        first = not self._finishing
        self._finishing = True
        if first:
            self._enqueue(_Finish(send_end=send_end))
        task = self._task
        if task is None or task.done():
            return
        try:
            # shield: a second caller's timeout must not cancel the first caller's flush
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            log.warning(
                "transcript.flush_timeout",
                pending=self._queue.qsize(),
                last_seq=self._last_seq,
                timeout_s=timeout,
            )
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _enqueue(self, item: _Outgoing) -> None:
        self._queue.put_nowait(item)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="transcript.publisher"
            )

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            if isinstance(item, _Finish):
                await self._send_end(item.send_end)
                log.info(
                    "transcript.publisher_finished",
                    published_turns=self.published_turns,
                    failed_turns=self.failed_turns,
                    skipped_turns=self.skipped_turns,
                    end_sent=self.end_sent,
                    turn_count=self._last_seq,
                )
                return  # nothing after end
            if isinstance(item, Turn):
                await self._send_turn(item)
            else:
                await self._send_interim(item)

    async def _send_turn(self, turn: Turn) -> None:
        if not self._connected():
            self.skipped_turns += 1
            log.debug("transcript.publish_skipped", seq=turn.seq, reason="room_disconnected")
            return
        try:
            packets = turn_packets(
                turn, session_id=self._session_id, max_bytes=self._max_packet_bytes
            )
            for packet in packets:
                await self._send(packet)
        except Exception as error:
            self.failed_turns += 1
            log.warning("transcript.publish_failed", seq=turn.seq, error_type=_name(error))
            log.debug("transcript.publish_failed_detail", seq=turn.seq, error=repr(error))
            return
        self.published_turns += 1
        if len(packets) > 1:
            log.info("transcript.turn_split", seq=turn.seq, parts=len(packets))

    async def _send_interim(self, message: InterimMessage) -> None:
        if not self._connected():
            return
        try:
            await self._send(message.to_json_bytes())
        except Exception as error:
            log.debug("transcript.interim_failed", error_type=_name(error))

    async def _send_end(self, requested: bool) -> None:
        if not requested:
            return
        if not self._connected():
            log.info("transcript.end_skipped", reason="room_disconnected")
            return
        message = EndMessage(session_id=self._session_id, turn_count=self._last_seq)
        try:
            await self._send(message.to_json_bytes())
        except Exception as error:
            log.warning("transcript.end_failed", error_type=_name(error))
            return
        self.end_sent = True
        log.info("transcript.end_sent", turn_count=self._last_seq)

    async def _send(self, packet: bytes) -> None:
        # A hung publish must not stall the FIFO for ever: treat it as failed.
        await asyncio.wait_for(
            self._sink(packet, reliable=True, topic=TRANSCRIPT_TOPIC), self._publish_timeout
        )

    def _connected(self) -> bool:
        try:
            return bool(self._is_connected())
        except Exception as error:
            log.warning("transcript.is_connected_failed", error_type=_name(error))
            return False


# --------------------------------------------------------------------------- turns


def _percentiles(samples_s: Sequence[float]) -> Percentiles | None:
    """p50/p90/max in milliseconds, linear interpolation between closest ranks."""
    values = sorted(v * 1000.0 for v in samples_s if math.isfinite(v) and v >= 0)
    if not values:
        return None

    def at(q: float) -> float:
        position = q * (len(values) - 1)
        low = math.floor(position)
        high = min(low + 1, len(values) - 1)
        return values[low] + (values[high] - values[low]) * (position - low)

    return Percentiles(p50=round(at(0.5), 1), p90=round(at(0.9), 1), max=round(values[-1], 1))


class TurnRecorder:
    """Turns a session's events into `Turn`s, in event order, with `seq` from 1.

    `attach(session)` before `session.start` so the greeting is caught. For each turn it calls
    `on_turn` (the journal append) synchronously, then hands the turn to the publisher. A user
    `user_input_transcribed` event that is not final becomes an interim caption (only a streaming
    STT produces them). It also keeps the call's started/ended time and per-turn latencies.
    `earlier_turns`: what an earlier run of the same job journaled (seq 1..k); `seq` continues
    after them and `turns` includes them, so that run's turns are neither overwritten nor lost.
    """

    def __init__(
        self,
        *,
        on_turn: Callable[[Turn], None] | None = None,
        publisher: TranscriptPublisher | None = None,
        started_at: datetime | None = None,
        earlier_turns: Sequence[Turn] = (),
    ) -> None:
        self._on_turn = on_turn
        self._publisher = publisher
        self._turns: list[Turn] = list(earlier_turns)
        self._seen_items: set[str] = set()
        self._session: AgentSession[Any] | None = None
        self.started_at: datetime = started_at or utc_now()
        self.ended_at: datetime | None = None
        self._e2e: list[float] = []
        self._llm_ttft: list[float] = []
        self._tts_ttfb: list[float] = []
        self._end_of_turn: list[float] = []
        self._utterance: str | None = None
        self._utterances = 0

    # -- public state

    @property
    def turns(self) -> list[Turn]:
        return list(self._turns)

    @property
    def turn_count(self) -> int:
        return len(self._turns)

    def mark_ended(self, at: datetime | None = None) -> None:
        """Record when the call ended; the first time wins (the session's close sets it too)."""
        if self.ended_at is None:
            self.ended_at = at or utc_now()

    def latency(self) -> Latency:
        return Latency(
            e2e_ms=_percentiles(self._e2e),
            llm_ttft_ms=_percentiles(self._llm_ttft),
            tts_ttfb_ms=_percentiles(self._tts_ttfb),
            end_of_turn_ms=_percentiles(self._end_of_turn),
        )

    # -- session wiring

    def attach(self, session: AgentSession[Any]) -> None:
        if self._session is not None:
            raise RuntimeError("TurnRecorder is already attached to a session")
        self._session = session
        session.on("conversation_item_added", self._on_item_added)
        session.on("user_input_transcribed", self._on_user_input_transcribed)
        session.on("close", self._on_close)

    def detach(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        session.off("conversation_item_added", self._on_item_added)
        session.off("user_input_transcribed", self._on_user_input_transcribed)
        session.off("close", self._on_close)

    # -- handlers: synchronous, never raise into the library (it would break its speech task)

    def _on_item_added(self, event: ConversationItemAddedEvent) -> None:
        try:
            self.add_item(event.item)
        except Exception as error:
            _handler_failed("conversation_item_added", error)

    def _on_user_input_transcribed(self, event: UserInputTranscribedEvent) -> None:
        try:
            self.add_transcription(event)
        except Exception as error:
            _handler_failed("user_input_transcribed", error)

    def _on_close(self, event: CloseEvent) -> None:
        try:
            self.mark_ended(utc_from_timestamp(event.created_at))
        except Exception as error:
            _handler_failed("close", error)

    # -- the rules (public so a test or a replay can feed items directly)

    def add_item(self, item: object) -> Turn | None:
        """Record `item` if it is a final user/assistant message with text; the new turn."""
        if not isinstance(item, llm.ChatMessage) or item.type != "message":
            return None  # agent handoffs, function calls, ...
        if item.role not in ("user", "assistant"):
            return None
        if item.id in self._seen_items:
            return None  # exactly once, even if the library re-emits an item
        self._seen_items.add(item.id)
        self._collect_metrics(item)
        text = item.text_content
        if not text or not text.strip():
            return None
        turn = self._turn_from(item, text)
        self._turns.append(turn)
        if turn.role == "user":
            self._utterance = None  # the next interim caption belongs to a new utterance
        if self._on_turn is not None:
            try:
                self._on_turn(turn)
            except Exception as error:
                log.error("transcript.sink_failed", seq=turn.seq, error_type=_name(error))
                log.debug("transcript.sink_failed_detail", seq=turn.seq, error=repr(error))
        if self._publisher is not None:
            self._publisher.publish_turn(turn)
        return turn

    def add_transcription(self, event: UserInputTranscribedEvent) -> None:
        if event.is_final:
            self._utterance = None
            return
        if not event.transcript.strip() or self._publisher is None:
            return  # an empty interim only says "speech stopped": nothing to show
        if event.item_id:
            item_id = event.item_id
        else:
            # STT pipelines give no item id: one id per utterance so a client can replace the
            # caption it shows until the final turn arrives.
            if self._utterance is None:
                self._utterances += 1
                self._utterance = f"utterance-{self._utterances}"
            item_id = self._utterance
        self._publisher.publish_interim(item_id, event.transcript)

    def _turn_from(self, item: llm.ChatMessage, text: str) -> Turn:
        metrics = item.metrics
        started = metrics.get("started_speaking_at")
        stopped = metrics.get("stopped_speaking_at")
        started_at = started if started is not None else item.created_at
        ended_at = stopped if stopped is not None else max(item.created_at, started_at)
        return Turn(
            seq=len(self._turns) + 1,
            role="user" if item.role == "user" else "assistant",
            text=text,
            started_at=utc_from_timestamp(started_at),
            ended_at=utc_from_timestamp(max(ended_at, started_at)),
            interrupted=bool(item.interrupted),
        )

    def _collect_metrics(self, item: llm.ChatMessage) -> None:
        metrics = item.metrics
        if item.role == "assistant":
            for key, samples in (
                ("e2e_latency", self._e2e),
                ("llm_node_ttft", self._llm_ttft),
                ("tts_node_ttfb", self._tts_ttfb),
            ):
                value = metrics.get(key)
                if isinstance(value, int | float):
                    samples.append(float(value))
        else:
            value = metrics.get("end_of_turn_delay")
            if isinstance(value, int | float):
                self._end_of_turn.append(float(value))


def _name(error: BaseException) -> str:
    return type(error).__name__


def _handler_failed(event: str, error: Exception) -> None:
    # error_type only at error level: exception texts (pydantic's) may quote transcript text
    log.error("transcript.handler_failed", event_name=event, error_type=_name(error))
    log.debug("transcript.handler_failed_detail", event_name=event, error=repr(error))


# --------------------------------------------------------------------------- usage


def usage_from_model_usage(model_usage: Iterable[ModelUsage]) -> list[Usage]:
    """The transcript's `usage` entries: LLM tokens, STT audio seconds, TTS characters and audio
    seconds, per provider + model (interruption and end-of-turn models are not billed here)."""
    result: list[Usage] = []
    for entry in model_usage:
        if isinstance(entry, LLMModelUsage):
            result.append(
                Usage(
                    kind="llm",
                    provider=entry.provider,
                    model=entry.model,
                    input_tokens=entry.input_tokens,
                    output_tokens=entry.output_tokens,
                )
            )
        elif isinstance(entry, STTModelUsage):
            result.append(
                Usage(
                    kind="stt",
                    provider=entry.provider,
                    model=entry.model,
                    audio_seconds=round(entry.audio_duration, 3),
                    input_tokens=entry.input_tokens or None,
                    output_tokens=entry.output_tokens or None,
                )
            )
        elif isinstance(entry, TTSModelUsage):
            result.append(
                Usage(
                    kind="tts",
                    provider=entry.provider,
                    model=entry.model,
                    characters=entry.characters_count,
                    audio_seconds=round(entry.audio_duration, 3),
                    input_tokens=entry.input_tokens or None,
                    output_tokens=entry.output_tokens or None,
                )
            )
    return result


def usage_from_session(session: AgentSession[Any]) -> list[Usage]:
    """Usage so far; still valid in `on_session_end`, after the session closed."""
    return usage_from_model_usage(session.usage.model_usage)


# --------------------------------------------------------------------------- hang-up RPC


class RpcRegistrar(Protocol):
    """The part of `rtc.LocalParticipant` the hang-up RPC needs."""

    def register_rpc_method(
        self,
        method_name: str,
        handler: Callable[[rtc.RpcInvocationData], Awaitable[str]],
    ) -> Any: ...


Spawn = Callable[[Coroutine[Any, Any, None], str], asyncio.Task[Any]]


class _EndCallHandler:
    """Answers `agent.end_call` at once and runs the end in an owned task, once per call."""

    def __init__(
        self,
        on_end_call: Callable[[str], Awaitable[None]],
        allowed_identity: Callable[[], str | None],
        spawn: Spawn | None,
    ) -> None:
        self._on_end_call = on_end_call
        self._allowed_identity = allowed_identity
        self._spawn = spawn
        self._tasks: set[asyncio.Task[Any]] = set()
        self.requested = False

    async def __call__(self, data: rtc.RpcInvocationData) -> str:
        try:
            allowed = self._allowed_identity()
            # Before anyone is linked there is no caller to speak for: anyone in the room (an
            # observer, a second tab) could otherwise end somebody else's call.
            if allowed is None or data.caller_identity != allowed:
                log.warning("transcript.end_call_refused", caller_identity=data.caller_identity)
                raise rtc.RpcError(RPC_ERROR_FORBIDDEN, "only the linked participant may end it")
            if not self.requested:
                self.requested = True
                log.info("transcript.end_call_requested", caller_identity=data.caller_identity)
                self._start(data.caller_identity)
            return "ok"
        except rtc.RpcError:
            raise
        except Exception as error:
            _handler_failed("rpc:" + END_CALL_RPC_METHOD, error)
            raise rtc.RpcError(RPC_ERROR_FAILED, "end_call failed") from None

    def _start(self, caller_identity: str) -> None:
        coro = self._run(caller_identity)
        if self._spawn is not None:
            self._spawn(coro, "transcript.end_call")
            return
        task = asyncio.get_running_loop().create_task(coro, name="transcript.end_call")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, caller_identity: str) -> None:
        try:
            await self._on_end_call(caller_identity)
        except Exception as error:
            log.error("transcript.end_call_failed", error_type=_name(error))


def register_end_call_rpc(
    local_participant: RpcRegistrar,
    on_end_call: Callable[[str], Awaitable[None]],
    *,
    allowed_identity: Callable[[], str | None],
    spawn: Spawn | None = None,
) -> None:
    """Register `agent.end_call`: only the linked participant hangs up (`allowed_identity()`;
    while it is None, nobody is linked and every request is refused with RpcError 403). The
    handler answers "ok" at once and runs `on_end_call(caller_identity)` once, in a task owned
    by `spawn` (e.g. `Call.spawn`) or by the registration; a second request answers "ok"
    without ending twice."""
    handler = _EndCallHandler(on_end_call, allowed_identity, spawn)
    local_participant.register_rpc_method(END_CALL_RPC_METHOD, handler)
