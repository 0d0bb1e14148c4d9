"""tests/support/openai_stub.py works with the real livekit-plugins-openai classes.

The stub stands in for api.openai.com on loopback: the session layer points openai.STT/LLM/TTS at
it, and the e2e layer runs it as a process steered through its /_control endpoints.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from livekit import rtc
from livekit.agents import (
    Agent,
    AgentSession,
    APIConnectOptions,
    APIStatusError,
    APITimeoutError,
    llm,
)
from livekit.agents.voice.events import ConversationItemAddedEvent
from livekit.plugins import openai, silero

from tests.support.fakes import CaptureAudioOutput, WavAudioInput, read_wav_mono16
from tests.support.openai_stub import (
    READY_PREFIX,
    SPEECH_SAMPLE_RATE,
    OpenAIStub,
    speech_like_pcm16,
)

ROOT = Path(__file__).resolve().parent.parent
HELLO_16K = ROOT / "tests" / "audio" / "hello_16k.wav"
API_KEY = "sk-stub-test"
NO_RETRY = APIConnectOptions(max_retry=0, retry_interval=0.1, timeout=5.0)


@pytest.fixture
async def stub() -> AsyncIterator[OpenAIStub]:
    async with OpenAIStub() as server:
        yield server


def make_llm(stub: OpenAIStub) -> openai.LLM:
    return openai.LLM(model="fake-model", api_key=API_KEY, base_url=stub.base_url)


def user_ctx(text: str) -> llm.ChatContext:
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="system", content="Be brief.")
    ctx.add_message(role="user", content=text)
    return ctx


def wav_frames(path: Path, frame_ms: int = 20) -> list[rtc.AudioFrame]:
    pcm, rate = read_wav_mono16(path)
    spf = rate * frame_ms // 1000
    return [
        rtc.AudioFrame(
            data=pcm[i : i + spf].tobytes(),
            sample_rate=rate,
            num_channels=1,
            samples_per_channel=len(pcm[i : i + spf]),
        )
        for i in range(0, len(pcm), spf)
    ]


def dominant_frequency(frame: rtc.AudioFrame) -> float:
    samples = np.frombuffer(frame.data, dtype=np.int16).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / frame.sample_rate)[int(np.argmax(spectrum))])


# --------------------------------------------------------------------------- LLM


async def test_llm_streams_the_reply_with_usage(stub: OpenAIStub) -> None:
    model = make_llm(stub)
    try:
        response = await model.chat(chat_ctx=user_ctx("I need a table for two")).collect()
    finally:
        await model.aclose()

    assert response.text == "You said: I need a table for two"
    assert response.usage is not None
    assert response.usage.completion_tokens == len(response.text.split())
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )
    [chat] = stub.requests_to("chat")
    assert chat.status == 200 and chat.authorization == f"Bearer {API_KEY}"
    assert chat.body["stream"] is True
    assert chat.body["stream_options"] == {"include_usage": True}
    assert chat.body["model"] == "fake-model"
    assert chat.body["messages"][-1] == {"role": "user", "content": "I need a table for two"}


async def test_llm_fixed_reply_and_queued_tool_call(stub: OpenAIStub) -> None:
    stub.reply = "A fixed answer."
    stub.queue_tool_call("book_table", {"people": 2})

    @llm.function_tool
    async def book_table(people: int) -> str:
        """Book a table.

        Args:
            people: how many people
        """
        return f"booked for {people}"

    model = make_llm(stub)
    try:
        call = await model.chat(chat_ctx=user_ctx("book it"), tools=[book_table]).collect()
        text = await model.chat(chat_ctx=user_ctx("thanks")).collect()
    finally:
        await model.aclose()

    assert [(c.name, c.arguments) for c in call.tool_calls] == [("book_table", '{"people": 2}')]
    assert text.text == "A fixed answer."
    first, _ = stub.requests_to("chat")
    assert first.body["tools"][0]["function"]["name"] == "book_table"


async def test_context_reply_mode_names_every_earlier_user_turn(stub: OpenAIStub) -> None:
    """The `context` mode's marker depends on every user message of the request (what the e2e
    resume test uses to prove a restored context), and `echo` switches it back."""
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first words"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": [{"type": "text", "text": "second words"}]},
        {"role": "assistant", "content": "another answer"},
        {"role": "user", "content": "third words"},
    ]
    replies = []
    async with aiohttp.ClientSession(base_url=stub.url) as http:
        for mode, sent in [("context", messages), ("context", messages[:2]), ("echo", messages)]:
            async with http.post("/_control/config", json={"reply_mode": mode}) as resp:
                assert resp.status == 200
            body = {"model": "m", "messages": sent}
            async with http.post("/v1/chat/completions", json=body) as resp:
                replies.append((await resp.json())["choices"][0]["message"]["content"])
        async with http.post("/_control/config", json={"reply_mode": "digest"}) as resp:
            assert resp.status == 400

    assert replies == [
        "You said: third words; earlier user turns: 2 (first words | second words)",
        "You said: first words; earlier user turns: 0",
        "You said: third words",
    ]


# --------------------------------------------------------------------------- STT


async def test_stt_transcribes_a_wav_upload(stub: OpenAIStub) -> None:
    stub.transcript = "I would like to book a table"
    model = openai.STT(api_key=API_KEY, base_url=stub.base_url)
    try:
        event = await model.recognize(wav_frames(HELLO_16K))
    finally:
        await model.aclose()

    assert event.alternatives[0].text == "I would like to book a table"
    [req] = stub.requests_to("transcriptions")
    assert req.authorization == f"Bearer {API_KEY}"
    assert req.form["model"] == "gpt-4o-mini-transcribe"
    assert req.form["response_format"] == "json"
    assert req.file is not None
    assert req.file["filename"] == "file.wav" and req.file["content_type"] == "audio/wav"
    assert req.file["sample_rate"] == 16000 and req.file["channels"] == 1
    assert req.file["duration"] == pytest.approx(4.7, abs=0.05)


# --------------------------------------------------------------------------- TTS


@pytest.mark.parametrize(
    ("response_format", "sse", "content_type"),
    [
        ("pcm", False, "audio/pcm"),
        ("wav", False, "audio/wav"),
        (None, False, "audio/wav"),  # the plugin's default mp3, answered as WAV
        ("pcm", True, "text/event-stream"),
    ],
    ids=["pcm", "wav", "mp3-default", "sse-pcm"],
)
async def test_tts_returns_speech_like_audio(
    stub: OpenAIStub, response_format: Any, sse: bool, content_type: str
) -> None:
    stub.tts_sse = sse
    text = "Hello from the loopback server."
    if response_format is None:
        model = openai.TTS(api_key=API_KEY, base_url=stub.base_url)
    else:
        model = openai.TTS(api_key=API_KEY, base_url=stub.base_url, response_format=response_format)
    try:
        frames = [ev.frame async for ev in model.synthesize(text)]
    finally:
        await model.aclose()

    assert frames and all(f.sample_rate == SPEECH_SAMPLE_RATE for f in frames)
    audio = rtc.combine_audio_frames(frames)
    assert audio.duration == pytest.approx(stub.speech_duration(text), abs=0.03)
    samples = np.frombuffer(audio.data, dtype=np.int16)
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 1000  # not silence
    assert dominant_frequency(audio) == pytest.approx(550, abs=10)
    [req] = stub.requests_to("speech")
    assert req.body["input"] == text
    assert req.body["response_format"] == (response_format or "mp3")
    assert req.authorization == f"Bearer {API_KEY}"
    assert content_type  # documents what the stub answered for this case


def test_speech_duration_is_proportional_and_capped() -> None:
    stub = OpenAIStub()
    assert stub.speech_duration("x" * 10) == pytest.approx(0.6)
    assert stub.speech_duration("x" * 1000) == 3.0
    assert len(speech_like_pcm16(1.0)) == SPEECH_SAMPLE_RATE * 2


# --------------------------------------------------------------------------- auth and faults


async def test_api_key_is_checked_when_configured() -> None:
    async with OpenAIStub(api_key=API_KEY) as stub:
        good, bad = make_llm(stub), openai.LLM(api_key="sk-wrong", base_url=stub.base_url)
        try:
            assert (await good.chat(chat_ctx=user_ctx("hi")).collect()).text == "You said: hi"
            with pytest.raises(APIStatusError) as caught:
                await bad.chat(chat_ctx=user_ctx("hi"), conn_options=NO_RETRY).collect()
        finally:
            await good.aclose()
            await bad.aclose()

    assert caught.value.status_code == 401 and not caught.value.retryable
    assert [r.authorization for r in stub.requests_to("chat")] == [
        f"Bearer {API_KEY}",
        "Bearer sk-wrong",
    ]
    assert [r.status for r in stub.requests_to("chat")] == [200, 401]


async def test_fail_next_chat_returns_500_then_recovers(stub: OpenAIStub) -> None:
    stub.fail_next_chat(1, status=500)
    model = make_llm(stub)
    try:
        with pytest.raises(APIStatusError) as caught:
            await model.chat(chat_ctx=user_ctx("hello"), conn_options=NO_RETRY).collect()
        recovered = await model.chat(chat_ctx=user_ctx("hello"), conn_options=NO_RETRY).collect()
    finally:
        await model.aclose()

    assert caught.value.status_code == 500 and caught.value.retryable
    assert recovered.text == "You said: hello"
    assert [(r.status, r.fault) for r in stub.requests_to("chat")] == [
        (500, "status:500"),
        (200, None),
    ]


async def test_plugin_retries_a_500_within_one_chat_call(stub: OpenAIStub) -> None:
    stub.fail_next_chat(1, status=503)
    model = make_llm(stub)
    retry_once = APIConnectOptions(max_retry=1, retry_interval=0.1, timeout=5.0)
    try:
        response = await model.chat(chat_ctx=user_ctx("again"), conn_options=retry_once).collect()
    finally:
        await model.aclose()

    assert response.text == "You said: again"
    assert [r.status for r in stub.requests_to("chat")] == [503, 200]


@pytest.mark.parametrize("mid_stream", [False, True], ids=["before-headers", "mid-stream"])
async def test_stall_next_chat_times_out_then_recovers(stub: OpenAIStub, mid_stream: bool) -> None:
    stub.stall_next_chat(1, seconds=10.0, mid_stream=mid_stream)
    model = make_llm(stub)
    short = APIConnectOptions(max_retry=0, retry_interval=0.1, timeout=0.5)
    try:
        started = time.perf_counter()
        with pytest.raises(APITimeoutError) as caught:
            await model.chat(chat_ctx=user_ctx("slow"), conn_options=short).collect()
        elapsed = time.perf_counter() - started
        recovered = await model.chat(chat_ctx=user_ctx("fast"), conn_options=short).collect()
    finally:
        await model.aclose()

    assert 0.4 < elapsed < 3.0
    # a timeout after content arrived is not retryable (the reply would be duplicated)
    assert caught.value.retryable is (not mid_stream)
    assert recovered.text == "You said: fast"
    assert [r.fault for r in stub.requests_to("chat")] == ["stall:10.0", None]


# --------------------------------------------------------------------------- control API


async def test_control_endpoints_drive_faults_and_list_requests(stub: OpenAIStub) -> None:
    chat_body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession(base_url=stub.url) as http:
        async with http.post("/_control/fail_chat", json={"count": 2, "status": 502}) as resp:
            assert resp.status == 200 and (await resp.json())["pending"] == 2
        statuses = []
        for _ in range(3):
            async with http.post("/v1/chat/completions", json=chat_body) as resp:
                statuses.append(resp.status)
        async with http.post("/_control/stall_chat", json={"count": 1, "seconds": 0.2}) as resp:
            assert resp.status == 200
        async with http.post("/v1/chat/completions", json=chat_body) as resp:
            stalled = await resp.json()
        async with http.post("/_control/config", json={"transcript": "configured"}) as resp:
            assert resp.status == 200
        async with http.post("/_control/fail_chat", json={"count": "x"}) as resp:
            assert resp.status == 400
        async with http.get("/_control/requests", params={"endpoint": "chat"}) as resp:
            listed = await resp.json()
        async with http.post("/_control/reset") as resp:
            assert resp.status == 200

    assert statuses == [502, 502, 200]
    assert stalled["choices"][0]["message"]["content"] == "You said: hi"
    assert stub.transcript == "configured"
    assert isinstance(listed, list) and len(listed) == 4
    assert [r["status"] for r in listed] == [502, 502, 200, 200]
    assert listed[0]["path"] == "/v1/chat/completions" and listed[0]["body"] == chat_body
    assert listed[3]["fault"] == "stall:0.2"
    assert stub.requests == []


async def test_standalone_process_serves_and_is_steerable(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.openai_stub",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--reply",
        "Standalone reply.",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert line.startswith(READY_PREFIX), line
        base_url = line.split()[1]
        url = base_url.removesuffix("/v1")
        async with aiohttp.ClientSession() as http:
            await (await http.post(f"{url}/_control/fail_chat", json={"count": 1})).release()
        model = openai.LLM(model="fake-model", api_key=API_KEY, base_url=base_url)
        try:
            with pytest.raises(APIStatusError):
                await model.chat(chat_ctx=user_ctx("hi"), conn_options=NO_RETRY).collect()
            response = await model.chat(chat_ctx=user_ctx("hi"), conn_options=NO_RETRY).collect()
        finally:
            await model.aclose()
        async with aiohttp.ClientSession() as http, http.get(f"{url}/_control/requests") as resp:
            recorded = await resp.json()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 10)

    assert response.text == "Standalone reply."
    chats = [r for r in recorded if r["endpoint"] == "chat"]
    assert [r["status"] for r in chats] == [500, 200]
    assert chats[0]["headers"]["Authorization"] == f"Bearer {API_KEY}"
    assert rc == 0


# --------------------------------------------------------------------------- full voice turn


async def test_audio_session_completes_a_voice_turn_through_the_stub(stub: OpenAIStub) -> None:
    """WAV -> real Silero VAD -> openai.STT -> openai.LLM -> openai.TTS (pcm) -> capture."""
    stub.transcript = "I would like to book a table for two"
    stub.tts_max_seconds = 1.5
    stt_model = openai.STT(api_key=API_KEY, base_url=stub.base_url)
    llm_model = make_llm(stub)
    tts_model = openai.TTS(api_key=API_KEY, base_url=stub.base_url, response_format="pcm")
    session: AgentSession[None] = AgentSession(
        vad=silero.VAD.load(),
        stt=stt_model,
        llm=llm_model,
        tts=tts_model,
        turn_handling={"turn_detection": "vad", "interruption": {"mode": "vad"}},
    )
    audio_in = WavAudioInput(HELLO_16K, lead_silence=0.3, tail_silence=6.0)
    audio_out = CaptureAudioOutput()
    session.input.audio = audio_in
    session.output.audio = audio_out
    assistant_done = asyncio.Event()

    @session.on("conversation_item_added")
    def _on_item(ev: ConversationItemAddedEvent) -> None:
        if isinstance(ev.item, llm.ChatMessage) and ev.item.role == "assistant":
            assistant_done.set()

    try:
        await session.start(Agent(instructions="You book tables."))
        await asyncio.wait_for(assistant_done.wait(), 20)
        history = [
            (item.role, item.text_content)
            for item in session.history.items
            if isinstance(item, llm.ChatMessage)
        ]
    finally:
        await session.aclose()
        for model in (stt_model, llm_model, tts_model):
            await model.aclose()

    assert history == [
        ("user", "I would like to book a table for two"),
        ("assistant", "You said: I would like to book a table for two"),
    ]
    assert audio_out.frames and audio_out.frames[0].sample_rate == SPEECH_SAMPLE_RATE
    assert audio_out.total_duration == pytest.approx(1.5, abs=0.05)
    assert audio_in.speech_end_at is not None and audio_out.first_frame_at is not None
    assert 0 < audio_out.first_frame_at - audio_in.speech_end_at < 2.0
    assert [s.interrupted for s in audio_out.segments] == [False]
    # besides the plugins' prewarm requests (GET /v1/models, GET /v1/)
    seen = [r.endpoint for r in stub.requests if r.method == "POST"]
    assert seen == ["transcriptions", "chat", "speech"]
    [upload] = stub.requests_to("transcriptions")
    assert upload.file is not None and upload.file["duration"] > 4.0


# --------------------------------------------------------------------------- realtime STT
# The plugin's realtime transcription client (livekit-plugins-openai 1.8.9, stt.py) against the
# stub: the event names and fields below are the ones that client sends and reads.


def silence_frames(seconds: float, rate: int = 16000, frame_ms: int = 20) -> list[rtc.AudioFrame]:
    spf = rate * frame_ms // 1000
    return [
        rtc.AudioFrame(
            data=bytes(2 * spf), sample_rate=rate, num_channels=1, samples_per_channel=spf
        )
        for _ in range(round(seconds * 1000 / frame_ms))
    ]


async def collect_until_final(
    stream: Any, frames: list[rtc.AudioFrame], timeout: float = 15.0
) -> list[Any]:
    """Push every frame, then read events until the first FINAL_TRANSCRIPT."""
    from livekit.agents import stt as agents_stt

    for frame in frames:
        stream.push_frame(frame)
    events: list[Any] = []

    async def read() -> None:
        async for event in stream:
            events.append(event)
            if event.type == agents_stt.SpeechEventType.FINAL_TRANSCRIPT:
                return

    await asyncio.wait_for(read(), timeout)
    return events


async def test_realtime_stt_streams_interims_then_the_final_with_server_vad(
    stub: OpenAIStub,
) -> None:
    from livekit.agents import stt as agents_stt
    from livekit.agents import utils

    stub.transcript = "I would like to book a table for two"
    model = openai.STT(api_key=API_KEY, base_url=stub.base_url, use_realtime=True)
    assert model.capabilities.streaming and model.capabilities.interim_results
    async with utils.http_context.open():
        stream = model.stream()
        try:
            events = await collect_until_final(stream, wav_frames(HELLO_16K) + silence_frames(1.0))
        finally:
            await stream.aclose()
            await model.aclose()

    kinds = [e.type for e in events]
    SE = agents_stt.SpeechEventType
    assert kinds[0] == SE.START_OF_SPEECH and kinds[-1] == SE.FINAL_TRANSCRIPT
    assert SE.END_OF_SPEECH in kinds
    interims = [e.alternatives[0].text for e in events if e.type == SE.INTERIM_TRANSCRIPT]
    assert interims, "deltas arrive while the audio does"
    assert all("I would like to book a table for two".startswith(t) for t in interims)
    assert events[-1].alternatives[0].text == "I would like to book a table for two"

    [upgrade] = stub.requests_to("realtime")
    assert upgrade.query == {"intent": "transcription", "model": "gpt-4o-mini-transcribe"}
    assert upgrade.authorization == f"Bearer {API_KEY}"
    received = [e["event"] for e in stub.realtime_events if e["dir"] == "in"]
    update = received[0]
    assert update["type"] == "session.update"
    audio_input = update["session"]["audio"]["input"]
    assert update["session"]["type"] == "transcription"
    assert audio_input["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio_input["transcription"]["model"] == "gpt-4o-mini-transcribe"
    assert audio_input["turn_detection"]["type"] == "server_vad"
    assert audio_input["turn_detection"]["silence_duration_ms"] == 350
    appends = [e for e in received if e["type"] == "input_audio_buffer.append"]
    # 50 ms of 24 kHz s16le per append, as the plugin chunks it
    assert appends and all(e["bytes"] == 2400 for e in appends[:-1])
    assert not [e for e in received if e["type"] == "input_audio_buffer.commit"]
    sent = [e["event"]["type"] for e in stub.realtime_events if e["dir"] == "out"]
    assert sent.index("input_audio_buffer.speech_started") < sent.index(
        "input_audio_buffer.speech_stopped"
    )
    assert sent.index("input_audio_buffer.committed") < sent.index(
        "conversation.item.input_audio_transcription.completed"
    )


async def test_realtime_stt_manual_commit_from_the_plugins_vad(stub: OpenAIStub) -> None:
    """A realtime-only model has no server VAD: the plugin commits on its own VAD's end of
    speech, and the stub transcribes what was committed."""
    from livekit.agents import stt as agents_stt
    from livekit.agents import utils

    stub.transcript = "Manual commit works"
    model = openai.STT(
        api_key=API_KEY,
        base_url=stub.base_url,
        model="gpt-realtime-whisper",
        vad=silero.VAD.load(),
    )
    async with utils.http_context.open():
        stream = model.stream()
        try:
            events = await collect_until_final(stream, wav_frames(HELLO_16K) + silence_frames(1.5))
        finally:
            await stream.aclose()
            await model.aclose()

    assert events[-1].type == agents_stt.SpeechEventType.FINAL_TRANSCRIPT
    assert events[-1].alternatives[0].text == "Manual commit works"
    received = [e["event"] for e in stub.realtime_events if e["dir"] == "in"]
    assert "turn_detection" not in received[0]["session"]["audio"]["input"]
    assert [e["type"] for e in received].count("input_audio_buffer.commit") >= 1
    sent = [e["event"]["type"] for e in stub.realtime_events if e["dir"] == "out"]
    assert "input_audio_buffer.speech_started" not in sent


async def test_realtime_stt_rejects_a_wrong_audio_format(stub: OpenAIStub) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{stub.base_url}/realtime?intent=transcription")
        created = await ws.receive_json()
        assert created["type"] == "session.created"
        await ws.send_json(
            {
                "type": "session.update",
                "session": {
                    "type": "transcription",
                    "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
                },
            }
        )
        error = await ws.receive_json()
        await ws.send_json({"type": "input_audio_buffer.commit"})
        empty = await ws.receive_json()
        await ws.close()
    assert error["type"] == "error" and error["error"]["code"] == "invalid_format"
    assert empty["error"]["code"] == "input_audio_buffer_commit_empty"


async def test_control_endpoint_lists_and_clears_the_realtime_events(stub: OpenAIStub) -> None:
    """A process's realtime events, with their wall times, for benchmarks' timelines."""
    stub.transcript = "Listed over control"
    # 24 kHz s16le, what the realtime API takes; under one delta interval (0.25 s), so every
    # event after the commit is the commit's
    voiced = speech_like_pcm16(0.2)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{stub.base_url}/realtime?intent=transcription")
        await ws.receive_json()  # session.created
        await ws.send_json(
            {
                "type": "session.update",
                "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
            }
        )
        await ws.receive_json()  # session.updated
        before_commit = time.time()
        await ws.send_json(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(voiced).decode()}
        )
        await ws.send_json({"type": "input_audio_buffer.commit"})
        received = [(await ws.receive_json())["type"] for _ in range(3)]
        await ws.close()
        async with http.get(f"{stub.url}/_control/realtime_events") as resp:
            every = await resp.json()
        async with http.get(
            f"{stub.url}/_control/realtime_events", params={"dir": "out", "since": before_commit}
        ) as resp:
            sent = await resp.json()
        async with http.get(f"{stub.url}/_control/realtime_events", params={"dir": "x"}) as resp:
            bad = resp.status
        async with http.delete(f"{stub.url}/_control/realtime_events") as resp:
            assert resp.status == 200
        async with http.get(f"{stub.url}/_control/realtime_events") as resp:
            cleared = await resp.json()

    assert received[0] == "input_audio_buffer.committed"
    assert received[-1] == "conversation.item.input_audio_transcription.completed"
    assert [e["dir"] for e in every][:2] == ["out", "in"]  # session.created, session.update
    assert {"type": "input_audio_buffer.append", "bytes": len(voiced)} in [
        e["event"] for e in every
    ]
    assert [e["event"]["type"] for e in sent] == received
    assert all(e["dir"] == "out" and e["at"] >= before_commit for e in sent)
    assert [e["at"] for e in every] == sorted(e["at"] for e in every)
    assert sent[-1]["event"]["transcript"] == "Listed over control"
    assert bad == 400
    assert cleared == [] and stub.realtime_events == []


# --------------------------------------------------------------------------- timing profiles


def test_profiles_are_named_and_chosen_by_env_or_argument(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.support.openai_stub import PROFILE_ENV, PROFILES

    monkeypatch.delenv(PROFILE_ENV, raising=False)
    assert OpenAIStub().profile.name == "zero"
    monkeypatch.setenv(PROFILE_ENV, "slow")
    assert OpenAIStub().profile.name == "slow"
    assert OpenAIStub(profile="typical").profile.name == "typical"
    # the figures issue 11 states for `typical`
    typical = PROFILES["typical"]
    assert (typical.stt_base, typical.stt_per_audio_second) == (0.25, 0.1)
    assert (typical.llm_first_token, typical.llm_tokens_per_second) == (0.35, 50.0)
    assert typical.tts_first_byte == 0.25 and typical.tts_speed >= 1.0
    assert typical.realtime_final_delay == 0.15
    slow = PROFILES["slow"]
    assert slow.llm_first_token >= 2 * typical.llm_first_token * 0.9
    with pytest.raises(ValueError, match="unknown timing profile"):
        OpenAIStub(profile="warp")


async def test_typical_profile_delays_each_provider_at_least_as_stated() -> None:
    """Lower bounds only (a sleep never ends early); no upper bound on a shared machine."""
    async with OpenAIStub(profile="typical") as stub:
        llm_model = make_llm(stub)
        stt_model = openai.STT(api_key=API_KEY, base_url=stub.base_url)
        tts_model = openai.TTS(api_key=API_KEY, base_url=stub.base_url, response_format="pcm")
        try:
            start = time.perf_counter()
            async with llm_model.chat(chat_ctx=user_ctx("hi")) as stream:
                async for chunk in stream:
                    if chunk.delta and chunk.delta.content:
                        break
            first_token = time.perf_counter() - start

            start = time.perf_counter()
            await stt_model.recognize(wav_frames(HELLO_16K))
            transcription = time.perf_counter() - start

            start = time.perf_counter()
            async for _ in tts_model.synthesize("Hello there."):
                break
            first_byte = time.perf_counter() - start
        finally:
            for model in (llm_model, stt_model, tts_model):
                await model.aclose()
    assert first_token >= 0.35
    assert transcription >= 0.25 + 0.1 * 4.69
    assert first_byte >= 0.25
    # and the control endpoint switches profiles of a standalone stub
    async with OpenAIStub() as stub, aiohttp.ClientSession() as http:
        async with http.post(f"{stub.url}/_control/config", json={"profile": "slow"}) as resp:
            assert (await resp.json())["profile"] == "slow"
        assert stub.profile.name == "slow"
