"""Session level, the whole transcript path: a real AgentSession's turns reach the journal (at
once), the data channel (in order, then `end`) and the backend (the final transcript), through
the same `Call` the worker uses (tests/support/text_call.py wires it as the worker does)."""

from __future__ import annotations

import json
from pathlib import Path

from livekit.agents.voice import room_io

from agent.call.session import _room_options
from agent.models import JobMetadata
from agent.persona import greeting
from agent.prompts import load_scenario
from tests.support import journal_probe
from tests.support.settings import make_settings
from tests.support.text_call import text_call


async def test_turns_reach_the_journal_the_data_channel_and_the_backend(tmp_path: Path) -> None:
    scenario = load_scenario("default")
    async with text_call(tmp_path, reply="I lost my job.") as tc:
        await tc.greet_then_say("What's on your mind?")
        # journaled at once, before the call ends
        assert [t.seq for t in journal_probe.turns(tc.journal, "AJ_1")] == [1, 2, 3]
        await tc.hang_up()
        outcome = tc.call.outcome
        stored = tc.stub.best_transcript("S1")
        assert tc.journal.state("AJ_1") is None  # delivered rows are removed

    sink_packets = [json.loads(payload) for topic, payload in tc.room.local_participant.packets]
    assert {topic for topic, _ in tc.room.local_participant.packets} == {"transcript"}
    assert outcome is not None and outcome.status == "delivered"
    texts = [greeting(scenario), "What's on your mind?", "I lost my job."]
    turn_packets = [p for p in sink_packets if p["type"] == "turn"]
    assert [(p["seq"], p["text"]) for p in turn_packets] == list(enumerate(texts, start=1))
    assert sink_packets[-1] == {"type": "end", "v": 1, "sessionId": "S1", "turnCount": 3}
    assert stored is not None
    body = stored.payload
    assert body.complete and body.ended_reason == "caller_hangup" and body.turn_count == 3
    assert [t.text for t in body.turns] == texts
    assert [u.kind for u in body.usage] == ["llm"]


def test_the_room_input_takes_its_frame_length_and_gain_control_from_the_settings() -> None:
    meta = JobMetadata(scenario_id="default", user_id="u1")
    shipped = _room_options(meta, make_settings()).audio_input
    asked = _room_options(meta, make_settings(INPUT_FRAME_MS="100", AUTO_GAIN_CONTROL="true"))
    assert isinstance(shipped, room_io.AudioInputOptions)
    assert isinstance(asked.audio_input, room_io.AudioInputOptions)
    # the library's 50 ms frames: 100 costs less CPU but answers and stops later (performance.md)
    assert (shipped.frame_size_ms, shipped.auto_gain_control) == (50, False)
    assert (asked.audio_input.frame_size_ms, asked.audio_input.auto_gain_control) == (100, True)
    assert shipped.pre_connect_audio is False  # the agent speaks first
