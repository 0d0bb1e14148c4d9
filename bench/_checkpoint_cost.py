"""Checkpoint cost (issue 15) for bench_turn_overhead: checkpoints on vs off, side by side.

Rule: measures what a checkpoint costs the event loop, never asserts. The call is wired by the
worker's own `attach_transcript` (journal append, data-channel publisher, and with checkpoints
on the `Checkpointer` trigger), on an unstarted AgentSession so `usage_from_session` runs as in
a call; the backend is the real `HttpBackend` posting to a trivial HTTP server in a subprocess
on 127.0.0.1 (its own process: its work never competes with ours for the GIL). Three figures:

- per assistant turn: the recorder's synchronous handler (journal append, trigger, publish) with
  checkpoints on vs off, at 10/50/200 turns so far;
- per checkpoint: the on-loop work of the post's preparation (`build_checkpoint` and the body's
  JSON), at the same sizes;
- while posts are in flight: the loop's wake-up lag (a 5 ms sleeper) with an assistant turn every
  25 ms on a 200-turn call, checkpoints every 0.05 s (100 x the default rate) vs off, and the
  process CPU per checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from livekit.agents import AgentSession, llm
from pydantic import SecretStr

from agent.backend import HttpBackend
from agent.call import Call
from agent.call.finish import build_checkpoint
from agent.call.session import attach_transcript, open_journal
from agent.journal import Journal
from agent.models import JobMetadata, Session
from agent.prompts import load_scenario
from bench._audio_in import LoopLagProbe
from bench._common import summarize
from tests.support.fakes import CaptureRoom, FakeLLM

KEY = "bench-internal-service-key"
SIZES = (10, 50, 200)
TEXT = "I have been thinking about what you said earlier, and I am not sure it is that simple."

# A backend that acknowledges every transcript POST with 201 {"ok": true}, keep-alive.
_SERVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = b'{"ok": true}'
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@contextlib.contextmanager
def loopback_backend_server() -> Iterator[str]:
    process = subprocess.Popen([sys.executable, "-c", _SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.asynccontextmanager
async def wired_call(
    data_dir: Path, backend: HttpBackend, *, checkpoint_seconds: float, tag: str
) -> AsyncIterator[Call]:
    """A journaled call with the worker's transcript wiring, no room and no audio."""
    journal = Journal.in_dir(data_dir / tag)
    room = CaptureRoom()
    call = Call(
        f"AJ_{tag}",
        f"room-{tag}",
        JobMetadata(scenario_id="default", user_id="u1", session_id=f"S-{tag}"),
        backend=backend,
        journal=journal,
        room_connected=room.isconnected,
        scenario=load_scenario("default"),
        session=Session(id=f"S-{tag}", user_id="u1", scenario_id="default", attempt_number=1),
    )
    await open_journal(call)
    session: AgentSession[None] = AgentSession(llm=FakeLLM("ok"))
    call.agent_session = session
    attach_transcript(call, session, room.as_room(), checkpoint_seconds=checkpoint_seconds)
    try:
        yield call
    finally:
        call.end_reason("caller_hangup")
        await call.cancel_tasks()
        if call.publisher is not None:
            await call.publisher.finish(send_end=False, timeout=2.0)
        journal.close()


def add_turn(call: Call, role: str) -> float:
    """One final turn through the recorder's handler; its synchronous cost in seconds."""
    assert call.recorder is not None
    item = llm.ChatMessage(role=role, content=[TEXT])
    started = time.perf_counter()
    call.recorder.add_item(item)
    return time.perf_counter() - started


async def grow_to(call: Call, turns: int) -> None:
    assert call.recorder is not None
    while call.recorder.turn_count < turns:
        add_turn(call, "user" if call.recorder.turn_count % 2 == 0 else "assistant")
        if call.recorder.turn_count % 20 == 0:
            await asyncio.sleep(0)  # let the publisher drain, as a live call would


async def per_turn_and_build(data_dir: Path, backend: HttpBackend, *, reps: int) -> dict[str, Any]:
    """The handler's cost per assistant turn (on vs off) and a checkpoint's preparation."""
    figures: dict[str, Any] = {}
    for size in SIZES:
        row: dict[str, Any] = {}
        for arm, seconds in (("off", 0.0), ("on", 5.0)):
            async with wired_call(
                data_dir, backend, checkpoint_seconds=seconds, tag=f"turn-{arm}-{size}"
            ) as call:
                await grow_to(call, size)
                samples: list[float] = []
                for _ in range(reps):
                    add_turn(call, "user")
                    samples.append(add_turn(call, "assistant"))
                    await asyncio.sleep(0)  # the first trigger's post runs here (on arm)
                row[f"handler_{arm}_us"] = summarize(samples, scale=1e6, digits=1)
        async with wired_call(data_dir, backend, checkpoint_seconds=0, tag=f"build-{size}") as call:
            await grow_to(call, size)
            builds, bodies = [], []
            for _ in range(reps):
                started = time.perf_counter()
                payload = build_checkpoint(call)
                built = time.perf_counter()
                payload.to_json_bytes()
                builds.append(built - started)
                bodies.append(time.perf_counter() - built)
            row["build_us"] = summarize(builds, scale=1e6, digits=1)
            row["json_us"] = summarize(bodies, scale=1e6, digits=1)
            row["body_bytes"] = len(payload.to_json_bytes())
        figures[str(size)] = row
    return figures


async def lag_while_posting(
    data_dir: Path, backend: HttpBackend, *, seconds: float, turns: int = 200
) -> dict[str, Any]:
    """Loop wake-up lag with checkpoints posting all the time vs none, same turn feed."""
    from prometheus_client import REGISTRY

    def sent() -> float:
        labels = {"result": "sent"}
        return REGISTRY.get_sample_value("voice_agent_checkpoints_total", labels) or 0.0

    arms: dict[str, Any] = {}
    for arm, interval in (("off", 0.0), ("on", 0.05), ("off_again", 0.0)):
        async with wired_call(
            data_dir, backend, checkpoint_seconds=interval, tag=f"lag-{arm}"
        ) as call:
            await grow_to(call, turns)
            await asyncio.sleep(0.2)
            probe = LoopLagProbe(interval=0.005)
            sent_before = sent()
            cpu_before = time.process_time()
            probe.start()
            ends = time.monotonic() + seconds
            while time.monotonic() < ends:
                add_turn(call, "user")
                add_turn(call, "assistant")
                await asyncio.sleep(0.025)
            lag = await probe.stop()
            cpu = time.process_time() - cpu_before
            posts = sent() - sent_before
        arms[arm] = {"lag_ms": lag, "cpu_s": round(cpu, 4), "checkpoints_sent": int(posts)}
    on, off = arms["on"], arms["off"]
    extra_cpu = on["cpu_s"] - (off["cpu_s"] + arms["off_again"]["cpu_s"]) / 2
    if on["checkpoints_sent"]:
        arms["cpu_ms_per_checkpoint"] = round(extra_cpu / on["checkpoints_sent"] * 1000, 3)
    arms["seconds_per_arm"] = seconds
    return arms


async def measure(*, smoke: bool) -> dict[str, Any]:
    with loopback_backend_server() as url, tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp:
        backend = HttpBackend(url, SecretStr(KEY))
        try:
            per_turn = await per_turn_and_build(Path(tmp), backend, reps=5 if smoke else 100)
            lag = await lag_while_posting(Path(tmp), backend, seconds=0.5 if smoke else 4.0)
        finally:
            await backend.aclose()
    return {
        "definition": (
            "handler: recorder.add_item of an assistant turn (journal append, checkpoint "
            "trigger when on, publish); build/json: build_checkpoint + body serialization, "
            "the on-loop part of a checkpoint; lag: 5 ms sleeper's wake-up lateness while an "
            "assistant turn lands every 25 ms on a 200-turn call, checkpoints every 0.05 s "
            "(HttpBackend -> loopback server in a subprocess) vs off"
        ),
        "per_turn": per_turn,
        "in_flight": lag,
    }


def report(figures: dict[str, Any]) -> None:
    print("checkpoint cost on the event loop (on vs off, same run)")
    for size, row in figures["per_turn"].items():
        off, on = row["handler_off_us"], row["handler_on_us"]
        print(
            f"  {size:>4s} turns: assistant-turn handler median off {off['median']:.1f} us / "
            f"on {on['median']:.1f} us (p90 {off['p90']:.1f} / {on['p90']:.1f}); "
            f"checkpoint build {row['build_us']['median']:.1f} us + JSON "
            f"{row['json_us']['median']:.1f} us ({row['body_bytes']} bytes)"
        )
    lag = figures["in_flight"]
    for arm in ("off", "on", "off_again"):
        figures_arm = lag[arm]
        lag_ms = figures_arm["lag_ms"]
        print(
            f"  loop lag {arm:9s}: p50 {lag_ms['p50_ms']} ms, p99 {lag_ms['p99_ms']} ms, "
            f"max {lag_ms['max_ms']} ms; checkpoints sent {figures_arm['checkpoints_sent']}"
        )
    if "cpu_ms_per_checkpoint" in lag:
        print(f"  CPU per checkpoint of 200 turns: {lag['cpu_ms_per_checkpoint']} ms")
