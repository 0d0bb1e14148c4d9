"""Turns from session events: `seq`, interruptions, per-turn latencies.

Rule: a turn is a `conversation_item_added` ChatMessage with role user or assistant and a
non-empty `text_content`; it gets the next `seq` (1, 2, ... in event order), goes to the sink
(the journal) at once, synchronously and in order, and then to the publisher. Session handlers
are synchronous and never raise into the library (every exception is caught and logged: a
handler that raises breaks its speech task). Transcript text is never logged above DEBUG.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from livekit.agents import AgentSession, llm
from livekit.agents.voice.events import (
    CloseEvent,
    ConversationItemAddedEvent,
    UserInputTranscribedEvent,
)

from agent import metrics
from agent.log import get_logger
from agent.models import TEXT_MAX, Latency, Percentiles, Turn, utc_from_timestamp, utc_now
from agent.transcript.publisher import TranscriptPublisher

log = get_logger(__name__)


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
        metrics.turn_recorded(turn.role)
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
        found = item.metrics
        started = found.get("started_speaking_at")
        stopped = found.get("stopped_speaking_at")
        started_at = started if started is not None else item.created_at
        ended_at = stopped if stopped is not None else max(item.created_at, started_at)
        if len(text) > TEXT_MAX:
            log.warning("transcript.turn_truncated", seq=len(self._turns) + 1, chars=len(text))
        return Turn(
            seq=len(self._turns) + 1,
            role="user" if item.role == "user" else "assistant",
            text=fit_text(text),
            started_at=utc_from_timestamp(started_at),
            ended_at=utc_from_timestamp(max(ended_at, started_at)),
            interrupted=bool(item.interrupted),
        )

    def _collect_metrics(self, item: llm.ChatMessage) -> None:
        # the same samples feed the transcript's percentiles and the Prometheus histograms
        found = item.metrics
        if item.role == "assistant":
            e2e, ttft, ttfb = (
                _seconds(found.get(key))
                for key in ("e2e_latency", "llm_node_ttft", "tts_node_ttfb")
            )
            for value, samples in (
                (e2e, self._e2e),
                (ttft, self._llm_ttft),
                (ttfb, self._tts_ttfb),
            ):
                if value is not None:
                    samples.append(value)
            metrics.assistant_turn_latency(response=e2e, llm_first_token=ttft, tts_first_byte=ttfb)
        else:
            delay = _seconds(found.get("end_of_turn_delay"))
            if delay is not None:
                self._end_of_turn.append(delay)
            metrics.user_turn_latency(end_of_turn_delay=delay)


def fit_text(text: str) -> str:
    """A turn's text within TEXT_MAX: a longer one (a pasted text message; speech never gets
    near it) keeps its first part and says how much was cut, so the turn the LLM saw is still
    journaled, published and delivered."""
    if len(text) <= TEXT_MAX:
        return text
    marker = f" [... {{cut}} more characters not kept: the turn is over {TEXT_MAX:,} characters]"
    kept = TEXT_MAX - len(marker.format(cut=len(text)))
    return text[:kept] + marker.format(cut=len(text) - kept)


def _seconds(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _name(error: BaseException) -> str:
    return type(error).__name__


def _handler_failed(event: str, error: Exception) -> None:
    # error_type only at error level: exception texts (pydantic's) may quote transcript text
    log.error("transcript.handler_failed", event_name=event, error_type=_name(error))
    log.debug("transcript.handler_failed_detail", event_name=event, error=repr(error))
