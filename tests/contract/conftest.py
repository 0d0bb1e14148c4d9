"""A loopback server that records what the worker's real HTTP client sends and acknowledges it,
so contract tests see the exact bytes of a delivery without any validation on the way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from pydantic import SecretStr

from agent.backend import HttpBackend
from tests.contract.oracle import golden

KEY = "contract-test-key-0123456789abcdef"


@dataclass
class Captured:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: str = ""  # the raw query string, as sent


@dataclass
class CaptureServer:
    url: str = ""
    requests: list[Captured] = field(default_factory=list)

    def last(self, suffix: str) -> Captured:
        return [r for r in self.requests if r.path.endswith(suffix)][-1]


@pytest.fixture
async def capture() -> AsyncIterator[CaptureServer]:
    server = CaptureServer()

    async def record(request: web.Request) -> web.Response:
        server.requests.append(
            Captured(
                request.method,
                request.path,
                dict(request.headers),
                await request.read(),
                request.query_string,
            )
        )
        if request.method == "GET" and request.path.endswith("/transcript"):
            # get_transcript parses the answer as a held transcript: give it the golden one.
            return web.json_response(golden("held_transcript_browser"))
        if request.path == "/api/internal/sessions":
            # create_session parses the answer as a Session: give it one.
            session = {"id": "sess-1", "userId": "u", "scenarioId": "s", "attemptNumber": 1}
            return web.json_response(session, status=201)
        return web.json_response({"ok": True}, status=201)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture
async def client(capture: CaptureServer) -> AsyncIterator[HttpBackend]:
    backend = HttpBackend(capture.url, SecretStr(KEY), timeout=5.0, default_deadline=10.0)
    try:
        yield backend
    finally:
        await backend.aclose()
