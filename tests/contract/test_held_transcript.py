"""Resume's side of the contract (DESIGN.md "Backend", "Surviving a worker's death"), with every
expectation written by hand from the text: the session create key is `create:{roomSid}`, the
held-transcript GET goes to `/api/internal/sessions/{sessionId}/transcript?attemptNumber=N` with
the key header, and its answer (the POST body's shape, but received: open, any source and
endedReason) parses; 404 means none is held; anything else malformed is an error naming the
field, never a crash."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from agent.backend import BackendResponseInvalid, HttpBackend
from agent.models import SessionCreate, Turn
from tests.contract.conftest import KEY, CaptureServer
from tests.contract.oracle import contract_errors, golden
from tests.support.backend_stub import BackendStub, Fault


async def test_session_create_is_keyed_by_the_room_sid(
    client: HttpBackend, capture: CaptureServer
) -> None:
    body = SessionCreate(scenario_id="scenario-7", user_id="user-42", room_name="room-abc")
    await client.create_session(body, room_sid="RM_abc")
    request = capture.last("/api/internal/sessions")
    assert (request.method, request.headers["Idempotency-Key"]) == ("POST", "create:RM_abc")


async def test_get_transcript_request_is_the_documented_one(
    client: HttpBackend, capture: CaptureServer
) -> None:
    await client.get_transcript("sess-1", 2)
    [request] = capture.requests
    assert request.method == "GET"
    assert request.path == "/api/internal/sessions/sess-1/transcript"
    assert request.query == "attemptNumber=2"
    assert request.headers["X-Internal-Service-Key"] == KEY
    assert "Idempotency-Key" not in request.headers  # a read, nothing to replay
    assert request.body == b""


# --------------------------------------------------------------------------- the answer

STUB_KEY = "held-transcript-stub-key-0123456789"


@pytest.fixture
async def stub() -> AsyncIterator[BackendStub]:
    async with BackendStub(key=STUB_KEY) as running:
        yield running


@pytest.fixture
async def stub_client(stub: BackendStub) -> AsyncIterator[HttpBackend]:
    backend = HttpBackend(stub.url, SecretStr(STUB_KEY), timeout=5.0, default_deadline=10.0)
    try:
        yield backend
    finally:
        await backend.aclose()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


async def test_a_browser_transcript_with_unknown_keys_parses(
    stub: BackendStub, stub_client: HttpBackend
) -> None:
    stub.queue("get_transcript", Fault(json=golden("held_transcript_browser")))
    held = await stub_client.get_transcript("sess-9", 3)
    assert held is not None
    assert (held.attempt_number, held.source, held.complete, held.ended_reason) == (
        3,
        "browser",
        False,
        "tab_closed",
    )
    assert (held.started_at, held.ended_at, held.turn_count) == (
        at("2026-11-22T09:00:00.000Z"),
        at("2026-11-22T09:01:10.500Z"),
        2,
    )
    assert [(t.seq, t.role, t.text, t.interrupted) for t in held.turns] == [
        (1, "assistant", "Hello, who am I speaking with?", False),
        (2, "user", "It's Sam.", False),
    ]
    assert held.turns[1].started_at == at("2026-11-22T09:00:03.000Z")
    assert all(isinstance(t, Turn) for t in held.turns)  # the resumed call carries them on


async def test_a_checkpoint_body_parses(stub: BackendStub, stub_client: HttpBackend) -> None:
    body = golden("transcript_in_progress")
    assert contract_errors("transcript", body) == []  # the hand-written schema takes it too
    stub.queue("get_transcript", Fault(json=body))
    held = await stub_client.get_transcript("sess-9", 1)
    assert held is not None
    assert (held.source, held.complete, held.ended_reason, held.turn_count) == (
        "agent",
        False,
        "in_progress",
        2,
    )
    assert [t.text for t in held.turns] == [
        "Hi, I'm here. What's on your mind?",
        "I had a rough week.",
    ]


async def test_404_means_none_is_held(stub_client: HttpBackend) -> None:
    assert await stub_client.get_transcript("no-such-session", 1) is None


@pytest.mark.parametrize(
    ("name", "mutate", "field"),
    [
        ("turns missing", lambda b: b.pop("turns"), "turns"),
        ("turnCount a word", lambda b: b.update(turnCount="two"), "turnCount"),
        ("a turn without text", lambda b: b["turns"][0].pop("text"), "turns.0.text"),
        ("a role of system", lambda b: b["turns"][1].update(role="system"), "turns.1.role"),
        # DESIGN: a held body is validated, timezone-aware timestamps included
        (
            "a start without a timezone",
            lambda b: b.update(startedAt="2026-12-02T18:00:00"),
            "startedAt",
        ),
        (
            "a turn's end without a timezone",
            lambda b: b["turns"][0].update(endedAt="2026-11-22T09:00:02.750"),
            "turns.0.endedAt",
        ),
    ],
)
async def test_a_malformed_answer_is_invalid_naming_the_field(
    name: str, mutate: object, field: str, stub: BackendStub, stub_client: HttpBackend
) -> None:
    body = golden("held_transcript_browser")
    assert callable(mutate)
    mutate(body)
    stub.queue("get_transcript", Fault(json=body))
    with pytest.raises(BackendResponseInvalid) as caught:
        await stub_client.get_transcript("sess-9", 3)
    assert field in str(caught.value), name
    assert "Sam" not in str(caught.value)  # never the transcript's text


async def test_an_html_page_is_invalid_not_a_crash(
    stub: BackendStub, stub_client: HttpBackend
) -> None:
    stub.queue("get_transcript", Fault(text="<html>login</html>", content_type="text/html"))
    with pytest.raises(BackendResponseInvalid, match="not JSON"):
        await stub_client.get_transcript("sess-9", 3)
