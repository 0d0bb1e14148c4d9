"""The playground's server refuses what is not its own page (issue 20, item 2) and bounds every
wait on LiveKit and the backend: over real HTTP on 127.0.0.1, with a fake LiveKit twirp API on
loopback that answers a dispatch, garbage, a dropped connection or nothing at all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest
from aiohttp import web
from livekit.api._failover import MIN_FAILOVER_TIMEOUT
from livekit.protocol import agent_dispatch

from agent.config import Settings
from agent.ops.playground.server import UPSTREAM_TIMEOUT, serve
from tests.ops.test_playground import held_recording
from tests.support.backend_stub import BackendStub, Fault
from tests.support.settings import make_settings

SHORT = 0.3  # the playground's bound on LiveKit and the backend in these tests
BACKEND_KEY = "playground-test-key-0123456789"
CREATE_DISPATCH = "/twirp/livekit.AgentDispatchService/CreateDispatch"

Mode = Literal["dispatch", "hang", "garbage", "empty", "drop"]


class FakeLiveKit:
    """LiveKit's twirp CreateDispatch on loopback, answering as `mode` says: a dispatch (as
    LiveKit does), HTML garbage with 200, an empty 200, a dropped connection, or never."""

    def __init__(self) -> None:
        self.mode: Mode = "dispatch"
        self.requests = 0
        self.release = asyncio.Event()  # ends a hang at teardown
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(CREATE_DISPATCH, self.create_dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def create_dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.read()
        if self.mode == "hang":
            await self.release.wait()
        if self.mode == "garbage":
            return web.Response(text="<html>a proxy's login page</html>", content_type="text/html")
        if self.mode == "empty":
            return web.Response(body=b"", content_type="application/protobuf")
        if self.mode == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        asked = agent_dispatch.CreateAgentDispatchRequest.FromString(body)
        dispatch = agent_dispatch.AgentDispatch(
            id="AD_fake", agent_name=asked.agent_name, room=asked.room, metadata=asked.metadata
        )
        return web.Response(body=dispatch.SerializeToString(), content_type="application/protobuf")


@pytest.fixture
async def livekit() -> AsyncIterator[FakeLiveKit]:
    fake = FakeLiveKit()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def settings_for(livekit_url: str, data_dir: Path, **extra: str) -> Settings:
    return make_settings(
        LIVEKIT_URL=livekit_url,
        AGENT_NAME="playground-test-agent",
        AGENT_DATA_DIR=str(data_dir),
        **extra,
    )


async def start(settings: Settings) -> tuple[web.AppRunner, int]:
    runner = await serve(settings, 0, timeout=SHORT)
    return runner, runner.addresses[0][1]


@pytest.fixture
async def playground(livekit: FakeLiveKit, tmp_path: Path) -> AsyncIterator[int]:
    """The port of a playground whose LiveKit is the fake."""
    runner, port = await start(settings_for(livekit.url, tmp_path))
    try:
        yield port
    finally:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # a bound of our own: a playground that holds a request fails the test instead of hanging it
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


def page(port: int, host: str = "127.0.0.1") -> dict[str, str]:
    """What a browser sends on the page's own fetch POST: its Host and Origin."""
    return {"Host": f"{host}:{port}", "Origin": f"http://{host}:{port}"}


async def call(
    http: aiohttp.ClientSession,
    port: int,
    headers: dict[str, str],
    body: Any = None,
    *,
    data: str | None = None,
) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{port}/api/call"
    payload = {"scenarioId": "default"} if body is None else body
    kwargs: dict[str, Any] = {"data": data} if data is not None else {"json": payload}
    async with http.post(url, headers=headers, **kwargs) as response:
        return response.status, await response.json(content_type=None)


ROUTES = [
    ("GET", "/"),
    ("GET", "/static/app.js"),
    ("GET", "/api/scenarios"),
    ("GET", "/api/transcript/sess-1"),
    ("GET", "/api/recording/sess-1"),
    ("GET", "/api/recording/sess-1/1"),
    ("POST", "/api/call"),
]


# ------------------------------------------------------------------ Host and Origin


async def test_a_foreign_host_is_refused_on_every_route(
    livekit: FakeLiveKit, playground: int, http: aiohttp.ClientSession
) -> None:
    """DNS rebinding: evil.example resolves to 127.0.0.1, the browser sends its own name."""
    port = playground
    for host in (f"evil.example:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1", f"0.0.0.0:{port}"):
        headers = {"Host": host, "Origin": f"http://{host}"}
        for method, path in ROUTES:
            async with http.request(
                method,
                f"http://127.0.0.1:{port}{path}",
                headers=headers,
                json={"scenarioId": "default"} if method == "POST" else None,
            ) as response:
                assert response.status == 403, (host, path)
                assert "Host" in (await response.json())["error"]
    assert livekit.requests == 0, "nothing was dispatched"


async def test_a_foreign_origin_is_refused_on_every_route(
    livekit: FakeLiveKit, playground: int, http: aiohttp.ClientSession
) -> None:
    port = playground
    for origin in (f"http://evil.example:{port}", f"http://127.0.0.1:{port + 1}", "null"):
        headers = {"Host": f"127.0.0.1:{port}", "Origin": origin}
        for method, path in ROUTES:
            async with http.request(
                method,
                f"http://127.0.0.1:{port}{path}",
                headers=headers,
                json={"scenarioId": "default"} if method == "POST" else None,
            ) as response:
                assert response.status == 403, (origin, path)
                assert "Origin" in (await response.json())["error"]
    assert livekit.requests == 0


async def test_a_cross_origin_text_plain_post_does_not_dispatch(
    livekit: FakeLiveKit, playground: int, http: aiohttp.ClientSession
) -> None:
    """The form a page on another site can send without a CORS preflight."""
    port = playground
    headers = {
        "Host": f"127.0.0.1:{port}",
        "Origin": "https://evil.example",
        "Content-Type": "text/plain",
    }
    status, _ = await call(http, port, headers, data='{"scenarioId": "default"}')
    assert status == 403
    assert livekit.requests == 0


async def test_a_post_without_origin_is_refused(
    livekit: FakeLiveKit, playground: int, http: aiohttp.ClientSession
) -> None:
    """Browsers send Origin on every POST, the page's own included: one without it is not
    the page."""
    status, answer = await call(http, playground, {"Host": f"127.0.0.1:{playground}"})
    assert status == 403
    assert "Origin" in answer["error"]
    assert livekit.requests == 0


async def test_a_post_that_is_not_json_is_refused_even_from_the_page_origin(
    livekit: FakeLiveKit, playground: int, http: aiohttp.ClientSession
) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        headers = {**page(playground), "Content-Type": content_type}
        status, answer = await call(http, playground, headers, data='{"scenarioId": "default"}')
        assert status == 403, content_type
        assert "application/json" in answer["error"]
    assert livekit.requests == 0


async def test_a_cross_site_fetch_of_the_api_is_refused(
    playground: int, http: aiohttp.ClientSession
) -> None:
    """A no-cors fetch from another site carries no Origin on GET, but Sec-Fetch-Site says so."""
    url = f"http://127.0.0.1:{playground}/api/scenarios"
    for site, status in (("cross-site", 403), ("same-site", 403), ("same-origin", 200)):
        headers = {"Host": f"127.0.0.1:{playground}", "Sec-Fetch-Site": site}
        async with http.get(url, headers=headers) as response:
            assert response.status == status, site


async def test_the_page_on_127_0_0_1_or_localhost_is_served_and_dispatches(
    livekit: FakeLiveKit, playground: int, http: aiohttp.ClientSession
) -> None:
    for host in ("127.0.0.1", "localhost"):
        async with http.get(
            f"http://127.0.0.1:{playground}/", headers={"Host": f"{host}:{playground}"}
        ) as response:
            assert response.status == 200
        async with http.get(
            f"http://127.0.0.1:{playground}/api/scenarios",
            headers={"Host": f"{host}:{playground}", "Sec-Fetch-Site": "same-origin"},
        ) as response:
            assert (await response.json())["scenarios"] == ["default"]
        status, grant = await call(http, playground, page(playground, host))
        assert status == 200, grant
        assert grant["room"].startswith("playground-")
    assert livekit.requests == 2


async def test_a_recording_plays_on_the_own_page_only(
    playground: int, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """What the page's <audio> element sends (Host, Sec-Fetch-Site same-origin, a Range, no
    Origin) gets the caller's voice; another site's page embedding the same URL does not."""
    body = b"OggS" + bytes(range(256)) * 8
    session_id = await held_recording(tmp_path, body)
    url = f"http://127.0.0.1:{playground}/api/recording/{session_id}/1"
    own = {"Host": f"127.0.0.1:{playground}", "Sec-Fetch-Site": "same-origin"}
    async with http.get(url, headers={**own, "Range": "bytes=0-"}) as response:
        assert response.status in (200, 206)
        assert await response.read() == body
    refused = [
        {**own, "Host": f"evil.example:{playground}"},
        {**own, "Origin": "http://evil.example"},
        {**own, "Sec-Fetch-Site": "cross-site"},
    ]
    for headers in refused:
        for path in (url, url.removesuffix("/1")):
            async with http.get(path, headers=headers) as response:
                assert response.status == 403, headers
                assert body not in await response.read()


# ------------------------------------------------------------------ scenarios


async def test_an_unknown_scenario_is_a_404_before_any_dispatch(
    livekit: FakeLiveKit, playground: int, http: aiohttp.ClientSession
) -> None:
    status, answer = await call(http, playground, page(playground), {"scenarioId": "nope"})
    assert status == 404
    assert "'nope'" in answer["error"] and "default" in answer["error"]
    assert livekit.requests == 0


@pytest.fixture
async def backend() -> AsyncIterator[BackendStub]:
    async with BackendStub(BACKEND_KEY) as stub:
        yield stub


@pytest.fixture
async def playground_with_backend(
    livekit: FakeLiveKit, backend: BackendStub, tmp_path: Path
) -> AsyncIterator[int]:
    settings = settings_for(
        livekit.url, tmp_path, BACKEND_URL=backend.url, INTERNAL_SERVICE_KEY=BACKEND_KEY
    )
    runner, port = await start(settings)
    try:
        yield port
    finally:
        await runner.cleanup()


async def test_with_a_backend_an_unknown_scenario_is_a_404_before_any_dispatch(
    livekit: FakeLiveKit, playground_with_backend: int, http: aiohttp.ClientSession
) -> None:
    port = playground_with_backend
    status, answer = await call(http, port, page(port), {"scenarioId": "nope"})
    assert status == 404
    assert "'nope'" in answer["error"] and "BACKEND_URL" in answer["error"]
    assert livekit.requests == 0
    status, _ = await call(http, port, page(port), {"scenarioId": "default"})
    assert status == 200
    assert livekit.requests == 1


async def test_with_a_backend_that_hangs_the_scenario_check_is_a_504_within_the_bound(
    livekit: FakeLiveKit,
    backend: BackendStub,
    playground_with_backend: int,
    http: aiohttp.ClientSession,
) -> None:
    port = playground_with_backend
    backend.queue("get_scenario", Fault(delay=2.0))
    started = time.monotonic()
    status, answer = await call(http, port, page(port))
    assert status == 504
    assert time.monotonic() - started < SHORT + 1.0
    assert "BACKEND_URL" in answer["error"]
    assert livekit.requests == 0


# ------------------------------------------------------------------ LiveKit's answers


async def test_a_livekit_that_never_answers_is_a_504_within_the_bound(
    livekit: FakeLiveKit, playground: int, http: aiohttp.ClientSession
) -> None:
    livekit.mode = "hang"
    started = time.monotonic()
    status, answer = await call(http, playground, page(playground))
    assert status == 504
    assert time.monotonic() - started < SHORT + 1.0
    assert livekit.url in answer["error"]


async def test_garbage_from_livekit_is_a_clear_502(
    livekit: FakeLiveKit, playground: int, http: aiohttp.ClientSession
) -> None:
    for mode in ("garbage", "empty"):
        livekit.mode = mode
        status, answer = await call(http, playground, page(playground))
        assert status == 502, mode
        assert livekit.url in answer["error"] and "not a dispatch" in answer["error"]


async def test_a_livekit_that_drops_the_connection_is_a_502(
    livekit: FakeLiveKit, playground: int, http: aiohttp.ClientSession
) -> None:
    livekit.mode = "drop"
    status, answer = await call(http, playground, page(playground))
    assert status == 502
    assert livekit.url in answer["error"]


async def test_an_unreachable_livekit_is_a_502(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    closed = FakeLiveKit()
    await closed.start()
    url = closed.url
    await closed.stop()  # nothing listens on its port any more
    runner, port = await start(settings_for(url, tmp_path))
    try:
        status, answer = await call(http, port, page(port))
    finally:
        await runner.cleanup()
    assert status == 502
    assert url in answer["error"]


def test_the_default_bound_is_a_few_seconds_and_one_attempt() -> None:
    """livekit-api fails over (3 attempts, each with its own timeout, plus region lookups) when
    a request may take 5 s or more: below that it makes one attempt."""
    assert 0 < UPSTREAM_TIMEOUT < MIN_FAILOVER_TIMEOUT
