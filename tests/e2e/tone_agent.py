"""A small agent worker for the stand-in's own smoke test (not the project's worker).

A real ``livekit.agents`` AgentServer in ``start`` mode with a real AgentSession and RoomIO,
Silero VAD, a fake STT (always hears ``HEARD_TEXT``), a fake LLM (answers ``"You said: ..."``)
and a TTS that speaks a TONE_HZ sine tone, so a caller can tell the agent's voice apart.

On top of the session it:
* greets with ``"Hello, scenario <scenarioId from the job metadata>"`` (the metadata reaches it);
* publishes each final turn on topic ``transcript`` as ``{"type": "turn", ...}`` split into two
  ``parts`` packets (to exercise the caller's reassembly), and a ``{"type": "job"}`` message with
  the raw job metadata once connected;
* registers the RPC ``agent.end_call``: answers ``"ok"``, then ``ctx.shutdown("caller_hangup")``;
* otherwise stays in the room after the caller leaves (as LiveKit's starter agent does), so the
  room closes by departure timeout and the job ends on ``leave(ROOM_CLOSED)``.

Run: ``python -m tests.e2e.tone_agent start`` with LIVEKIT_URL, LIVEKIT_API_KEY,
LIVEKIT_API_SECRET, LIVEKIT_AGENT_NAME (and optionally PORT) in the environment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from typing import Any, Final

from livekit import rtc
from livekit.agents import (
    Agent,
    AgentServer,
    AgentSession,
    JobContext,
    JobProcess,
    cli,
    llm,
)
from livekit.agents.voice.events import CloseEvent, ConversationItemAddedEvent
from livekit.plugins import silero

from tests.support.fakes import FakeLLM, FakeSTT, FakeTTS, echo_reply

log = logging.getLogger("tests.e2e.tone_agent")

TONE_HZ: Final = 550.0
TONE_SECONDS: Final = 1.5
TONE_AMPLITUDE: Final = 0.3
HEARD_TEXT: Final = "hello agent"
END_CALL_METHOD: Final = "agent.end_call"
TRANSCRIPT_TOPIC: Final = "transcript"


def split_in_parts(message: dict[str, Any], parts: int) -> list[bytes]:
    """The data-channel framing of DESIGN.md: every field repeated, ``part`` = 1..parts, the
    text split on code-point boundaries."""
    text = str(message.get("text", ""))
    size = max(1, math.ceil(len(text) / parts))
    chunks = [text[i * size : (i + 1) * size] for i in range(parts)]
    return [
        json.dumps({**message, "text": chunk, "part": i + 1, "parts": parts}).encode()
        for i, chunk in enumerate(chunks)
    ]


def prewarm(proc: JobProcess) -> None:
    proc.userdata["vad"] = silero.VAD.load()


async def entrypoint(ctx: JobContext) -> None:
    metadata: dict[str, Any] = {}
    if ctx.job.metadata:
        metadata = json.loads(ctx.job.metadata)
    session: AgentSession[None] = AgentSession(
        stt=FakeSTT(HEARD_TEXT),
        llm=FakeLLM(echo_reply, token_delay=0),
        tts=FakeTTS(
            frequency=TONE_HZ,
            amplitude=TONE_AMPLITUDE,
            min_duration=TONE_SECONDS,
            max_duration=TONE_SECONDS,
        ),
        vad=ctx.proc.userdata["vad"],
        turn_handling={"turn_detection": "vad"},
    )
    tasks: set[asyncio.Task[None]] = set()
    publish_lock = asyncio.Lock()
    seq = 0

    async def publish(packets: list[bytes]) -> None:
        async with publish_lock:
            for packet in packets:
                try:
                    await ctx.room.local_participant.publish_data(
                        packet, reliable=True, topic=TRANSCRIPT_TOPIC
                    )
                except Exception:
                    log.exception("publish failed")

    def spawn_publish(packets: list[bytes]) -> None:
        task = asyncio.ensure_future(publish(packets))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_item(event: ConversationItemAddedEvent) -> None:
        nonlocal seq
        item = event.item
        if not isinstance(item, llm.ChatMessage) or item.role not in ("user", "assistant"):
            return
        text = item.text_content or ""
        if not text:
            return
        seq += 1
        turn = {"type": "turn", "v": 1, "seq": seq, "role": item.role, "text": text}
        log.info("TONE_AGENT turn %s", json.dumps(turn))
        spawn_publish(split_in_parts(turn, 2))

    session.on("conversation_item_added", on_item)

    def on_close(event: CloseEvent) -> None:
        log.info("TONE_AGENT session closed reason=%s", event.reason.value)

    def on_participant_disconnected(participant: rtc.RemoteParticipant) -> None:
        code = participant.disconnect_reason
        reason = "NONE" if code is None else rtc.DisconnectReason.Name(code)
        log.info("TONE_AGENT participant_disconnected %s %s", participant.identity, reason)

    session.on("close", on_close)
    ctx.room.on("participant_disconnected", on_participant_disconnected)

    async def end_call(data: rtc.RpcInvocationData) -> str:
        log.info("TONE_AGENT end_call from %s", data.caller_identity)
        asyncio.get_running_loop().call_later(0.5, ctx.shutdown, "caller_hangup")
        return "ok"

    await ctx.connect()
    ctx.room.local_participant.register_rpc_method(END_CALL_METHOD, end_call)
    await session.start(agent=Agent(instructions="You are a tone."), room=ctx.room)
    spawn_publish([json.dumps({"type": "job", "metadata": ctx.job.metadata}).encode()])
    log.info("TONE_AGENT session started in %s", ctx.room.name)
    session.say(f"Hello, scenario {metadata.get('scenarioId', 'none')}")


def build_server() -> AgentServer:
    server = AgentServer(
        setup_fnc=prewarm,
        num_idle_processes=1,
        load_threshold=1000.0,
        initialize_process_timeout=30.0,
        shutdown_process_timeout=5.0,
        port=int(os.environ.get("PORT", "0")),
    )
    server.rtc_session(entrypoint, agent_name=os.environ.get("LIVEKIT_AGENT_NAME", "tone-agent"))
    return server


def main() -> None:
    cli.run_app(build_server())


if __name__ == "__main__":
    # run the importable module's main, so the job processes unpickle
    # tests.e2e.tone_agent.entrypoint rather than __main__.entrypoint
    from tests.e2e import tone_agent

    tone_agent.main()
