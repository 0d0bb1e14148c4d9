"""The test backend (tests/support/backend_stub.py) validates what it receives with the schemas
written by hand from DESIGN.md, not with agent.models: raw bodies POSTed here, never built by
our models, are accepted when they follow the text and refused (422) when they do not."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agent.models import Session
from tests.contract.cases import BROKEN_SESSION_CREATES, BROKEN_TRANSCRIPTS
from tests.contract.oracle import contract_errors, golden
from tests.support.backend_stub import BackendStub

KEY = "stub-contract-key-0123456789abcdef"


def transcript_key(session_id: str, body: dict[str, Any]) -> str:
    complete = "true" if body.get("complete") else "false"
    material = (
        f"{session_id}|{body.get('attemptNumber')}|{body.get('source')}|{complete}|"
        f"{body.get('turnCount')}"
    )
    return hashlib.sha256(material.encode()).hexdigest()


@pytest.fixture
async def stub() -> AsyncIterator[BackendStub]:
    async with BackendStub(key=KEY) as running:
        for attempt in (1, 2):
            running.add_session(
                Session(id=f"s{attempt}", user_id="u", scenario_id="x", attempt_number=attempt)
            )
        yield running


async def post_transcript(stub: BackendStub, body: dict[str, Any]) -> httpx.Response:
    session_id = f"s{body.get('attemptNumber', 1)}" if body.get("attemptNumber") in (1, 2) else "s1"
    async with httpx.AsyncClient(base_url=stub.url) as http:
        return await http.post(
            f"/api/internal/sessions/{session_id}/transcript",
            json=body,
            headers={
                "X-Internal-Service-Key": KEY,
                "Idempotency-Key": transcript_key(session_id, body),
            },
        )


async def post_session(stub: BackendStub, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stub.url) as http:
        return await http.post(
            "/api/internal/sessions",
            json=body,
            headers={"X-Internal-Service-Key": KEY, "Idempotency-Key": "create:job-1"},
        )


@pytest.mark.parametrize(
    "name", ["transcript_complete", "transcript_no_show", "transcript_crashed"]
)
async def test_golden_transcripts_are_stored(name: str, stub: BackendStub) -> None:
    body = golden(name)
    response = await post_transcript(stub, body)
    assert response.status_code == 201, response.text
    session_id = f"s{body['attemptNumber']}"
    held = stub.best_transcript(session_id)
    assert held is not None and held.to_control()["transcript"] == body


# The stub also takes the browser's copy (same shape, `source: "browser"`), as the backend does.
STUB_BROKEN = [(case, mutate) for case, mutate in BROKEN_TRANSCRIPTS if case != "source browser"]


@pytest.mark.parametrize(("case", "mutate"), STUB_BROKEN, ids=[c for c, _ in STUB_BROKEN])
async def test_broken_transcripts_are_refused(case: str, mutate: Any, stub: BackendStub) -> None:
    body = copy.deepcopy(golden("transcript_complete"))
    mutate(body)
    response = await post_transcript(stub, body)
    assert response.status_code == 422, (case, response.text)
    assert response.json()["error"] == "invalid_body"
    assert stub.transcripts == {}


async def test_turn_count_and_seq_rules_are_checked(stub: BackendStub) -> None:
    gap = copy.deepcopy(golden("transcript_complete"))
    gap["turns"][1]["seq"] = 4
    short = copy.deepcopy(golden("transcript_complete"))
    short["turnCount"] = 2
    for body in (gap, short):
        response = await post_transcript(stub, body)
        assert response.status_code == 422, response.text


@pytest.mark.parametrize("name", ["session_create", "session_create_minimal"])
async def test_golden_session_creates_are_accepted(name: str, stub: BackendStub) -> None:
    response = await post_session(stub, golden(name))
    assert response.status_code == 201, response.text
    assert response.json()["userId"] == "user-42"


@pytest.mark.parametrize(
    ("case", "mutate"), BROKEN_SESSION_CREATES, ids=[c for c, _ in BROKEN_SESSION_CREATES]
)
async def test_broken_session_creates_are_refused(
    case: str, mutate: Any, stub: BackendStub
) -> None:
    body = copy.deepcopy(golden("session_create"))
    mutate(body)
    response = await post_session(stub, body)
    assert response.status_code == 422, (case, response.text)


# --------------------------------------------------------------------------- resume's routes


async def test_a_checkpoint_golden_body_is_valid_and_stored(stub: BackendStub) -> None:
    body = golden("transcript_in_progress")
    assert contract_errors("transcript", body) == []
    response = await post_transcript(stub, body)
    assert response.status_code == 201, response.text
    held = stub.best_transcript("s1")
    assert held is not None and held.to_control()["transcript"] == body


async def create_in_room(stub: BackendStub, room_sid: str, user: str = "user-42") -> Any:
    async with httpx.AsyncClient(base_url=stub.url) as http:
        response = await http.post(
            "/api/internal/sessions",
            json={"scenarioId": "scenario-7", "userId": user, "roomName": "room-abc"},
            headers={"X-Internal-Service-Key": KEY, "Idempotency-Key": f"create:{room_sid}"},
        )
    assert response.status_code == 201, response.text
    return response.json()


async def test_session_creation_is_one_session_per_room(stub: BackendStub) -> None:
    first = await create_in_room(stub, "RM_abc")
    again = await create_in_room(stub, "RM_abc")  # a job re-dispatched into the same room
    other = await create_in_room(stub, "RM_def")
    assert again == first
    assert (first["attemptNumber"], other["attemptNumber"]) == (1, 2)
    assert other["id"] != first["id"]


async def get_held(stub: BackendStub, session_id: str, attempt: int, key: str = KEY) -> Any:
    async with httpx.AsyncClient(base_url=stub.url) as http:
        return await http.get(
            f"/api/internal/sessions/{session_id}/transcript",
            params={"attemptNumber": str(attempt)},
            headers={"X-Internal-Service-Key": key},
        )


def with_turns(body: dict[str, Any], count: int) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["turns"] = [{**body["turns"][n % 2], "seq": n + 1} for n in range(count)]
    body["turnCount"] = count
    return body


async def test_get_transcript_answers_the_best_held_by_the_documented_ranking(
    stub: BackendStub,
) -> None:
    assert (await get_held(stub, "s1", 1)).status_code == 404  # nothing held yet
    checkpoint = golden("transcript_in_progress")  # agent, incomplete, 2 turns
    browser = {**with_turns(checkpoint, 5), "source": "browser", "complete": True}
    browser["endedReason"] = "caller_hangup"
    assert (await post_transcript(stub, browser)).status_code == 201
    assert (await post_transcript(stub, checkpoint)).status_code == 201
    # agent over browser, even against a complete and longer browser copy
    assert (await get_held(stub, "s1", 1)).json() == checkpoint
    longer = with_turns(checkpoint, 4)
    assert (await post_transcript(stub, longer)).status_code == 201
    assert (await get_held(stub, "s1", 1)).json() == longer
    final = {**with_turns(checkpoint, 3), "complete": True, "endedReason": "caller_left"}
    assert (await post_transcript(stub, final)).status_code == 201  # complete over more turns
    assert (await get_held(stub, "s1", 1)).json() == final


async def test_get_transcript_is_per_attempt_and_needs_the_key(stub: BackendStub) -> None:
    assert (await post_transcript(stub, golden("transcript_in_progress"))).status_code == 201
    assert (await get_held(stub, "s1", 2)).status_code == 404  # another attempt holds none
    assert (await get_held(stub, "nobody", 1)).status_code == 404
    assert (await get_held(stub, "s1", 1, key="wrong-key")).status_code == 401
