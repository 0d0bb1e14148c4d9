"""The data-channel publisher: turns, interim captions and `end` on topic `transcript`.

Rule: one publisher task per call drains a FIFO, so data-channel packets are strictly
sequential: every turn once, in order, then at most one `end`, and nothing after it. Offering
(`publish_turn`, `publish_interim`) is synchronous and safe from event handlers. A failed
publish is logged and never breaks the call or the transcript; transcript text is never logged
above DEBUG. The FIFO is bounded (MAX_QUEUED): a data channel stalled that long (each publish
waits up to its timeout) drops what is offered next from the data channel only, an interim
caption silently, a turn with a warning; the journal and the final transcript still hold every
turn, and `end`'s turnCount tells the browser how many there are.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from livekit import rtc

from agent.log import get_logger
from agent.models import (
    MAX_PACKET_BYTES,
    TRANSCRIPT_TOPIC,
    EndMessage,
    InterimMessage,
    Turn,
)
from agent.transcript.packets import turn_packets

log = get_logger(__name__)

DEFAULT_FINISH_TIMEOUT = 5.0
DEFAULT_PUBLISH_TIMEOUT = 5.0
# Items waiting in the FIFO: far beyond a live call's (a turn every few seconds, captions a few
# a second, each published in milliseconds) and beyond a burst (bench_turn_overhead offers
# hundreds of turns at once, which a bound of 100 cut short); reached only when publishes hang
# for many minutes. A turn is ~1-2 kB in memory.
MAX_QUEUED = 1000


class DataSink(Protocol):
    """Sends one data packet to every participant (the shape of `publish_data`)."""

    def __call__(self, payload: bytes, *, reliable: bool, topic: str) -> Awaitable[None]: ...


def room_data_sink(room: rtc.Room) -> DataSink:
    """The real sink: the room's local participant, looked up at each publish because it only
    exists once the room is connected (a publish before that fails and is logged)."""

    async def publish(payload: bytes, *, reliable: bool, topic: str) -> None:
        await room.local_participant.publish_data(payload, reliable=reliable, topic=topic)

    return publish


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
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self._sink = sink
        self._session_id = session_id
        self._is_connected = is_connected
        self._max_packet_bytes = max_packet_bytes
        self._publish_timeout = publish_timeout
        self._max_queued = max_queued
        self._queue: asyncio.Queue[_Outgoing] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._finishing = False
        self._last_seq = 0
        self.end_sent = False
        self.published_turns = 0
        self.failed_turns = 0
        self.skipped_turns = 0
        self.dropped_turns = 0  # offered while the FIFO was full
        self.dropped_interims = 0

    def publish_turn(self, turn: Turn) -> None:
        if self._finishing:
            log.info("transcript.publish_dropped", seq=turn.seq, reason="after_finish")
            return
        self._last_seq = max(self._last_seq, turn.seq)
        if self._full():
            self.dropped_turns += 1
            log.warning("transcript.publish_dropped", seq=turn.seq, reason="queue_full")
            return
        self._enqueue(turn)

    def publish_interim(self, item_id: str, text: str) -> None:
        if self._finishing:
            return
        if self._full():
            self.dropped_interims += 1  # a later caption or the final turn supersedes it
            return
        self._enqueue(InterimMessage(item_id=item_id, text=text))

    def _full(self) -> bool:
        return self._queue.qsize() >= self._max_queued

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
                    dropped_turns=self.dropped_turns,
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


def _name(error: BaseException) -> str:
    return type(error).__name__
