"""The close waits for a last transcript only while the caller's words are in flight
(DESIGN.md, "When a call ends"; issue 14 part 3). The session is the one the worker builds
(`build_session`); the caller's speech is played as the session's own public events."""

from __future__ import annotations

import asyncio

from livekit.agents import AgentSession
from livekit.agents.voice.events import UserInputTranscribedEvent, UserStateChangedEvent

from agent.close_wait import wait_only_for_words_in_flight
from agent.pipeline import build_session
from tests.support.settings import make_settings

BOUND = 5.0  # the configured bound (SESSION_CLOSE_TRANSCRIPT_TIMEOUT)


def close_wait(session: AgentSession[None]) -> float:
    return session.options.session_close_transcript_timeout


def user_state(session: AgentSession[None], old: str, new: str) -> None:
    session.emit("user_state_changed", UserStateChangedEvent(old_state=old, new_state=new))


def transcribed(session: AgentSession[None], text: str, *, final: bool) -> None:
    session.emit(
        "user_input_transcribed", UserInputTranscribedEvent(transcript=text, is_final=final)
    )


async def test_a_built_session_waits_for_nothing_while_nobody_speaks() -> None:
    session: AgentSession[None] = build_session(make_settings(), None)
    assert close_wait(session) == 0.0


async def test_a_built_session_waits_the_bound_while_the_caller_speaks_until_the_transcript() -> (
    None
):
    session: AgentSession[None] = build_session(make_settings(), None)
    user_state(session, "listening", "speaking")
    assert close_wait(session) == BOUND
    # speech ended: a batch STT is transcribing it now, the words are still in flight
    user_state(session, "speaking", "listening")
    assert close_wait(session) == BOUND
    transcribed(session, "I need to talk", final=True)
    assert close_wait(session) == 0.0


async def test_interim_words_are_in_flight_until_the_final_transcript() -> None:
    session: AgentSession[None] = AgentSession()
    wait_only_for_words_in_flight(session, 3.0)
    transcribed(session, "I need", final=False)
    assert close_wait(session) == 3.0
    transcribed(session, "I need to talk", final=True)
    assert close_wait(session) == 0.0


async def test_speech_that_never_yields_a_transcript_stops_counting_after_the_bound() -> None:
    session: AgentSession[None] = AgentSession()
    wait_only_for_words_in_flight(session, 0.05)
    user_state(session, "listening", "speaking")
    await asyncio.sleep(0.1)  # speaking as long as it lasts: no expiry while speaking
    assert close_wait(session) == 0.05
    user_state(session, "speaking", "listening")  # noise: the STT will answer nothing
    assert close_wait(session) == 0.05
    await asyncio.sleep(0.3)  # well past the bound
    assert close_wait(session) == 0.0


async def test_speaking_again_cancels_the_expiry() -> None:
    session: AgentSession[None] = AgentSession()
    wait_only_for_words_in_flight(session, 0.05)
    user_state(session, "listening", "speaking")
    user_state(session, "speaking", "listening")
    user_state(session, "listening", "speaking")
    await asyncio.sleep(0.15)
    assert close_wait(session) == 0.05


async def test_a_final_that_came_before_the_end_of_speech_leaves_nothing_in_flight() -> None:
    """A streaming STT: the final transcript arrives before the VAD calls the speech over."""
    session: AgentSession[None] = build_session(make_settings(), None)
    user_state(session, "listening", "speaking")
    transcribed(session, "I need", final=False)
    transcribed(session, "I need to talk", final=True)
    assert close_wait(session) == BOUND  # still speaking
    user_state(session, "speaking", "listening")
    assert close_wait(session) == 0.0


async def test_words_after_a_final_are_in_flight_again() -> None:
    session: AgentSession[None] = AgentSession()
    wait_only_for_words_in_flight(session, 3.0)
    user_state(session, "listening", "speaking")
    transcribed(session, "I need to talk", final=True)
    transcribed(session, "about", final=False)
    user_state(session, "speaking", "listening")
    assert close_wait(session) == 3.0
