"""A text call wired as the worker wires one, for session-level tests: the loopback backend stub
holding session S1, the real HttpBackend, a journal in a temporary directory, a captured room,
the call journaled by the worker's own `open_journal`, and a text AgentSession (no audio, no
turn detection) with the worker's transcript wiring (`attach_transcript`).

    async with text_call(tmp_path, reply="I lost my job.") as tc:
        await tc.greet_then_say("What's on your mind?")
        await tc.hang_up()
        ...  # tc.stub, tc.journal, tc.room, tc.call: what each test asserts on
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from livekit.agents import AgentSession
from pydantic import SecretStr

from agent.backend import HttpBackend
from agent.call import Call
from agent.call.finish import finish
from agent.call.session import attach_transcript
from agent.journal import Journal
from agent.persona import PersonaAgent
from agent.prompts import load_scenario
from tests.support.backend_stub import BackendStub
from tests.support.calls import SESSION, open_default_call
from tests.support.fakes import CaptureRoom, FakeLLM
from tests.support.settings import make_settings

KEY = "internal-service-key-for-tests"


@dataclass
class TextCall:
    data_dir: Path
    stub: BackendStub
    backend: HttpBackend
    journal: Journal
    room: CaptureRoom
    call: Call
    session: AgentSession[Call]

    async def greet_then_say(self, user_says: str) -> None:
        """The persona greets (it speaks first), then the caller says `user_says` and the
        persona answers."""
        greeted = asyncio.Event()
        self.session.on("conversation_item_added", lambda _event: greeted.set())
        await self.session.start(PersonaAgent(load_scenario("default")))
        await asyncio.wait_for(greeted.wait(), 5)
        await self.session.run(user_input=user_says)

    async def hang_up(self) -> None:
        await hang_up_and_finish(self.call, self.session, self.data_dir)


def text_session(
    call: Call, room: CaptureRoom, *, reply: str | FakeLLM, checkpoint_seconds: float = 0.0
) -> AgentSession[Call]:
    """The call's text AgentSession (the call as its userdata, as in the worker), with the
    worker's transcript wiring attached."""
    fake_llm = reply if isinstance(reply, FakeLLM) else FakeLLM(reply)
    session: AgentSession[Call] = AgentSession(
        llm=fake_llm, turn_handling={"turn_detection": None}, userdata=call
    )
    call.agent_session = session
    attach_transcript(call, session, room.as_room(), checkpoint_seconds=checkpoint_seconds)
    return session


async def hang_up_and_finish(
    call: Call, session: AgentSession[Call], data_dir: Path | None = None
) -> None:
    """The caller hangs up; the call ends as the worker ends it (`finish`)."""
    await session.aclose()
    call.end_reason("caller_hangup")
    env = {} if data_dir is None else {"AGENT_DATA_DIR": str(data_dir)}
    await finish(call, make_settings(**env))


@asynccontextmanager
async def text_call(
    data_dir: Path, *, reply: str = "I lost my job.", checkpoint_seconds: float = 0.0
) -> AsyncIterator[TextCall]:
    async with BackendStub(key=KEY) as stub:
        stub.add_session(SESSION)
        backend = HttpBackend(stub.url, SecretStr(KEY))
        journal = Journal.in_dir(data_dir)
        try:
            room = CaptureRoom()
            call = await open_default_call(backend, journal, room)
            session = text_session(call, room, reply=reply, checkpoint_seconds=checkpoint_seconds)
            yield TextCall(data_dir, stub, backend, journal, room, call, session)
        finally:
            await backend.aclose()
            journal.close()
