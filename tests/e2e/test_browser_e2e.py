"""End to end in a real browser (issue 14, part 2): the playground page in Debian's Chromium,
driven by the pinned playwright-core (tests/e2e/browser/), with livekit-client 2.23 against the
LiveKit stand-in, the project's worker (embedded local backend) and the OpenAI stub, all in the
test network namespace. The microphone is Chromium's fake capture playing a WAV made here: a
silence for the greeting, then the speech WAV twice with silences for the replies.

Checks: the greeting heard, two spoken turns answered, the turns shown in order with seq 1..n
and no gap, the hang-up button -> the agent gone and `end` shown, the delivered transcript
shown and equal to the copy the local backend holds, and the page's turns all of its turns. The
screenshot goes to the test's tmp dir (and docs/playground.png when PLAYGROUND_SCREENSHOT=1).

The second test kills the agent's worker mid-call (README, "An agent may leave and come back"):
the page stays in the room, shows the agent away, takes the new agent's resume line as the next
seq, and hangs up on the new agent.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pytest

from agent.prompts import load_prompt, load_scenario
from tests.e2e.caller import read_wav
from tests.e2e.conftest import Callers
from tests.e2e.harness import REPO_ROOT, ManagedProcess, ProcessGroup, free_port, worker_env
from tests.e2e.standin import StandIn
from tests.e2e.stubs import start_openai_stub
from tests.e2e.test_worker_e2e import AGENT_NAME, HEARD, TEST_BUDGET, WAV
from tests.support.browser import BROWSER_DIR, browser_unavailable

pytestmark = pytest.mark.e2e

SAMPLE_RATE: Final = 48_000
# the microphone: (silence seconds before) speech, twice, then silence to the end of the call
LEAD_IN: Final = 6.0
BETWEEN: Final = 8.0
TAIL: Final = 20.0
DRIVER_TIMEOUT: Final = 150.0
FORGED: Final = "forged by another participant"


def microphone_wav(path: Path) -> Path:
    speech = read_wav(WAV)

    def silence(seconds: float) -> np.ndarray[Any, np.dtype[np.int16]]:
        return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.int16)

    pcm = np.concatenate([silence(LEAD_IN), speech, silence(BETWEEN), speech, silence(TAIL)])
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    return path


def heard(text: str) -> bool:
    """The stub's transcript of one utterance, once or more: Chromium's audio processing (noise
    suppression on the fake microphone) may turn the pause inside the spoken WAV into a silence
    long enough for the stub's server VAD to commit twice, and the worker joins both finals into
    the one user turn."""
    parts = text.split(HEARD)
    return len(parts) >= 2 and all(not part.strip() for part in parts)


def held_transcript(data_dir: Path, session_id: str) -> dict[str, Any]:
    """What the embedded local backend holds, read here independently: its files of the
    session; the complete one is the final transcript (checkpoints are incomplete)."""
    bodies = [
        json.loads(path.read_text(encoding="utf-8"))["transcript"]
        for path in (data_dir / "transcripts").glob(f"{session_id}.*.json")
    ]
    [body] = [b for b in bodies if b["complete"]]
    assert isinstance(body, dict)
    return body


async def intrude(standin: StandIn, callers: Callers) -> None:
    """Once the page is in its room, another (non-agent) participant publishes a forged turn
    on the `transcript` topic: the page must ignore it (README: accept only the agent's)."""
    joined = await standin.wait_until(
        lambda: next(
            (e for e in standin.events_of("joined") if e.identity.startswith("playground-user-")),
            None,
        ),
        timeout=60,
        what="the page to join its room",
    )
    intruder = await callers.join("intruder", joined.room)
    forged = {
        "type": "turn",
        "v": 1,
        "sessionId": "forged",
        "seq": 2,
        "role": "user",
        "text": FORGED,
        "interrupted": False,
        "startedAt": "2026-01-01T00:00:00.000Z",
        "endedAt": "2026-01-01T00:00:01.000Z",
    }
    await intruder.room.local_participant.publish_data(
        json.dumps(forged).encode(), reliable=True, topic="transcript"
    )


def assert_hung_up_as_held(state: dict[str, Any], held: dict[str, Any]) -> None:
    """After the page's hang-up: the call is over on the page, `end` came, the transcript shown
    as delivered is the one the local backend holds (complete, `caller_hangup`), and the page
    holds every one of its turns, in order. `end` is best effort in the README's contract (a
    dead agent sends none), but an agent that hangs up sends it before it leaves, and the
    stand-in relays what a client sent before it closed its connection."""
    assert state["agentLeft"]
    assert state["hangup"] in (
        {"answer": "ok"},
        {"code": 1503, "message": "Recipient disconnected"},  # the agent left before its answer
    )
    assert (held["endedReason"], held["complete"]) == ("caller_hangup", True)
    assert state["delivered"] == held and state["deliveredShown"] == held["turnCount"]
    keys = ("seq", "role", "text")
    page = [tuple(t[k] for k in keys) for t in state["turns"]]
    stored = [tuple(t[k] for k in keys) for t in held["turns"]]
    assert page == stored
    assert state["end"] is not None, "the agent's `end` never reached the page"
    assert state["end"]["turnCount"] == held["turnCount"]
    assert state["endShown"] == f"end: {held['turnCount']} turns"


@dataclass
class Page:
    """The worker (embedded local backend, whose copy the page shows) and the playground."""

    env: dict[str, str]
    worker: ManagedProcess
    url: str


async def start_page(
    standin: StandIn, processes: ProcessGroup, data_dir: Path, **extra: str
) -> Page:
    openai = await start_openai_stub(processes, transcript=HEARD)
    env = worker_env(
        livekit_url=standin.url,
        api_key=standin.api_key,
        api_secret=standin.api_secret,
        agent_name=AGENT_NAME,
        data_dir=data_dir,
        OPENAI_BASE_URL=openai.base_url,
        NUM_IDLE_PROCESSES="1",
        DELIVERY_DEADLINE="5",
        **extra,
    )  # no BACKEND_URL: the embedded local backend
    worker = processes.start_worker(env, name="worker-1")
    await standin.wait_for_worker(AGENT_NAME, timeout=40)
    port = free_port()
    playground = processes.start_module(
        "agent", env, "playground", "--port", str(port), name="playground"
    )
    await playground.wait_for_log("playground on http://", timeout=20)
    return Page(env, worker, f"http://127.0.0.1:{port}/")


async def start_driver(page: Page, tmp_path: Path, *extra: str) -> asyncio.subprocess.Process:
    """drive.mjs on the page; its result in tmp_path/browser-result.json (`driven`)."""
    return await asyncio.create_subprocess_exec(
        "node",
        str(BROWSER_DIR / "drive.mjs"),
        page.url,
        str(microphone_wav(tmp_path / "microphone.wav")),
        str(tmp_path / "browser-result.json"),
        str(tmp_path / "playground.png"),
        *extra,
        cwd=BROWSER_DIR,
    )


async def driven(driver: asyncio.subprocess.Process, tmp_path: Path) -> dict[str, Any]:
    """The driver's result once it exited (killed when it overran): the page's state."""
    try:
        await asyncio.wait_for(driver.wait(), DRIVER_TIMEOUT)
    finally:
        if driver.returncode is None:
            driver.kill()
            await driver.wait()
    path = tmp_path / "browser-result.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    print(json.dumps({k: result.get(k) for k in ("steps", "error")}, indent=1))
    assert driver.returncode == 0 and "error" not in result, json.dumps(result, indent=1)
    state: dict[str, Any] = result["state"]
    return state


async def test_a_call_from_the_playground_in_chromium(
    standin: StandIn, processes: ProcessGroup, callers: Callers, tmp_path: Path
) -> None:
    if (reason := browser_unavailable()) is not None:
        pytest.skip(reason)
    async with asyncio.timeout(TEST_BUDGET + DRIVER_TIMEOUT):
        started = time.monotonic()
        data_dir = tmp_path / "data"
        page = await start_page(standin, processes, data_dir)
        driver = await start_driver(page, tmp_path)
        intruding = asyncio.create_task(intrude(standin, callers))
        try:
            state = await driven(driver, tmp_path)
            await intruding
        finally:
            intruding.cancel()
        if os.environ.get("PLAYGROUND_SCREENSHOT") == "1":
            shutil.copyfile(tmp_path / "playground.png", REPO_ROOT / "docs" / "playground.png")

        # the greeting heard, the two utterances answered, in order, no gap. How many turns the
        # utterances make is Chromium's and the VAD's: noise suppression on the fake microphone
        # can split one in two (then the first reply is cut off by the second half), and a turn
        # still open at the hang-up is flushed after the fifth
        assert state["agentAudioSeconds"] >= 0.3
        turns = state["turns"]
        count = len(turns)
        assert count >= 5 and [t["seq"] for t in turns] == list(range(1, count + 1))
        assert state["shownSeqs"] == list(range(1, count + 1)) and state["gaps"] == []
        assert (turns[0]["role"], turns[0]["text"]) == (
            "assistant",
            load_scenario("default").greeting,
        )
        replies = 0
        for before, turn in itertools.pairwise(turns):
            if turn["role"] == "user":
                assert heard(turn["text"]), turn["text"]
                continue
            assert before["role"] == "user", "an assistant turn answers a user turn"
            echo = f"You said: {before['text']}"  # the stub's echo reply
            # a reply cut off by the caller's next words holds what was played of it
            assert turn["text"] == echo or (turn["interrupted"] and echo.startswith(turn["text"]))
            replies += 1
        assert replies >= 2
        # hang-up: the agent gone, the delivered transcript shown is the local backend's copy
        session_id = turns[0]["sessionId"]
        await standin.wait_for_event("left", identity=state["agentIdentity"], timeout=5)
        assert_hung_up_as_held(state, held_transcript(data_dir, session_id))
        assert (state["end"]["type"], state["end"]["v"]) == ("end", 1)
        assert state["end"]["sessionId"] == session_id
        # the forged packet reached the page and was ignored
        assert state["rejected"] >= 1
        assert FORGED not in json.dumps(state)
        print(f"browser call took {time.monotonic() - started:.1f}s")


async def test_the_playground_waits_for_a_resumed_agent_in_chromium(
    standin: StandIn, processes: ProcessGroup, tmp_path: Path
) -> None:
    """The agent's worker is SIGKILLed (its whole process group) after two exchanges; the
    stand-in re-dispatches the job as LiveKit Cloud does, to a second worker on the same data
    directory (the embedded local backend, whose copy the page shows, and the journal the new
    job resumes from: the worker side of a container's death is tests/e2e/test_resume_e2e.py).
    The page must not call the call over when the agent leaves without `end`."""
    if (reason := browser_unavailable()) is not None:
        pytest.skip(reason)
    async with asyncio.timeout(TEST_BUDGET + DRIVER_TIMEOUT):
        started = time.monotonic()
        data_dir = tmp_path / "data"
        page = await start_page(standin, processes, data_dir, CHECKPOINT_SECONDS="1")
        ready = tmp_path / "two-turns-answered"
        driver = await start_driver(page, tmp_path, str(ready))
        try:
            # the call is on the first worker; then a second one registers, to take it again
            lost = await standin.wait_until(
                lambda: next(iter(standin.jobs.values()), None), timeout=60, what="the job"
            )
            # another container: its own health port (the data directory is shared, see above)
            processes.start_worker({**page.env, "PORT": str(free_port())}, name="worker-2")
            await standin.wait_until(
                lambda: len(standin.worker_ids(AGENT_NAME)) >= 2 or None,
                timeout=40,
                what="a second worker",
            )
            await standin.wait_until(
                lambda: ready.exists() or None, timeout=90, what="two turns answered on the page"
            )
            standin.redispatch_lost_jobs = True  # as LiveKit Cloud does
            page.worker.kill_group()
        except BaseException:
            driver.kill()  # the test failed before the kill: the page's wait is moot
            await driver.wait()
            raise
        state = await driven(driver, tmp_path)

        # the page waited: it showed the agent away, saw one new agent, and kept the room
        assert state["awayShown"] is not None and state["awayShown"].startswith("away")
        assert state["agentChanges"] == 1
        assert state["agentIdentity"] != standin.jobs[lost.job_id].participant_identity
        # seq went on from the dead agent's turns (five at least, see the first test for why
        # there may be more) to the resume line, once, with no gap and no duplicate
        turns = state["turns"]
        count = len(turns)
        assert count >= 6 and [t["seq"] for t in turns] == list(range(1, count + 1))
        assert state["shownSeqs"] == list(range(1, count + 1)) and state["gaps"] == []
        resumed = [t["seq"] for t in turns if t["text"] == load_prompt("resume")]
        assert len(resumed) == 1 and resumed[0] >= 6
        assert turns[resumed[0] - 1]["role"] == "assistant"
        assert len({t["sessionId"] for t in turns}) == 1
        # hung up on the new agent; one complete transcript with every turn, all on the page
        assert_hung_up_as_held(state, held_transcript(data_dir, turns[0]["sessionId"]))
        print(f"browser resume took {time.monotonic() - started:.1f}s")
