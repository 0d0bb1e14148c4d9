"""Session layer, text mode: the project's persona agent in a real AgentSession with a fake LLM."""

from __future__ import annotations

import asyncio

from livekit.agents import AgentSession, llm
from livekit.agents.voice.run_result import RunResult

from agent.persona import PersonaAgent, greeting
from agent.prompts import load_prompt, load_scenario
from tests.support.fakes import FakeLLM


async def wait_for_messages(session: AgentSession[None], count: int) -> None:
    added = asyncio.Event()
    session.on("conversation_item_added", lambda _event: added.set())
    async with asyncio.timeout(5):
        while len(session.history.messages()) < count:
            await added.wait()
            added.clear()


async def test_the_persona_greets_first_then_answers_the_user() -> None:
    scenario = load_scenario("default")
    fake = FakeLLM("I'm not sure where to start.")
    session: AgentSession[None] = AgentSession(
        llm=fake, vad=None, turn_handling={"turn_detection": None}
    )
    await session.start(PersonaAgent(scenario))
    try:
        await wait_for_messages(session, 1)
        result: RunResult[None] = await session.run(
            user_input="Hi, I'm here to listen. What's going on?"
        )
        result.expect.next_event().is_message(role="assistant")
        result.expect.no_more_events()
        roles_and_text = [(m.role, m.text_content) for m in session.history.messages()]
        assert roles_and_text == [
            ("assistant", greeting(scenario)),
            ("user", "Hi, I'm here to listen. What's going on?"),
            ("assistant", "I'm not sure where to start."),
        ]
    finally:
        await session.aclose()


async def test_the_llm_gets_the_system_prompt_and_the_scenario() -> None:
    scenario = load_scenario("default")
    fake = FakeLLM("Okay.")
    session: AgentSession[None] = AgentSession(
        llm=fake, vad=None, turn_handling={"turn_detection": None}
    )
    await session.start(PersonaAgent(scenario))
    try:
        await session.run(user_input="Hello")
        first_item = fake.calls[0].chat_ctx.items[0]
        assert isinstance(first_item, llm.ChatMessage)
        instructions = first_item.text_content or ""
        assert instructions.startswith(load_prompt("system"))
        assert scenario.prompt in instructions
    finally:
        await session.aclose()
