"""persona.py: instructions and greeting from prompts/ + the scenario, and the apology agent
(the backend is down at job start: the caller hears a short apology, and nothing hangs)."""

from __future__ import annotations

import asyncio

import pytest
from livekit.agents import AgentSession

from agent import persona
from agent.models import Scenario
from agent.persona import ApologyAgent, greeting, instructions
from agent.prompts import load_prompt
from tests.support.fakes import CaptureAudioOutput, FakeTTS

SCENARIO = Scenario(id="s1", title="T", prompt="You are Alex.", greeting="Hello there.")


def test_instructions_are_the_system_prompt_then_the_scenario() -> None:
    text = instructions(SCENARIO)
    assert text.startswith(load_prompt("system")) and text.endswith("You are Alex.")


def test_the_scenario_greeting_wins_over_the_bundled_one() -> None:
    assert greeting(SCENARIO) == "Hello there."
    assert greeting(SCENARIO.model_copy(update={"greeting": None})) == load_prompt("greeting")


async def apology_session(output: CaptureAudioOutput) -> tuple[AgentSession[None], FakeTTS]:
    tts = FakeTTS()
    session: AgentSession[None] = AgentSession(tts=tts, turn_handling={"turn_detection": None})
    session.output.audio = output
    return session, tts


async def test_the_apology_is_spoken_whole_then_the_call_ends() -> None:
    output = CaptureAudioOutput()
    session, tts = await apology_session(output)
    done = asyncio.Event()
    try:
        await session.start(ApologyAgent(on_done=done.set))
        await asyncio.wait_for(done.wait(), 10)
    finally:
        await session.aclose()
    assert " ".join(tts.inputs) == load_prompt("apology")
    assert [s.interrupted for s in output.segments] == [False]
    # the end came after the playout, not before it
    assert output.segments[0].finished_at is not None


async def test_the_apology_path_never_hangs_on_a_stuck_playout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class StuckOutput(CaptureAudioOutput):
        def flush(self) -> None:  # never reports playback finished
            return None

    monkeypatch.setattr(persona, "APOLOGY_PLAYOUT_TIMEOUT", 0.5)
    session, _ = await apology_session(StuckOutput())
    done = asyncio.Event()
    try:
        await session.start(ApologyAgent(on_done=done.set))
        await asyncio.wait_for(done.wait(), 5)
    finally:
        await asyncio.wait_for(session.aclose(), 10)


async def test_a_call_that_ends_before_the_caller_listens_closes_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def never_ready(*_args: object, **_kwargs: object) -> bool:
        await asyncio.Event().wait()
        return True

    monkeypatch.setattr(persona, "wait_until_listening", never_ready)
    session: AgentSession[None] = AgentSession(
        tts=FakeTTS(), turn_handling={"turn_detection": None}
    )
    await session.start(persona.PersonaAgent(SCENARIO))
    # the close must not wait for a caller who never came
    await asyncio.wait_for(session.aclose(), 3)
