"""Unit tests for agent/transcript/ and the hang-up RPC: turns, packets, the publisher,
latency, usage, the RPC.

Events are emitted on a real (never started) AgentSession so the library's own EventEmitter
delivers them, exactly as it does in a call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest
import structlog
from livekit import rtc
from livekit.agents import AgentSession, llm
from livekit.agents.metrics import (
    LLMModelUsage,
    STTModelUsage,
    TTSModelUsage,
)
from livekit.agents.metrics.usage import EOTModelUsage, InterruptionModelUsage
from livekit.agents.voice.events import (
    CloseEvent,
    CloseReason,
    ConversationItemAddedEvent,
    UserInputTranscribedEvent,
)
from livekit.rtc.participant import PublishDataError

from agent.call.ending import END_CALL_RPC_METHOD, RPC_ERROR_FORBIDDEN, register_end_call_rpc
from agent.models import MAX_PACKET_BYTES, TRANSCRIPT_TOPIC, Turn, Usage
from agent.transcript import (
    TranscriptPublisher,
    TurnRecorder,
    room_data_sink,
    turn_packets,
    usage_from_model_usage,
)
from tests.support.fakes import FakeLLM

SESSION_ID = "sess-1"
T0 = 1_700_000_000.0
Logs = list[MutableMapping[str, Any]]


# --------------------------------------------------------------------------- helpers


@dataclass
class CapturingSink:
    """A DataSink recording every packet; `fail` decides per decoded message whether to raise."""

    fail: Callable[[dict[str, Any]], bool] = lambda _message: False
    delay: float = 0.0
    hang: bool = False
    packets: list[bytes] = field(default_factory=list)
    calls: list[tuple[bool, str]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    async def __call__(self, payload: bytes, *, reliable: bool, topic: str) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self.calls.append((reliable, topic))
            message = json.loads(payload.decode("utf-8"))
            if self.hang:
                await asyncio.Event().wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.fail(message):
                raise PublishDataError("engine: data channel closed")
            self.packets.append(payload)
        finally:
            self.in_flight -= 1

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(p.decode("utf-8")) for p in self.packets]


def new_session() -> AgentSession[None]:
    return AgentSession(llm=FakeLLM(), vad=None, turn_handling={"turn_detection": None})


def message(
    role: str,
    text: str | None,
    *,
    interrupted: bool = False,
    created_at: float = T0,
    metrics: dict[str, Any] | None = None,
) -> llm.ChatMessage:
    return llm.ChatMessage.model_validate(
        {
            "role": role,
            "content": [] if text is None else [text],
            "interrupted": interrupted,
            "created_at": created_at,
            "metrics": metrics or {},
        }
    )


def add(session: AgentSession[None], item: llm.ChatMessage | llm.AgentHandoff) -> None:
    session.emit("conversation_item_added", ConversationItemAddedEvent(item=item))


def interim(session: AgentSession[None], text: str, *, is_final: bool = False) -> None:
    session.emit(
        "user_input_transcribed", UserInputTranscribedEvent(transcript=text, is_final=is_final)
    )


def turn(seq: int, text: str = "hello", role: str = "user") -> Turn:
    at = datetime.fromtimestamp(T0 + seq, tz=UTC)
    return Turn.model_validate(
        {"seq": seq, "role": role, "text": text, "startedAt": at, "endedAt": at}
    )


@pytest.fixture
def logs() -> Iterator[Logs]:
    """Every event agent.transcript (and the hang-up RPC) logs, at any level: module loggers
    follow the configuration of the moment (agent.log.get_logger)."""
    with structlog.testing.capture_logs() as entries:
        yield entries


def events(entries: Logs, name: str) -> Logs:
    return [e for e in entries if e["event"] == name]


# --------------------------------------------------------------------------- turns


async def test_turns_get_seq_from_one_in_event_order() -> None:
    session = new_session()
    recorder = TurnRecorder()
    recorder.attach(session)
    add(session, message("assistant", "Hello, who is this?", created_at=T0 + 2))
    add(session, message("user", "It's me.", created_at=T0 + 1))  # older timestamp, later event
    add(session, message("assistant", "How can I help?", created_at=T0 + 3))

    assert [(t.seq, t.role, t.text) for t in recorder.turns] == [
        (1, "assistant", "Hello, who is this?"),
        (2, "user", "It's me."),
        (3, "assistant", "How can I help?"),
    ]
    assert recorder.turn_count == 3


async def test_non_message_items_and_empty_text_are_skipped() -> None:
    session = new_session()
    recorder = TurnRecorder()
    recorder.attach(session)
    add(session, llm.AgentHandoff(new_agent_id="persona"))
    add(session, message("system", "You are a caller."))
    add(session, message("developer", "Be brief."))
    add(session, message("assistant", None))
    add(session, message("user", ""))
    add(session, message("user", "  \n "))
    add(session, message("user", "Real words."))
    assert recorder.add_item(llm.FunctionCall(call_id="c1", name="f", arguments="{}")) is None

    assert [(t.seq, t.text) for t in recorder.turns] == [(1, "Real words.")]


async def test_the_same_item_emitted_twice_is_one_turn() -> None:
    session = new_session()
    recorder = TurnRecorder()
    recorder.attach(session)
    item = message("user", "Once.")
    add(session, item)
    add(session, item)

    assert [t.seq for t in recorder.turns] == [1]


async def test_interrupted_flag_is_carried_from_the_message() -> None:
    session = new_session()
    recorder = TurnRecorder()
    recorder.attach(session)
    add(session, message("assistant", "I was going to say", interrupted=True))
    add(session, message("user", "Sorry, go on."))

    assert [t.interrupted for t in recorder.turns] == [True, False]


async def test_turn_times_come_from_speaking_metrics_else_created_at() -> None:
    session = new_session()
    recorder = TurnRecorder()
    recorder.attach(session)
    spoken = {"started_speaking_at": T0 + 1.25, "stopped_speaking_at": T0 + 3.5}
    add(session, message("user", "Spoken.", created_at=T0 + 4, metrics=spoken))
    add(session, message("user", "Typed.", created_at=T0 + 5))

    first, second = recorder.turns
    assert first.started_at == datetime.fromtimestamp(T0 + 1.25, tz=UTC)
    assert first.ended_at == datetime.fromtimestamp(T0 + 3.5, tz=UTC)
    assert second.started_at == second.ended_at == datetime.fromtimestamp(T0 + 5, tz=UTC)
    assert first.to_wire()["startedAt"].endswith("Z")


async def test_close_event_sets_the_end_time_once() -> None:
    session = new_session()
    recorder = TurnRecorder(started_at=datetime.fromtimestamp(T0, tz=UTC))
    recorder.attach(session)
    close = CloseEvent(reason=CloseReason.USER_INITIATED, created_at=T0 + 60)
    session.emit("close", close)
    session.emit("close", CloseEvent(reason=CloseReason.ERROR, created_at=T0 + 90))

    assert recorder.ended_at == datetime.fromtimestamp(T0 + 60, tz=UTC)


async def test_each_turn_reaches_the_sink_at_once_and_then_the_publisher_in_order() -> None:
    session = new_session()
    sink = CapturingSink()
    publisher = TranscriptPublisher(sink, session_id=SESSION_ID)
    journal: list[int] = []
    recorder = TurnRecorder(on_turn=lambda t: journal.append(t.seq), publisher=publisher)
    recorder.attach(session)

    add(session, message("user", "One."))
    assert journal == [1]  # synchronously, before any await
    add(session, message("assistant", "Two."))
    add(session, message("user", "Three."))
    assert journal == [1, 2, 3]
    await publisher.finish(send_end=False)

    assert [(m["seq"], m["text"]) for m in sink.messages] == [
        (1, "One."),
        (2, "Two."),
        (3, "Three."),
    ]
    assert set(sink.calls) == {(True, TRANSCRIPT_TOPIC)}


async def test_a_failing_sink_is_logged_and_the_turn_still_kept_and_published(
    logs: Logs,
) -> None:
    session = new_session()
    sink = CapturingSink()
    publisher = TranscriptPublisher(sink, session_id=SESSION_ID)

    def broken_journal(_turn: Turn) -> None:
        raise OSError("disk full")

    recorder = TurnRecorder(on_turn=broken_journal, publisher=publisher)
    recorder.attach(session)
    add(session, message("user", "Kept anyway."))
    await publisher.finish(send_end=False)

    assert [t.seq for t in recorder.turns] == [1]
    assert [m["seq"] for m in sink.messages] == [1]
    assert events(logs, "transcript.sink_failed")[0]["seq"] == 1


async def test_a_text_message_over_the_turn_limit_is_kept_cut_with_a_marker(logs: Logs) -> None:
    # A pasted text message (lk.chat) the LLM saw: journaled, published and delivered, its
    # first 100,000 characters (DESIGN's bound on a turn) ending with a marker of the cut.
    session = new_session()
    sink = CapturingSink()
    publisher = TranscriptPublisher(sink, session_id=SESSION_ID)
    journaled: list[Turn] = []
    recorder = TurnRecorder(on_turn=journaled.append, publisher=publisher)
    recorder.attach(session)
    pasted = "w" * 149_000 + "TAIL"
    add(session, message("user", pasted))
    add(session, message("assistant", "That is a lot."))
    await publisher.finish(send_end=False)

    [first, second] = recorder.turns
    assert (first.seq, second.seq) == (1, 2) and [t.seq for t in journaled] == [1, 2]
    assert len(first.text) <= 100_000 and first.text.startswith("w" * 90_000)
    assert "TAIL" not in first.text and "more characters not kept" in first.text
    shown = "".join(m["text"] for m in sink.messages if m["seq"] == 1)
    assert shown == first.text  # the browser gets the same text, in parts
    assert events(logs, "transcript.turn_truncated")[0]["chars"] == 149_004
    assert not any("www" in repr(entry) for entry in logs)  # never quoted in a log


class ExplodingPublisher(TranscriptPublisher):
    def publish_turn(self, turn: Turn) -> None:
        raise TypeError("boom")  # the library's EventEmitter re-raises TypeError

    def publish_interim(self, item_id: str, text: str) -> None:
        raise TypeError("boom")


async def test_handler_exceptions_never_propagate_into_the_session(
    logs: Logs,
) -> None:
    session = new_session()
    recorder = TurnRecorder(publisher=ExplodingPublisher(CapturingSink(), session_id=SESSION_ID))
    recorder.attach(session)

    add(session, message("user", "Still recorded."))
    interim(session, "Still")

    failures = events(logs, "transcript.handler_failed")
    assert [f["event_name"] for f in failures] == [
        "conversation_item_added",
        "user_input_transcribed",
    ]
    assert all(f["error_type"] == "TypeError" for f in failures)
    assert [t.text for t in recorder.turns] == ["Still recorded."]


# --------------------------------------------------------------------------- interim


async def test_interim_messages_come_from_non_final_user_input_transcribed_events() -> None:
    session = new_session()
    sink = CapturingSink()
    publisher = TranscriptPublisher(sink, session_id=SESSION_ID)
    TurnRecorder(publisher=publisher).attach(session)

    interim(session, "I")
    interim(session, "I need")
    interim(session, "")  # "speech stopped" signal: nothing to show
    interim(session, "I need help", is_final=True)
    add(session, message("user", "I need help"))
    interim(session, "Please")
    await publisher.finish(send_end=False)

    assert [(m["type"], m.get("itemId"), m["text"]) for m in sink.messages] == [
        ("interim", "utterance-1", "I"),
        ("interim", "utterance-1", "I need"),
        ("turn", None, "I need help"),
        ("interim", "utterance-2", "Please"),
    ]
    assert all(m["role"] == "user" and m["v"] == 1 for m in sink.messages)


async def test_interim_uses_the_provider_item_id_when_given() -> None:
    session = new_session()
    sink = CapturingSink()
    publisher = TranscriptPublisher(sink, session_id=SESSION_ID)
    TurnRecorder(publisher=publisher).attach(session)
    session.emit(
        "user_input_transcribed",
        UserInputTranscribedEvent(transcript="Hi", is_final=False, item_id="item_abc"),
    )
    await publisher.finish(send_end=False)

    assert sink.messages == [
        {"type": "interim", "v": 1, "role": "user", "itemId": "item_abc", "text": "Hi"}
    ]


# --------------------------------------------------------------------------- packets


LONG_PIECES = 'Hello "quoted" line\n😀 漢字テスト tab\there back\\slash \x01 é ß 👩‍👩‍👧 '


def long_text(min_bytes: int) -> str:
    piece_bytes = len(LONG_PIECES.encode("utf-8"))
    return LONG_PIECES * (min_bytes // piece_bytes + 1)


def test_a_short_turn_is_one_packet_without_part_fields() -> None:
    (packet,) = turn_packets(turn(7, "Short."), session_id=SESSION_ID)
    decoded = json.loads(packet)
    assert decoded == {
        "type": "turn",
        "v": 1,
        "sessionId": SESSION_ID,
        "seq": 7,
        "role": "user",
        "text": "Short.",
        "interrupted": False,
        "startedAt": "2023-11-14T22:13:27.000Z",
        "endedAt": "2023-11-14T22:13:27.000Z",
    }


def test_a_40000_byte_turn_is_split_into_parts_of_at_most_15000_bytes() -> None:
    text = long_text(40_000)
    assert len(text.encode("utf-8")) >= 40_000
    original = turn(3, text, role="assistant")

    packets = turn_packets(original, session_id=SESSION_ID)

    assert len(packets) >= 3
    assert all(len(p) <= MAX_PACKET_BYTES for p in packets)
    # greedy split: every packet but the last is full to within one escaped character
    assert all(len(p) > MAX_PACKET_BYTES - 6 for p in packets[:-1])
    decoded = [json.loads(p.decode("utf-8")) for p in packets]  # strict UTF-8: no split bytes
    assert [d["part"] for d in decoded] == list(range(1, len(packets) + 1))
    assert {d["parts"] for d in decoded} == {len(packets)}
    whole = original.model_dump(mode="json", by_alias=True)
    for d in decoded:
        assert d["type"] == "turn" and d["v"] == 1 and d["sessionId"] == SESSION_ID
        for key in ("seq", "role", "interrupted", "startedAt", "endedAt"):
            assert d[key] == whole[key]
    assert "".join(d["text"] for d in decoded) == text


def test_part_numbers_can_grow_to_two_digits_within_the_limit() -> None:
    text = long_text(6_000)
    packets = turn_packets(turn(1, text), session_id=SESSION_ID, max_bytes=500)

    decoded = [json.loads(p.decode("utf-8")) for p in packets]
    assert len(packets) >= 10
    assert all(len(p) <= 500 for p in packets)
    assert [d["part"] for d in decoded] == list(range(1, len(packets) + 1))
    assert "".join(d["text"] for d in decoded) == text


def test_a_turn_exactly_at_the_limit_is_not_split() -> None:
    # a turn has text (never empty): measure with one ASCII character, then take it off
    envelope = len(turn_packets(turn(1, "a"), session_id=SESSION_ID)[0]) - 1
    text = "a" * (MAX_PACKET_BYTES - envelope)
    (packet,) = turn_packets(turn(1, text), session_id=SESSION_ID)
    assert len(packet) == MAX_PACKET_BYTES
    assert len(turn_packets(turn(1, text + "a"), session_id=SESSION_ID)) == 2


async def test_a_split_turn_is_published_as_consecutive_parts() -> None:
    sink = CapturingSink()
    publisher = TranscriptPublisher(sink, session_id=SESSION_ID)
    publisher.publish_turn(turn(1, long_text(40_000)))
    publisher.publish_turn(turn(2, "After."))
    await publisher.finish(send_end=True)

    kinds = [(m["type"], m.get("seq"), m.get("part")) for m in sink.messages]
    parts = len(kinds) - 2
    assert kinds == [
        *[("turn", 1, n) for n in range(1, parts + 1)],
        ("turn", 2, None),
        ("end", None, None),
    ]


# --------------------------------------------------------------------------- publisher


async def test_the_room_sink_publishes_through_the_local_participant() -> None:
    sent: list[tuple[bytes, bool, str]] = []

    class LocalParticipant:
        async def publish_data(self, payload: bytes, *, reliable: bool, topic: str) -> None:
            sent.append((payload, reliable, topic))

    room = SimpleNamespace(local_participant=LocalParticipant())
    sink = room_data_sink(cast(rtc.Room, room))
    await sink(b"{}", reliable=True, topic=TRANSCRIPT_TOPIC)

    assert sent == [(b"{}", True, TRANSCRIPT_TOPIC)]


async def test_a_publish_failure_is_logged_and_the_next_turn_still_published(
    logs: Logs,
) -> None:
    sink = CapturingSink(fail=lambda m: m.get("seq") == 2)
    publisher = TranscriptPublisher(sink, session_id=SESSION_ID)
    for seq in (1, 2, 3):
        publisher.publish_turn(turn(seq))
    await publisher.finish(send_end=True)

    assert [(m["type"], m.get("seq")) for m in sink.messages] == [
        ("turn", 1),
        ("turn", 3),
        ("end", None),
    ]
    failed = events(logs, "transcript.publish_failed")
    assert [(f["seq"], f["error_type"]) for f in failed] == [(2, "PublishDataError")]
    assert publisher.failed_turns == 1 and publisher.published_turns == 2


async def test_publishes_are_strictly_sequential() -> None:
    sink = CapturingSink(delay=0.01)
    publisher = TranscriptPublisher(sink, session_id=SESSION_ID)
    for seq in range(1, 6):
        publisher.publish_turn(turn(seq))
    await publisher.finish(send_end=True)

    assert sink.max_in_flight == 1
    assert [m.get("seq") for m in sink.messages] == [1, 2, 3, 4, 5, None]


async def test_end_is_published_once_after_the_last_turn_and_nothing_after_it(
    logs: Logs,
) -> None:
    sink = CapturingSink()
    publisher = TranscriptPublisher(sink, session_id=SESSION_ID)
    publisher.publish_turn(turn(1))
    publisher.publish_turn(turn(2, role="assistant"))
    await publisher.finish(send_end=True)
    await publisher.finish(send_end=True)
    publisher.publish_turn(turn(3))
    publisher.publish_interim("utterance-9", "late")
    await asyncio.sleep(0.01)

    assert sink.messages[-1] == {"type": "end", "v": 1, "sessionId": SESSION_ID, "turnCount": 2}
    assert [m["type"] for m in sink.messages] == ["turn", "turn", "end"]
    assert publisher.end_sent
    assert events(logs, "transcript.publish_dropped")[0]["seq"] == 3


async def test_end_is_skipped_when_the_room_is_not_connected(
    logs: Logs,
) -> None:
    sink = CapturingSink()
    publisher = TranscriptPublisher(sink, session_id=SESSION_ID, is_connected=lambda: False)
    publisher.publish_turn(turn(1))
    await publisher.finish(send_end=True)

    assert sink.packets == []
    assert not publisher.end_sent
    assert events(logs, "transcript.end_skipped")
    assert publisher.skipped_turns == 1


async def test_finish_without_end_flushes_the_turns_and_sends_no_end() -> None:
    sink = CapturingSink(delay=0.005)
    publisher = TranscriptPublisher(sink, session_id=SESSION_ID)
    for seq in (1, 2):
        publisher.publish_turn(turn(seq))
    await publisher.finish(send_end=False)

    assert [m["type"] for m in sink.messages] == ["turn", "turn"]


async def test_finish_with_nothing_published_still_sends_end_with_zero_turns() -> None:
    sink = CapturingSink()
    publisher = TranscriptPublisher(sink, session_id=SESSION_ID)
    await publisher.finish(send_end=True)

    assert sink.messages == [{"type": "end", "v": 1, "sessionId": SESSION_ID, "turnCount": 0}]


async def test_finish_is_bounded_when_a_publish_hangs(logs: Logs) -> None:
    sink = CapturingSink(hang=True)
    publisher = TranscriptPublisher(sink, session_id=SESSION_ID)
    publisher.publish_turn(turn(1))
    publisher.publish_turn(turn(2))

    await asyncio.wait_for(publisher.finish(send_end=True, timeout=0.1), 2)

    assert not publisher.end_sent
    assert events(logs, "transcript.flush_timeout")[0]["last_seq"] == 2


async def test_a_full_queue_drops_new_turns_and_captions_from_the_data_channel_only(
    logs: Logs,
) -> None:
    # a data channel stalled for minutes: the FIFO holds at most `max_queued` items
    sink = CapturingSink(hang=True)
    publisher = TranscriptPublisher(sink, session_id=SESSION_ID, max_queued=3, publish_timeout=0.2)
    publisher.publish_turn(turn(1))
    await asyncio.sleep(0.05)  # turn 1 is in flight (hanging), out of the queue
    for seq in range(2, 7):
        publisher.publish_turn(turn(seq))
    publisher.publish_interim("item-7", "still talking")

    assert (publisher.dropped_turns, publisher.dropped_interims) == (2, 1)
    dropped = events(logs, "transcript.publish_dropped")
    assert [(e["seq"], e["reason"]) for e in dropped] == [(5, "queue_full"), (6, "queue_full")]
    # `end` is never refused by the bound, and counts every turn
    sink.hang = False  # turn 1's publish still hangs until its timeout: failed
    await publisher.finish(send_end=True, timeout=2)
    assert publisher.failed_turns == 1
    assert [m["seq"] for m in sink.messages if m["type"] == "turn"] == [2, 3, 4]
    assert sink.messages[-1] == {"type": "end", "v": 1, "sessionId": SESSION_ID, "turnCount": 6}


async def test_a_publish_that_hangs_past_its_timeout_counts_as_failed() -> None:
    sink = CapturingSink(hang=True)
    publisher = TranscriptPublisher(sink, session_id=SESSION_ID, publish_timeout=0.05)
    publisher.publish_turn(turn(1))
    await publisher.finish(send_end=False, timeout=2)

    assert publisher.failed_turns == 1


async def test_transcript_text_never_appears_in_logs_above_debug(
    logs: Logs,
) -> None:
    session = new_session()
    secret = "my bank pin is 4711"
    sink = CapturingSink(fail=lambda _m: True)
    publisher = TranscriptPublisher(sink, session_id=SESSION_ID)

    def broken_journal(_turn: Turn) -> None:
        raise ValueError(f"cannot store {secret!r}")

    recorder = TurnRecorder(publisher=publisher, on_turn=broken_journal)
    recorder.attach(session)
    add(session, message("user", secret))
    interim(session, secret)
    await publisher.finish(send_end=True)

    above_debug = [e for e in logs if e["log_level"] != "debug"]
    assert above_debug
    assert secret not in repr(above_debug)


# --------------------------------------------------------------------------- latency and usage


async def test_latency_percentiles_over_message_metrics() -> None:
    session = new_session()
    recorder = TurnRecorder()
    recorder.attach(session)
    for i, e2e in enumerate([0.5, 0.7, 0.6, 1.0, 0.9, 0.8, 0.55, 0.65, 0.75, 0.85, 1.5]):
        add(
            session,
            message(
                "assistant",
                f"reply {i}",
                metrics={"e2e_latency": e2e, "llm_node_ttft": 0.2, "tts_node_ttfb": 0.1 * (i + 1)},
            ),
        )
    add(session, message("user", "a", metrics={"end_of_turn_delay": 0.5}))
    add(session, message("user", "b", metrics={"end_of_turn_delay": 0.7}))

    latency = recorder.latency()
    assert latency.e2e_ms is not None
    assert (latency.e2e_ms.p50, latency.e2e_ms.p90, latency.e2e_ms.max) == (750.0, 1000.0, 1500.0)
    assert latency.llm_ttft_ms is not None and latency.llm_ttft_ms.max == 200.0
    assert latency.tts_ttfb_ms is not None
    assert (latency.tts_ttfb_ms.p50, latency.tts_ttfb_ms.max) == (600.0, 1100.0)
    assert latency.end_of_turn_ms is not None
    assert (latency.end_of_turn_ms.p50, latency.end_of_turn_ms.p90) == (600.0, 680.0)


async def test_latency_is_none_where_no_turn_measured_it() -> None:
    session = new_session()
    recorder = TurnRecorder()
    recorder.attach(session)
    add(session, message("assistant", "typed reply", metrics={"llm_node_ttft": 0.25}))

    latency = recorder.latency()
    assert latency.e2e_ms is None and latency.tts_ttfb_ms is None
    assert latency.end_of_turn_ms is None
    assert latency.llm_ttft_ms is not None and latency.llm_ttft_ms.p50 == 250.0
    assert latency.to_wire() == {"llmTtftMs": {"p50": 250.0, "p90": 250.0, "max": 250.0}}


def test_usage_maps_llm_tokens_stt_audio_seconds_and_tts_characters() -> None:
    usage = usage_from_model_usage(
        [
            LLMModelUsage(
                provider="openai", model="gpt-4o-mini", input_tokens=120, output_tokens=45
            ),
            STTModelUsage(
                provider="openai", model="gpt-4o-mini-transcribe", audio_duration=12.34567
            ),
            TTSModelUsage(
                provider="openai",
                model="gpt-4o-mini-tts",
                characters_count=300,
                audio_duration=20.5,
            ),
            InterruptionModelUsage(provider="livekit", model="adaptive", total_requests=3),
            EOTModelUsage(provider="livekit", model="turn-detector", total_requests=4),
        ]
    )

    assert usage == [
        Usage(
            kind="llm", provider="openai", model="gpt-4o-mini", input_tokens=120, output_tokens=45
        ),
        Usage(kind="stt", provider="openai", model="gpt-4o-mini-transcribe", audio_seconds=12.346),
        Usage(
            kind="tts",
            provider="openai",
            model="gpt-4o-mini-tts",
            characters=300,
            audio_seconds=20.5,
        ),
    ]
    assert usage[1].to_wire() == {
        "kind": "stt",
        "provider": "openai",
        "model": "gpt-4o-mini-transcribe",
        "audioSeconds": 12.346,
    }


def test_usage_keeps_token_counts_of_token_billed_stt_and_tts() -> None:
    (stt_usage,) = usage_from_model_usage(
        [STTModelUsage(provider="openai", model="t", input_tokens=50, output_tokens=10)]
    )
    assert (stt_usage.input_tokens, stt_usage.output_tokens) == (50, 10)


# --------------------------------------------------------------------------- hang-up RPC


RpcHandler = Callable[[rtc.RpcInvocationData], Any]


@dataclass
class FakeLocalParticipant:
    handlers: dict[str, RpcHandler] = field(default_factory=dict)

    def register_rpc_method(self, method_name: str, handler: RpcHandler) -> RpcHandler:
        self.handlers[method_name] = handler
        return handler

    async def invoke(self, caller: str) -> Any:
        data = rtc.RpcInvocationData(
            request_id="r1", caller_identity=caller, payload="", response_timeout=5.0
        )
        return await self.handlers[END_CALL_RPC_METHOD](data)


async def test_end_call_rpc_from_the_linked_participant_answers_ok_and_ends_once() -> None:
    participant = FakeLocalParticipant()
    ended: list[str] = []
    release = asyncio.Event()

    async def on_end_call(caller: str) -> None:
        await release.wait()  # the end is slow; the answer must not wait for it
        ended.append(caller)

    register_end_call_rpc(participant, on_end_call, allowed_identity=lambda: "trainee")

    assert await asyncio.wait_for(participant.invoke("trainee"), 0.5) == "ok"
    assert await asyncio.wait_for(participant.invoke("trainee"), 0.5) == "ok"
    release.set()
    await asyncio.sleep(0.01)
    assert ended == ["trainee"]


async def test_end_call_rpc_refuses_other_participants(logs: Logs) -> None:
    participant = FakeLocalParticipant()
    ended: list[str] = []

    async def on_end_call(caller: str) -> None:
        ended.append(caller)

    register_end_call_rpc(participant, on_end_call, allowed_identity=lambda: "trainee")

    with pytest.raises(rtc.RpcError) as refused:
        await participant.invoke("supervisor")
    assert refused.value.code == RPC_ERROR_FORBIDDEN
    await asyncio.sleep(0.01)
    assert ended == []
    assert events(logs, "transcript.end_call_refused")[0]["caller_identity"] == "supervisor"


async def test_end_call_rpc_refuses_everyone_before_anyone_is_linked() -> None:
    participant = FakeLocalParticipant()
    ended: list[str] = []

    async def on_end_call(caller: str) -> None:
        ended.append(caller)

    register_end_call_rpc(participant, on_end_call, allowed_identity=lambda: None)
    with pytest.raises(rtc.RpcError):
        await participant.invoke("someone")
    await asyncio.sleep(0.01)
    assert ended == []


async def test_end_call_rpc_runs_the_end_in_the_owner_task_when_given() -> None:
    participant = FakeLocalParticipant()
    spawned: list[str] = []
    tasks: list[asyncio.Task[Any]] = []
    ended: list[str] = []

    async def on_end_call(caller: str) -> None:
        ended.append(caller)

    def spawn(coro: Any, name: str) -> asyncio.Task[Any]:
        spawned.append(name)
        task = asyncio.create_task(coro, name=name)
        tasks.append(task)
        return task

    register_end_call_rpc(participant, on_end_call, allowed_identity=lambda: "trainee", spawn=spawn)
    assert await participant.invoke("trainee") == "ok"
    await asyncio.gather(*tasks)
    assert spawned == ["transcript.end_call"] and ended == ["trainee"]


async def test_a_failing_end_is_logged_not_raised(logs: Logs) -> None:
    participant = FakeLocalParticipant()

    async def on_end_call(_caller: str) -> None:
        raise RuntimeError("shutdown failed")

    register_end_call_rpc(participant, on_end_call, allowed_identity=lambda: "trainee")
    assert await participant.invoke("trainee") == "ok"
    await asyncio.sleep(0.01)
    assert events(logs, "transcript.end_call_failed")[0]["error_type"] == "RuntimeError"
