"""The deploy healthcheck, `GET /` on PORT (issue 20 item 14): 503 until the worker has registered
with LiveKit, then 200 for the rest of its life, a drain included (503 again only once it has given
up on LiveKit). A deploy with a wrong LIVEKIT_URL or key therefore never passes Railway's
healthcheck, which runs while the new deployment starts.

Served by the worker's real health server on 127.0.0.1, against a loopback LiveKit that answers
the registration only when the test lets it, and against a port that refuses connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from aiohttp import WSMsgType, web
from livekit.protocol import agent

from agent.server import WorkerServer
from agent.worker import build_server
from tests.support.settings import REQUIRED_ENV, make_settings

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    # a fixed free port: with PORT=0 the health server's IPv4 and IPv6 sockets get different ones
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def get(url: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response,
    ):
        return response.status, await response.text()


class LoopbackLiveKit:
    """LiveKit's worker endpoint (`/agent`), just enough to register: it reads the worker's
    `register` message and answers it once `answer` is set, then keeps the socket open."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()
        self._sockets: set[web.WebSocketResponse] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/agent", self._agent)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"ws://127.0.0.1:{port}"

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _agent(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            async for frame in ws:
                if frame.type != WSMsgType.BINARY:
                    continue
                message = agent.WorkerMessage()
                message.ParseFromString(frame.data)
                if message.WhichOneof("message") == "register":
                    self.asked.set()
                    await self.answer.wait()
                    reply = agent.ServerMessage(
                        register=agent.RegisterWorkerResponse(worker_id="AW_health")
                    )
                    await ws.send_bytes(reply.SerializeToString())
        finally:
            self._sockets.discard(ws)
        return ws


@asynccontextmanager
async def running_worker(tmp_path: Path) -> AsyncIterator[tuple[WorkerServer, LoopbackLiveKit]]:
    livekit = LoopbackLiveKit()
    await livekit.start()
    settings = make_settings(
        AGENT_DATA_DIR=str(tmp_path), PORT=str(free_port()), LIVEKIT_URL=livekit.url
    )
    server = build_server(settings)
    started = asyncio.Event()
    server.on("worker_started", lambda: started.set())
    # devmode: no idle job processes; registration is the same as in `start`
    task = asyncio.create_task(server.run(devmode=True))
    try:
        await asyncio.wait_for(started.wait(), 30)
        yield server, livekit
    finally:
        await server.aclose()
        await asyncio.wait_for(task, 30)
        await livekit.stop()


def base_url(server: WorkerServer) -> str:
    health = server._http_server
    assert health is not None
    return f"http://127.0.0.1:{health.port}"


async def test_root_is_503_until_livekit_answers_the_registration_then_200(
    tmp_path: Path,
) -> None:
    async with running_worker(tmp_path) as (server, livekit):
        base = base_url(server)
        assert await get(f"{base}/") == (503, "not registered with LiveKit yet")

        await asyncio.wait_for(livekit.asked.wait(), 30)  # connected, registration unanswered
        assert (await get(f"{base}/"))[0] == 503

        registered = asyncio.Event()
        server.on("worker_registered", lambda *_: registered.set())
        livekit.answer.set()
        await asyncio.wait_for(registered.wait(), 30)
        assert await get(f"{base}/") == (200, "OK")


async def test_root_stays_200_while_a_registered_worker_drains(tmp_path: Path) -> None:
    async with running_worker(tmp_path) as (server, livekit):
        base = base_url(server)
        registered = asyncio.Event()
        server.on("worker_registered", lambda *_: registered.set())
        livekit.answer.set()
        await asyncio.wait_for(registered.wait(), 30)

        await server.drain(timeout=5)
        assert await get(f"{base}/") == (200, "OK")  # the liveness of a worker finishing calls
        assert (await get(f"{base}/ready"))[0] == 503  # while routing stops


async def test_root_is_503_for_a_worker_registered_before_that_gave_up(tmp_path: Path) -> None:
    async with running_worker(tmp_path) as (server, livekit):
        base = base_url(server)
        registered = asyncio.Event()
        server.on("worker_registered", lambda *_: registered.set())
        livekit.answer.set()
        await asyncio.wait_for(registered.wait(), 30)

        server._connection_failed = True  # what the library sets when it stops retrying
        assert await get(f"{base}/") == (503, "failed to connect to livekit")


def test_start_with_a_livekit_url_that_refuses_answers_503_on_root(tmp_path: Path) -> None:
    """The reported deploy: a wrong LIVEKIT_URL, the default retries (about 134 s of them, longer
    than railway.toml's healthcheckTimeout): `GET /` must fail all that time."""
    port = free_port()
    env = {
        **REQUIRED_ENV,
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "AGENT_DATA_DIR": str(tmp_path / "data"),
        "LIVEKIT_URL": "ws://127.0.0.1:9",  # discard port: refused at once, retried with backoff
        "AGENT_NAME": "test-agent",
        "NUM_IDLE_PROCESSES": "0",
        "PORT": str(port),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "start"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,  # the LiveKit CLI's JSON log lines
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    answers: list[tuple[int, str]] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(answers) < 5 and process.poll() is None:
            with contextlib.suppress(aiohttp.ClientConnectionError):  # not listening yet
                answers.append(asyncio.run(get(f"http://127.0.0.1:{port}/")))
            time.sleep(0.5)
        process.terminate()
        logs, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert len(answers) == 5, logs[-3000:]
    assert set(answers) == {(503, "not registered with LiveKit yet")}
    assert "failed to connect to livekit, retrying" in logs
