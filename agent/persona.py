"""The persona: instructions, greeting, apology and closing lines from prompts/ + the scenario,
and the two Agent classes the worker runs.

Rule: what the agent says comes from prompts/ or the scenario, never from code. The greeting is
spoken from `Agent.on_enter` once the linked participant is ready to hear it: no sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from livekit.agents import Agent, AgentSession

from agent.log import get_logger
from agent.models import Scenario
from agent.prompts import load_prompt

log = get_logger(__name__)

APOLOGY_LINK_TIMEOUT = 10.0
APOLOGY_PLAYOUT_TIMEOUT = 15.0


def instructions(scenario: Scenario) -> str:
    return f"{load_prompt('system')}\n\n{scenario.prompt.strip()}"


def greeting(scenario: Scenario) -> str:
    return scenario.greeting or load_prompt("greeting")


async def wait_until_listening(session: AgentSession[Any], timeout: float | None = None) -> bool:
    """True once the linked participant is there with audio published and subscribed; True at
    once without a room (text mode, tests); False when `timeout` passes first."""
    try:
        room_io = session.room_io
    except RuntimeError:
        return True
    try:
        # shielded: a timeout here must not cancel the room IO's own readiness future
        await asyncio.wait_for(asyncio.shield(room_io.wait_for_ready()), timeout)
    except TimeoutError:
        return False
    return True


class PersonaAgent(Agent):
    """Plays the scenario persona; greets once the caller can hear it."""

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(instructions=instructions(scenario))
        self._greeting = greeting(scenario)
        self._greeter: asyncio.Task[None] | None = None

    async def on_enter(self) -> None:
        # The session's close awaits on_enter: waiting for the caller in here would hold every
        # early end (room closed, job terminated) until the wait gave up. The wait runs in a
        # task this agent owns instead, cancelled in on_exit.
        self._greeter = asyncio.create_task(self._greet_when_listening(), name="persona.greet")

    async def on_exit(self) -> None:
        if self._greeter is not None and not self._greeter.done():
            self._greeter.cancel()
            await asyncio.gather(self._greeter, return_exceptions=True)

    async def _greet_when_listening(self) -> None:
        await wait_until_listening(self.session)
        self.session.say(self._greeting)


class ApologyAgent(Agent):
    """Used when the backend is unreachable at job start: says the apology (TTS only, no LLM),
    uninterruptible, waits for it to play, then ends the call through `on_done`."""

    def __init__(self, on_done: Callable[[], None]) -> None:
        super().__init__(instructions="")
        self._on_done = on_done

    async def on_enter(self) -> None:
        try:
            if await wait_until_listening(self.session, APOLOGY_LINK_TIMEOUT):
                handle = self.session.say(load_prompt("apology"), allow_interruptions=False)
                try:
                    await asyncio.wait_for(handle.wait_for_playout(), APOLOGY_PLAYOUT_TIMEOUT)
                except TimeoutError:
                    log.warning("apology.playout_timeout", timeout_s=APOLOGY_PLAYOUT_TIMEOUT)
            else:
                log.info("apology.nobody_joined", timeout_s=APOLOGY_LINK_TIMEOUT)
        finally:
            self._on_done()
