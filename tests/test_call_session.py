"""Session level, the whole transcript path: a real AgentSession's turns reach the journal (at
once), the data channel (in order, then `end`) and the backend (the final transcript), through
the same `Call` the worker uses."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from livekit.agents import AgentSession
from pydantic import SecretStr

from agent.backend import HttpBackend
from agent.call.finish import finish
from agent.call.session import attach_transcript
from agent.journal import Journal
from agent.persona import PersonaAgent, greeting
from agent.prompts import load_scenario
from tests.support import journal_probe
from tests.support.backend_stub import BackendStub
from tests.support.calls import SESSION, open_default_call
from tests.support.fakes import CaptureRoom, FakeLLM
from tests.support.settings import make_settings

KEY = "internal-service-key-for-tests"


async def test_turns_reach_the_journal_the_data_channel_and_the_backend(tmp_path: Path) -> None:
    scenario = load_scenario("default")
    async with BackendStub(key=KEY) as stub:
        stub.add_session(SESSION)
        backend = HttpBackend(stub.url, SecretStr(KEY))
        journal = Journal.in_dir(tmp_path)
        room = CaptureRoom()
        call = await open_default_call(backend, journal, room)
        # the worker's own wiring; the session is a text one (no room, no audio)
        session: AgentSession[None] = AgentSession(
            llm=FakeLLM("I lost my job."), turn_handling={"turn_detection": None}
        )
        call.agent_session = session
        attach_transcript(call, session, room.as_room())
        greeted = asyncio.Event()
        session.on("conversation_item_added", lambda _event: greeted.set())
        await session.start(PersonaAgent(scenario))
        await asyncio.wait_for(greeted.wait(), 5)  # the persona speaks first
        await session.run(user_input="What's on your mind?")
        # journaled at once, before the call ends
        assert [t.seq for t in journal_probe.turns(journal, "AJ_1")] == [1, 2, 3]
        await session.aclose()
        call.end_reason("caller_hangup")
        await finish(call, make_settings(AGENT_DATA_DIR=str(tmp_path)))
        outcome = call.outcome
        await backend.aclose()

        sink_packets = [json.loads(payload) for topic, payload in room.local_participant.packets]
        assert {topic for topic, _ in room.local_participant.packets} == {"transcript"}
        assert outcome is not None and outcome.status == "delivered"
        texts = [greeting(scenario), "What's on your mind?", "I lost my job."]
        turn_packets = [p for p in sink_packets if p["type"] == "turn"]
        assert [(p["seq"], p["text"]) for p in turn_packets] == list(enumerate(texts, start=1))
        assert sink_packets[-1] == {"type": "end", "v": 1, "sessionId": "S1", "turnCount": 3}
        stored = stub.best_transcript("S1")
        assert stored is not None
        body = stored.payload
        assert body.complete and body.ended_reason == "caller_hangup" and body.turn_count == 3
        assert [t.text for t in body.turns] == texts
        assert [u.kind for u in body.usage] == ["llm"]
        assert journal.state("AJ_1") is None  # delivered rows are removed
        journal.close()
