"""agent.pipeline's VAD: the native Silero VAD infers inline on the event loop (`InlineExecutor`),
and still hears speech start and end in a real recording."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from livekit import rtc
from livekit.agents import vad

from agent.pipeline import InlineExecutor, load_vad
from tests.support.fakes import read_wav_mono16
from tests.support.settings import make_settings

HELLO = Path(__file__).parent / "audio" / "hello_16k.wav"


def test_the_inline_executor_runs_the_call_on_the_calling_thread() -> None:
    future = InlineExecutor().submit(threading.get_ident)
    assert future.done()
    assert future.result() == threading.get_ident()


def test_the_inline_executor_hands_an_error_back_through_the_future() -> None:
    def fail() -> None:
        raise ValueError("bad window")

    future = InlineExecutor().submit(fail)
    with pytest.raises(ValueError, match="bad window"):
        future.result()


async def test_the_native_vad_hears_a_recording_without_a_thread_of_its_own() -> None:
    # the library's default hands every 32 ms window to a thread of the stream's own and back,
    # which costs the job's loop more CPU than the inference (docs/performance.md, capacity)
    pcm, rate = read_wav_mono16(HELLO)
    stream = load_vad(make_settings(VAD_ENGINE="native")).stream()
    frame = rate // 20  # the room input's 50 ms frames
    silence = bytes(2 * rate)  # 1 s, for the end of speech
    audio = pcm.tobytes() + silence
    for start in range(0, len(audio) // 2 - frame + 1, frame):
        chunk = audio[2 * start : 2 * (start + frame)]
        stream.push_frame(rtc.AudioFrame(chunk, rate, 1, frame))
    stream.end_input()
    seen: list[vad.VADEventType] = []
    threads: set[str] = set()
    async with asyncio.timeout(20):
        async for event in stream:
            seen.append(event.type)
            threads.update(thread.name for thread in threading.enumerate())
    await stream.aclose()
    assert vad.VADEventType.START_OF_SPEECH in seen
    assert vad.VADEventType.END_OF_SPEECH in seen
    assert seen.count(vad.VADEventType.INFERENCE_DONE) >= len(audio) // 2 // 512 - 2
    assert not [name for name in threads if name.startswith("inference.vad")], threads
