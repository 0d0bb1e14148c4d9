"""`python -m agent playground`'s server (issue 14, part 1) against the LiveKit stand-in's twirp
dispatch and a hand-driven fake worker: loopback only, no browser (the page itself is driven by
the Chromium e2e test)."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from livekit import api
from yarl import URL

from agent.backend.local import LocalBackend
from agent.config import Settings
from agent.models import SessionCreate
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


# ------------------------------------------------------------------ recordings (issue 24)


async def test_a_call_with_record_ticked_dispatches_record_true_in_the_metadata(
    standin: StandIn, playground: tuple[str, web.AppRunner], http: aiohttp.ClientSession
) -> None:
    base, _ = playground
    worker = await connect(http, standin)
    await worker.register()
    async with http.post(
        f"{base}/api/call", json={"scenarioId": "default", "record": True}, headers=own_page(base)
    ) as response:
        assert response.status == 200
    sent = json.loads((await worker.receive()).availability.job.metadata)
    assert sent["record"] is True


async def test_a_record_that_is_not_a_json_boolean_is_refused_before_any_dispatch(
    standin: StandIn, playground: tuple[str, web.AppRunner], http: aiohttp.ClientSession
) -> None:
    """As the job metadata: a "true" string (or 1, or null) never turns recording on."""
    base, _ = playground
    for record in ("true", 1, None):
        body = {"scenarioId": "default", "record": record}
        async with http.post(f"{base}/api/call", json=body, headers=own_page(base)) as response:
            assert response.status == 400, record
            assert "record" in (await response.json())["error"]
    assert standin.jobs == {}


async def held_recording(data_dir: Path, *parts: bytes) -> str:
    """A session created through the embedded local backend, with `parts` delivered as its
    recording parts 1..n by `LocalBackend.put_recording` (as the worker uploads them); its id."""
    backend = LocalBackend(data_dir)
    body = {"scenarioId": "default", "userId": "playground", "roomName": "playground-rec"}
    session = await backend.create_session(
        SessionCreate.model_validate(body), room_sid=f"RM_{uuid.uuid4().hex[:12]}"
    )
    for number, data in enumerate(parts, start=1):
        receipt = await backend.put_recording(
            session.id, session.attempt_number, number, data, deadline=5
        )
        assert receipt.status == "delivered"
    assert len(backend.recording_paths(session.id)) == len(parts)
    return session.id


OGG_1 = b"OggS" + b"\x01" * 3000  # the route serves bytes: it need not decode them
OGG_2 = b"OggS" + b"\x02" * 5000


async def test_the_delivered_recording_is_served_as_audio_ogg_from_the_local_backend(
    playground: tuple[str, web.AppRunner], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    base, _ = playground
    session_id = await held_recording(tmp_path, OGG_1)
    async with http.get(f"{base}/api/recording/{session_id}") as response:
        assert response.status == 200
        listing = await response.json()
    url = f"/api/recording/{session_id}/1"
    assert listing == {"where": "local", "parts": [{"url": url, "bytes": len(OGG_1)}]}
    async with http.get(f"{base}{url}") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "audio/ogg"
        assert await response.read() == OGG_1


async def test_each_part_of_a_recording_is_served_in_order(
    playground: tuple[str, web.AppRunner], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A resumed call records one part per run: the page plays each, in order."""
    base, _ = playground
    session_id = await held_recording(tmp_path, OGG_1, OGG_2)
    async with http.get(f"{base}/api/recording/{session_id}") as response:
        parts = (await response.json())["parts"]
    assert [part["bytes"] for part in parts] == [len(OGG_1), len(OGG_2)]
    served = []
    for part in parts:
        async with http.get(f"{base}{part['url']}") as response:
            served.append(await response.read())
    assert served == [OGG_1, OGG_2]
    async with http.get(f"{base}/api/recording/{session_id}/3") as response:
        assert response.status == 404
        assert (await response.json())["error"] == "no such recording part"


async def test_a_session_without_a_recording_is_a_404_that_says_why(
    playground: tuple[str, web.AppRunner], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    base, _ = playground
    recorded = await held_recording(tmp_path, OGG_1)
    unrecorded = await held_recording(tmp_path)
    for session_id in (unrecorded, "local-unknown"):
        async with http.get(f"{base}/api/recording/{session_id}") as response:
            assert response.status == 404
            answer = await response.json()
        assert answer["where"] == "local"
        assert "not recorded" in answer["error"] and "not delivered yet" in answer["error"]
        async with http.get(f"{base}/api/recording/{session_id}/1") as response:
            assert response.status == 404
            assert (await response.json())["error"] == "no such recording part"
    async with http.get(f"{base}/api/recording/{recorded}") as response:
        assert response.status == 200


async def test_a_session_id_that_is_not_plain_is_refused_not_used_as_a_path_or_pattern(
    playground: tuple[str, web.AppRunner], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The id is a lookup key only: a glob (`local-*` would match another session's files), a
    dotted or an encoded path is a 400, and a part is a number, never a file name."""
    base, _ = playground
    session_id = await held_recording(tmp_path, OGG_1)
    (tmp_path / "secret.ogg").write_bytes(b"not a recording")
    for bad in ("local-%2A", "local-%3F", f"{session_id}.attempt1", "..%2Fsecret", "%2E%2E"):
        for suffix in ("", "/1"):
            url = URL(f"{base}/api/recording/{bad}{suffix}", encoded=True)
            async with http.get(url) as response:
                assert response.status == 400, (bad, suffix)
                assert (await response.json())["error"] == "not a session id"
    for part in ("0", "01", "1.ogg", "..%2F..%2Fsecret.ogg", "-1", "%C2%B9"):
        url = URL(f"{base}/api/recording/{session_id}/{part}", encoded=True)
        async with http.get(url) as response:
            assert response.status == 404, part
            assert (await response.json())["error"] == "no such recording part"


async def test_with_a_backend_the_recording_route_says_recordings_go_there(
    standin: StandIn, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """With BACKEND_URL the worker uploads recordings to the backend: nothing local is served,
    not even a file an earlier run without a backend left in AGENT_DATA_DIR."""
    session_id = await held_recording(tmp_path, OGG_1)
    settings = settings_for(
        standin,
        tmp_path,
        BACKEND_URL="http://127.0.0.1:9",
        INTERNAL_SERVICE_KEY="playground-test-key-0123456789",
    )
    runner = await serve(settings, 0)
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        for path in (f"/api/recording/{session_id}", f"/api/recording/{session_id}/1"):
            async with http.get(f"{base}{path}") as response:
                assert response.status == 404
                answer = await response.json()
            assert answer["where"] == "backend"
            assert "BACKEND_URL" in answer["error"] and "/recording" in answer["error"]
    finally:
        await runner.cleanup()


def function_body(script: str, name: str) -> str:
    """The text of the top-level function `name` in the page's script (to its closing brace
    at the start of a line)."""
    found = re.search(rf"^(?:async )?function {name}\(.*?^\}}$", script, re.S | re.M)
    assert found is not None, f"no function {name} in app.js"
    return found.group(0)


async def test_the_page_asks_for_the_recording_after_end_and_offers_the_record_box(
    playground: tuple[str, web.AppRunner], http: aiohttp.ClientSession
) -> None:
    """The wiring the Chromium test (test_playground_page) drives, checked where no browser
    is installed: `end` -> afterCall -> fetchRecording -> the route, polled with a bound; the
    call sends the box's value as `record`; the page has an element for the audio."""
    base, _ = playground
    async with http.get(f"{base}/") as response:
        page = await response.text()
    assert 'type="checkbox" id="record"' in page and 'id="recording"' in page
    assert "platform decides" in page  # the page says who decides consent
    async with http.get(f"{base}/static/app.js") as response:
        script = await response.text()
    end_branch = function_body(script, "onTranscriptPacket").split('"end"', 1)[1]
    assert "afterCall();" in end_branch
    assert "fetchRecording(sessionId);" in function_body(script, "afterCall")
    fetching = function_body(script, "fetchRecording")
    assert "fetch(`/api/recording/${encodeURIComponent(sessionId)}`)" in fetching
    assert "DELIVERY_WAIT_MS / POLL_MS" in fetching  # bounded
    assert 'createElement("audio")' in function_body(script, "showRecording")
    assert "record: state.record" in function_body(script, "call")
