"""End to end: the persona takes turns like a person (DESIGN.md "Taking turns"), through the real
worker with its shipped turn taking, the stand-in and WebRTC, on the committed piper corpus
(tests/audio/turns/: the manifest says where each utterance's pause and true end are).

- A trainee who pauses 1.2 s to think mid-sentence is not answered before the whole utterance
  ends, and the utterance is one user turn.
- A trainee who pauses after "uh" costs the reply one LLM request, not two: the early reply to
  the words before the pause is held (PREEMPTIVE_HOLD) and dropped when they go on.
- A trainee who talks over the greeting stops it (the library's AEC warm-up would ignore them
  for its first 3 s).
- A backchannel ("mm-hm") during a reply does not derail it: it goes on (or resumes), one turn.

Bounds are generous (a loaded CI machine): what they catch is the behaviour, not its speed;
bench/bench_turn_taking.py prints the figures.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

import pytest

from agent.prompts import load_scenario
from tests.e2e import test_worker_e2e
from tests.e2e.test_worker_e2e import TEST_BUDGET, WAV, Stack, metadata, start_call, turns_of
from tests.support.turn_corpus import TURNS, pause_parts, utterance

pytestmark = pytest.mark.e2e

stack = test_worker_e2e.stack  # the same stack fixture as the worker's scenarios

# a 1.5 s stretch of agent audio inside a window counts as "the agent spoke" there; a stopped
# agent is one whose audio ends within STOP_BOUND of the caller's first word
STOP_BOUND: Final = 1.5
LONG_REPLY: Final = (
    "I hear you, and I want to take this slowly with you, because a lot has happened this "
    "week and none of it sounds easy, so tell me which part weighs on you the most right now."
)


def words(said: dict[str, Any]) -> str:
    """What a real STT makes of the utterance (the stub transcribes whatever it is told)."""
    return " ".join(str(said["text"]).replace("...", " ").split())


async def rest_after_first_segment(stack: Stack, rest: str, since: float) -> None:
    """The stub transcribes every segment as its configured transcript: once it has sent the
    first segment's final, the next one is the rest of the utterance."""
    for _ in range(400):  # bounded: 20 s
        events = await stack.openai.realtime_events(direction="out", since=since)
        if any(
            e["event"]["type"] == "conversation.item.input_audio_transcription.completed"
            for e in events
        ):
            await stack.openai.configure(transcript=rest)
            return
        await asyncio.sleep(0.05)


async def test_a_thinking_pause_is_not_answered_before_the_whole_utterance(stack: Stack) -> None:
    said = utterance("pause_because_1p2")
    assert said["pause"]["seconds"] == 1.2
    async with asyncio.timeout(TEST_BUDGET):
        await stack.start_worker()
        call = await start_call(stack, "room-pause", "caller-1", metadata())
        caller = call.caller
        # as a real STT hears it: the words before the pause, then the rest
        first, rest = pause_parts(said)
        await stack.openai.configure(transcript=first)
        switch = asyncio.create_task(rest_after_first_segment(stack, rest, since=time.time()))
        try:
            started, _ = await caller.speak(TURNS / said["file"], timeout=20)
        finally:
            switch.cancel()
            await asyncio.gather(switch, return_exceptions=True)
        pause_start = started + said["pause"]["start"]
        true_end = started + said["end_of_speech"]
        reply_at = await caller.wait_for_audio(after=pause_start, timeout=25)
        reply = await caller.wait_for_message(
            lambda m: m["type"] == "turn" and m["role"] == "assistant" and m["seq"] > 1,
            timeout=25,
            what="the reply's turn",
        )
        print(
            f"thinking pause: reply {reply_at - true_end:+.2f}s after the true end "
            f"(pause {said['pause']['start']:.2f}-{said['pause']['end']:.2f}s into the utterance)"
        )
        assert reply_at > true_end, (
            f"the agent answered {true_end - reply_at:.2f}s before the caller finished: it "
            "took the thinking pause for the end of the turn"
        )
        turns = turns_of(caller)
        users = [t for t in turns if t["role"] == "user" and t["seq"] < reply["seq"]]
        assert len(users) == 1, f"the utterance became {len(users)} user turns"


async def test_a_thinking_pause_costs_the_reply_one_llm_request(stack: Stack) -> None:
    said = utterance("pause_uh_0p8")  # "The first year would come to uh ... about twelve ..."
    first, rest = pause_parts(said)
    async with asyncio.timeout(TEST_BUDGET):
        await stack.start_worker()
        call = await start_call(stack, "room-held", "caller-1", metadata())
        caller = call.caller
        await stack.openai.configure(transcript=first)
        chats_before = len(await stack.openai.requests("chat"))
        switch = asyncio.create_task(rest_after_first_segment(stack, rest, since=time.time()))
        try:
            started, _ = await caller.speak(TURNS / said["file"], timeout=20)
            true_end = started + said["end_of_speech"]
            reply_at = await caller.wait_for_audio(
                after=started + said["pause"]["start"], timeout=25
            )
            reply = await caller.wait_for_message(
                lambda m: m["type"] == "turn" and m["role"] == "assistant" and m["seq"] > 1,
                timeout=25,
                what="the reply's turn",
            )
        finally:
            switch.cancel()
            await asyncio.gather(switch, return_exceptions=True)
        chats = len(await stack.openai.requests("chat")) - chats_before
        users = [t for t in turns_of(caller) if t["role"] == "user" and t["seq"] < reply["seq"]]
        print(f"paused after 'uh': {chats} LLM request(s), reply {reply_at - true_end:+.2f}s")
        assert reply_at > true_end, "the agent answered inside the pause"
        assert [u["text"] for u in users] == [f"{first} {rest}"]
        assert chats == 1, f"{chats} LLM requests for one answered turn: the pause cost one more"


async def test_talking_over_the_greeting_stops_it(stack: Stack) -> None:
    cut_in = utterance("bargein_hang_on")
    async with asyncio.timeout(TEST_BUDGET):
        # a greeting that would last ~5 s, and the cut-in transcribed as said
        await stack.openai.configure(tts_max_seconds=8.0, transcript=words(cut_in))
        await stack.start_worker()
        caller = await stack.callers.join("caller-1", "room-greeting", agent_name="roleplay-e2e")
        await stack.standin.dispatch("room-greeting", metadata(), "roleplay-e2e")
        greeting_at = await caller.wait_for_audio(timeout=30)
        await asyncio.sleep(max(0.0, greeting_at + 0.8 - caller.now()))
        started, _ = await caller.speak(TURNS / cut_in["file"], timeout=20)
        first_word = started + cut_in["speech"][0][0]
        greeting = await caller.wait_for_message(
            lambda m: m["type"] == "turn" and m["seq"] == 1, timeout=20, what="the greeting turn"
        )
        stopped = next(
            (end for start, end in caller.sound_segments() if start <= first_word <= end + 0.3),
            first_word,
        )
        print(f"greeting barge-in: the agent's audio stopped {stopped - first_word:.2f}s after")
        assert greeting["interrupted"] is True, "the greeting played on to its end"
        # the turn carries what was played: the greeting's beginning (its first phrase went to
        # the TTS on its own, FIRST_PHRASE), not the whole of it
        full = load_scenario("default").greeting or ""
        assert greeting["text"] and len(greeting["text"]) < len(full)
        assert full.startswith(greeting["text"].strip()), (greeting["text"], full)
        assert stopped - first_word < STOP_BOUND, (
            f"the greeting went on {stopped - first_word:.2f}s after the caller's first word"
        )


async def test_a_backchannel_does_not_derail_a_reply(stack: Stack) -> None:
    nod = utterance("backchannel_mm_hm")
    async with asyncio.timeout(TEST_BUDGET):
        await stack.openai.configure(reply=LONG_REPLY, tts_max_seconds=8.0)
        await stack.start_worker()
        call = await start_call(stack, "room-nod", "caller-1", metadata())
        caller = call.caller
        _, spoke_until = await caller.speak(WAV, timeout=20)
        reply_at = await caller.wait_for_audio(after=spoke_until, timeout=25)
        await asyncio.sleep(max(0.0, reply_at + 1.5 - caller.now()))
        await stack.openai.configure(transcript=words(nod))  # "Mm-hm.", as a real STT hears it
        _, nodded = await caller.speak(TURNS / nod["file"], timeout=10)
        # the reply goes on, or resumes (the library's false-interruption resume)
        await caller.wait_for_audio(after=nodded + 0.5, min_seconds=0.5, timeout=6)
        reply = await caller.wait_for_message(
            lambda m: m["type"] == "turn" and m["role"] == "assistant" and m["seq"] > 1,
            timeout=25,
            what="the reply's turn",
        )
        later = [t for t in turns_of(caller) if t["seq"] > reply["seq"]]
        assert reply["interrupted"] is False, "the backchannel cut the reply short"
        assert [t["role"] for t in later if t["role"] == "assistant"] == [], (
            "the reply became more than one assistant turn"
        )
