"""`python -m agent playground`'s server (issue 14, part 1) against the LiveKit stand-in's twirp
dispatch and a hand-driven fake worker: loopback only, no browser (the page itself is driven by
the Chromium e2e test)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from livekit import api

from agent.config import Settings
from agent.ops.playground.server import STATIC_DIR, serve
from tests.e2e.standin import StandIn
from tests.e2e.test_standin_protocol import AGENT_NAME, connect
from tests.support.settings import make_settings

# what static/VENDOR.md says the vendored livekit-client 2.23.0 UMD bundle is
VENDORED_SHA256 = "fb646f2260d84f91238d0a2dc10726c456631d6a26c7cafc43cfee5959b4d31d"


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    server = StandIn()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def settings_for(standin: StandIn, data_dir: Path, **extra: str) -> Settings:
    return make_settings(
        LIVEKIT_URL=standin.url,
        LIVEKIT_API_KEY=standin.api_key,
        LIVEKIT_API_SECRET=standin.api_secret,
        AGENT_NAME=AGENT_NAME,
        AGENT_DATA_DIR=str(data_dir),
        **extra,
    )


@pytest.fixture
async def playground(standin: StandIn, tmp_path: Path) -> AsyncIterator[tuple[str, web.AppRunner]]:
    runner = await serve(settings_for(standin, tmp_path), 0)
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", runner
    finally:
        await runner.cleanup()


def own_page(base: str) -> dict[str, str]:
    """The Origin the page's own fetch POST carries (the server refuses a POST without it)."""
    return {"Origin": base}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_it_listens_on_127_0_0_1_only(playground: tuple[str, web.AppRunner]) -> None:
    _, runner = playground
    assert [address[0] for address in runner.addresses] == ["127.0.0.1"]


async def test_call_dispatches_the_agent_into_a_fresh_room_with_valid_metadata(
    standin: StandIn, playground: tuple[str, web.AppRunner], http: aiohttp.ClientSession
) -> None:
    base, _ = playground
    worker = await connect(http, standin)
    await worker.register()

    async with http.post(
        f"{base}/api/call", json={"scenarioId": "default"}, headers=own_page(base)
    ) as response:
        assert response.status == 200
        text = await response.text()
    grant = json.loads(text)
    assert set(grant) == {"url", "token", "room", "identity", "agentName"}
    assert standin.api_secret not in text, "the API secret never reaches the page"
    assert grant["url"] == standin.url and grant["agentName"] == AGENT_NAME

    claims = api.TokenVerifier(standin.api_key, standin.api_secret).verify(grant["token"])
    assert claims.identity == grant["identity"]
    assert claims.video is not None
    assert (claims.video.room_join, claims.video.room) == (True, grant["room"])
    assert claims.video.can_publish_data and not claims.video.room_admin
    assert claims.kind != "agent"

    request = (await worker.receive()).availability
    assert request.job.agent_name == AGENT_NAME
    assert request.job.room.name == grant["room"]
    sent = json.loads(request.job.metadata)
    # `record` (the platform's consent to record) may be on the wire with its default: off
    assert sent.pop("record", False) is False
    assert sent == {
        "scenarioId": "default",
        "userId": "playground",
        "participantIdentity": grant["identity"],
    }

    async with http.post(
        f"{base}/api/call", json={"scenarioId": "default"}, headers=own_page(base)
    ) as response:
        assert (await response.json())["room"] != grant["room"], "every call a fresh room"


async def test_a_bad_scenario_id_is_refused_before_any_dispatch(
    standin: StandIn, playground: tuple[str, web.AppRunner], http: aiohttp.ClientSession
) -> None:
    base, _ = playground
    for body in ({"scenarioId": "../etc"}, {"scenarioId": ""}, {}):
        async with http.post(f"{base}/api/call", json=body, headers=own_page(base)) as response:
            assert response.status == 400
    assert standin.jobs == {}


async def test_scenarios_come_from_prompts_without_a_backend(
    playground: tuple[str, web.AppRunner], http: aiohttp.ClientSession
) -> None:
    base, _ = playground
    async with http.get(f"{base}/api/scenarios") as response:
        assert await response.json() == {"source": "prompts", "scenarios": ["default"]}


async def test_the_page_loads_the_vendored_livekit_client_and_nothing_from_a_cdn(
    playground: tuple[str, web.AppRunner], http: aiohttp.ClientSession
) -> None:
    base, _ = playground
    async with http.get(f"{base}/") as response:
        page = await response.text()
    assert '<script src="/static/livekit-client.umd.js">' in page
    assert "https://" not in page and "http://" not in page
    async with http.get(f"{base}/static/livekit-client.umd.js") as response:
        assert hashlib.sha256(await response.read()).hexdigest() == VENDORED_SHA256
    for name in ("VENDOR.md", "..%2F..%2Fserver.py", "index.html"):
        async with http.get(f"{base}/static/{name}") as response:
            assert response.status == 404
    assert (STATIC_DIR / "livekit-client.LICENSE").is_file()


async def test_the_delivered_transcript_is_read_from_the_local_json_file(
    playground: tuple[str, web.AppRunner], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    base, _ = playground
    async with http.get(f"{base}/api/transcript/sess-1") as response:
        assert response.status == 404  # not delivered yet
    turn = {
        "seq": 1,
        "role": "assistant",
        "text": "Hi.",
        "startedAt": "2026-01-01T00:00:00.000Z",
        "endedAt": "2026-01-01T00:00:01.000Z",
        "interrupted": False,
    }
    partial = {"complete": False, "turnCount": 0, "turns": []}
    whole = {"complete": True, "turnCount": 1, "turns": [turn], "endedReason": "caller_hangup"}
    (tmp_path / "transcripts").mkdir()
    for key, body in (("k1", partial), ("k2", whole)):
        document = {"sessionId": "sess-1", "idempotencyKey": key, "transcript": body}
        (tmp_path / "transcripts" / f"sess-1.{key}.json").write_text(json.dumps(document))
    async with http.get(f"{base}/api/transcript/sess-1") as response:
        assert await response.json() == {"where": "local", "transcript": whole}
    async with http.get(f"{base}/api/transcript/sess%2A") as response:
        assert response.status == 404


async def test_a_checkpoint_is_not_shown_as_the_delivered_transcript(
    playground: tuple[str, web.AppRunner], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A live call's checkpoint (`in_progress`) is on disk before its final transcript: the page
    keeps waiting for the final one instead of showing the checkpoint as delivered."""
    base, _ = playground
    checkpoint = {"complete": False, "turnCount": 3, "turns": [], "endedReason": "in_progress"}
    (tmp_path / "transcripts").mkdir()
    document = {"sessionId": "sess-2", "idempotencyKey": "k1", "transcript": checkpoint}
    (tmp_path / "transcripts" / "sess-2.k1.json").write_text(json.dumps(document))
    async with http.get(f"{base}/api/transcript/sess-2") as response:
        assert response.status == 404
    crashed = {"complete": False, "turnCount": 3, "turns": [], "endedReason": "crashed"}
    document = {"sessionId": "sess-2", "idempotencyKey": "k2", "transcript": crashed}
    (tmp_path / "transcripts" / "sess-2.k2.json").write_text(json.dumps(document))
    async with http.get(f"{base}/api/transcript/sess-2") as response:
        assert await response.json() == {"where": "local", "transcript": crashed}
