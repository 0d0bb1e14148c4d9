"""The persona: instructions, greeting, resume, apology and closing lines from prompts/ + the
scenario, and the two Agent classes the worker runs.

Rule: what the agent says comes from prompts/ or the scenario, never from code. The opening line
(the greeting; for a resumed call the resume line, after the earlier turns given as the chat
context) is spoken from `Agent.on_enter` once the linked participant is ready to hear it: no
sleeps. An opening line the caller cut into after hearing its start is a turn (interrupted, what
was played), like any other reply cut after its first audio frame.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from livekit import rtc
from livekit.agents import Agent, AgentSession, ModelSettings, llm, stt
from livekit.agents.types import NOT_GIVEN
from livekit.agents.voice import io
from livekit.agents.voice.speech_handle import SpeechHandle

from agent import early_reply
from agent.log import get_logger
from agent.models import Scenario, Turn
from agent.prompts import load_prompt
from agent.turn_taking import without_backchannels

log = get_logger(__name__)

APOLOGY_LINK_TIMEOUT = 10.0
APOLOGY_PLAYOUT_TIMEOUT = 15.0


def instructions(scenario: Scenario) -> str:
    return f"{load_prompt('system')}\n\n{scenario.prompt.strip()}"


def greeting(scenario: Scenario) -> str:
    return scenario.greeting or load_prompt("greeting")


def resume_line() -> str:
    """What the persona says instead of the greeting when its call resumes after an outage."""
    return load_prompt("resume")


def earlier_context(turns: Sequence[Turn]) -> llm.ChatContext:
    """A resumed call's earlier turns as chat messages, in order: the persona remembers what
    was said (the library puts the instructions before them)."""
    return llm.ChatContext(
        [
            llm.ChatMessage(
                id=f"earlier-{turn.seq}",
                role=turn.role,
                content=[turn.text],
                interrupted=turn.interrupted,
                created_at=turn.started_at.timestamp(),
            )
            for turn in turns
        ]
    )


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
    """Plays the scenario persona; greets once the caller can hear it. With `earlier_turns`
    (a resumed call) it starts from them and says the resume line instead of the greeting."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        earlier_turns: Sequence[Turn] = (),
        before_speaking: Callable[[AgentSession[Any]], Awaitable[None]] | None = None,
        hold_unfinished: bool = True,
        language: str = "en",
        finished_max_delay: float | None = None,
    ) -> None:
        """`before_speaking`: what must wrap the session's audio once it exists and before
        the first word (the call's recording); it must not raise. `hold_unfinished`
        (PREEMPTIVE_HOLD): an early reply to a transcript that sounds unfinished waits for the
        end-of-turn model (agent.early_reply); `language` (LANGUAGE) is the call's unless the
        scenario names its own; `finished_max_delay` (FINISHED_MAX_DELAY_SECONDS) shortens the
        model's hold of a turn whose transcript sounds finished."""
        super().__init__(
            instructions=instructions(scenario),
            chat_ctx=earlier_context(earlier_turns) if earlier_turns else NOT_GIVEN,
        )
        self._greeting = resume_line() if earlier_turns else greeting(scenario)
        self._greeter: asyncio.Task[None] | None = None
        self._before_speaking = before_speaking
        self._hold_unfinished = hold_unfinished
        self._language = scenario.language or language
        self._finished_max_delay = finished_max_delay
        self._early_reply: early_reply.EarlyReplyHold | None = None

    async def stt_node(
        self, audio: AsyncIterable[rtc.AudioFrame], model_settings: ModelSettings
    ) -> AsyncIterator[stt.SpeechEvent | str]:
        """The library's transcription, less the backchannels said while the persona replies
        (agent.turn_taking.without_backchannels): "mm-hm" never derails a reply."""
        events = Agent.default.stt_node(self, audio, model_settings)
        assert isinstance(events, AsyncIterable)
        async for event in without_backchannels(events, self._replying):
            yield event

    def _replying(self) -> bool:
        speech = self.session.current_speech
        return speech is not None and not speech.done()

    async def on_enter(self) -> None:
        if self._hold_unfinished:
            self._early_reply = early_reply.attach(
                self, language=self._language, finished_max_delay=self._finished_max_delay
            )
        # The room's audio IO exists from here on, and nothing has been said yet.
        if self._before_speaking is not None:
            await self._before_speaking(self.session)
        # The session's close awaits on_enter: waiting for the caller in here would hold every
        # early end (room closed, job terminated) until the wait gave up. The wait runs in a
        # task this agent owns instead, cancelled in on_exit.
        self._greeter = asyncio.create_task(self._greet_when_listening(), name="persona.greet")

    async def on_exit(self) -> None:
        if self._early_reply is not None:
            self._early_reply.close()
        if self._greeter is not None and not self._greeter.done():
            self._greeter.cancel()
            await asyncio.gather(self._greeter, return_exceptions=True)

    async def _greet_when_listening(self) -> None:
        await wait_until_listening(self.session)
        playout = _Playout(self.session.output.audio)
        handle = self.session.say(self._greeting)
        handle.add_done_callback(lambda done: self._greeting_done(done, playout))

    def _greeting_done(self, handle: SpeechHandle, playout: _Playout) -> None:
        # A done callback of the library's speech handle: it must never raise.
        try:
            playout.close()
            if not handle.interrupted or not playout.heard:
                return  # played whole (the library's item), or cut before the caller heard it
            if any(isinstance(item, llm.ChatMessage) for item in handle.chat_items):
                return  # the library recorded the words that were played
            # Cut inside its first word: the transcript synchronizer had released no text, so
            # the library adds no item and the greeting the caller heard would vanish from the
            # transcript. What was played is (part of) that first word.
            started = playout.started_at or time.time()
            stopped = max(playout.finished_at or time.time(), started)
            message = llm.ChatMessage(
                role="assistant",
                content=[self._greeting.split(maxsplit=1)[0]],
                interrupted=True,
                created_at=started,
                metrics={"started_speaking_at": started, "stopped_speaking_at": stopped},
            )
            # The library's own hook for a spoken message: it goes into the session history and
            # out as `conversation_item_added`, where the TurnRecorder takes it like any turn.
            self.session._conversation_item_added(message)
            log.info("persona.greeting_cut_in_first_word", played_s=round(playout.position, 3))
        except Exception as error:
            log.error("persona.greeting_done_failed", error_type=type(error).__name__)


class _Playout:
    """When the next playback segment of `output` started and how much of it played: enough to
    tell whether the caller heard any of a speech the library left without text."""

    def __init__(self, output: io.AudioOutput | None) -> None:
        self._output = output
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.position = 0.0
        if output is not None:
            output.on("playback_started", self._on_started)
            output.on("playback_finished", self._on_finished)

    @property
    def heard(self) -> bool:
        return self.started_at is not None and self.position > 0

    def close(self) -> None:
        if self._output is not None:
            self._output.off("playback_started", self._on_started)
            self._output.off("playback_finished", self._on_finished)
            self._output = None

    def _on_started(self, event: io.PlaybackStartedEvent) -> None:
        if self.started_at is None:
            self.started_at = event.created_at

    def _on_finished(self, event: io.PlaybackFinishedEvent) -> None:
        if self.finished_at is None and self.started_at is not None:
            self.finished_at = time.time()
            self.position = event.playback_position


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
