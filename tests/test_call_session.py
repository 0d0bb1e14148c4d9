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
from agent.call import Call, deliver_transcript
from agent.journal import Journal
from agent.models import JobMetadata, Session
from agent.persona import PersonaAgent, greeting
from agent.prompts import load_scenario
from agent.transcript import TranscriptPublisher, TurnRecorder
from tests.support.backend_stub import BackendStub
from tests.support.fakes import FakeLLM

KEY = "internal-service-key-for-tests"


class CapturingSink:
    def __init__(self) -> None:
        self.packets: list[dict[str, object]] = []

    async def __call__(self, payload: bytes, *, reliable: bool, topic: str) -> None:
        assert reliable and topic == "transcript"
        self.packets.append(json.loads(payload))


async def test_turns_reach_the_journal_the_data_channel_and_the_backend(tmp_path: Path) -> None:
    scenario = load_scenario("default")
    async with BackendStub(key=KEY) as stub:
        stub.add_session(Session(id="S1", user_id="u1", scenario_id="default", attempt_number=1))
        backend = HttpBackend(stub.url, SecretStr(KEY))
        journal = Journal.in_dir(tmp_path)
        call = Call(
            "AJ_1",
            "room-1",
            JobMetadata(scenario_id="default", user_id="u1", session_id="S1"),
            backend=backend,
            journal=journal,
            scenario=scenario,
            session=Session(id="S1", user_id="u1", scenario_id="default", attempt_number=1),
        )
        journal.open_call("AJ_1", session_id="S1", attempt_number=1, started_at=call.started_at)
        sink = CapturingSink()
        call.publisher = TranscriptPublisher(sink, session_id="S1")
        call.recorder = TurnRecorder(
            on_turn=lambda turn: journal.append_turn("AJ_1", turn), publisher=call.publisher
        )
        session: AgentSession[None] = AgentSession(
            llm=FakeLLM("I lost my job."), turn_handling={"turn_detection": None}
        )
        call.agent_session = session
        call.recorder.attach(session)
        greeted = asyncio.Event()
        session.on("conversation_item_added", lambda _event: greeted.set())
        await session.start(PersonaAgent(scenario))
        await asyncio.wait_for(greeted.wait(), 5)  # the persona speaks first
        await session.run(user_input="What's on your mind?")
        # journaled at once, before the call ends
        assert [t.seq for t in journal.turns("AJ_1")] == [1, 2, 3]
        await session.aclose()
        call.end_reason("caller_hangup")
        await call.publisher.finish(send_end=True)
        outcome = await deliver_transcript(call, deadline=5)
        await backend.aclose()

        assert outcome is not None and outcome.status == "delivered"
        texts = [greeting(scenario), "What's on your mind?", "I lost my job."]
        turn_packets = [p for p in sink.packets if p["type"] == "turn"]
        assert [(p["seq"], p["text"]) for p in turn_packets] == list(enumerate(texts, start=1))
        assert sink.packets[-1] == {"type": "end", "v": 1, "sessionId": "S1", "turnCount": 3}
        stored = stub.best_transcript("S1")
        assert stored is not None
        body = stored.payload
        assert body.complete and body.ended_reason == "caller_hangup" and body.turn_count == 3
        assert [t.text for t in body.turns] == texts
        assert [u.kind for u in body.usage] == ["llm"]
        assert journal.state("AJ_1") is None  # delivered rows are removed
        journal.close()
