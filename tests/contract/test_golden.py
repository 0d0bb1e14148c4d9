"""The worker's real delivery code sends exactly the golden bodies written by hand from
DESIGN.md (tests/contract/golden/): the same keys, names, nesting and values, no key more."""

from __future__ import annotations

from datetime import datetime

import pytest

from agent.backend import HttpBackend
from agent.models import EndMessage, InterimMessage, SessionCreate, Turn
from agent.transcript import turn_packets
from tests.contract.bodies import GOLDEN_CALLS
from tests.contract.conftest import CaptureServer
from tests.contract.oracle import contract_errors, golden, strict_json


@pytest.mark.parametrize("name", sorted(GOLDEN_CALLS))
async def test_delivered_transcript_is_the_golden_body(
    name: str, client: HttpBackend, capture: CaptureServer
) -> None:
    expected = golden(name)
    assert contract_errors("transcript", expected) == []  # the two oracles agree
    await client.post_transcript("sess-1", GOLDEN_CALLS[name](), deadline=10.0)
    sent = strict_json(capture.last("/sessions/sess-1/transcript").body)
    assert sent == expected


@pytest.mark.parametrize(
    ("name", "assignment"), [("session_create", "assign-3"), ("session_create_minimal", None)]
)
async def test_session_create_is_the_golden_body(
    name: str, assignment: str | None, client: HttpBackend, capture: CaptureServer
) -> None:
    body = SessionCreate(
        scenario_id="scenario-7", user_id="user-42", assignment_id=assignment, room_name="room-abc"
    )
    await client.create_session(body, room_sid="RM_1")
    assert strict_json(capture.last("/sessions").body) == golden(name)


def test_turn_packet_is_the_golden_message() -> None:
    turn = Turn(
        seq=2,
        role="user",
        text="Hi, it's Zoë — I wanted to talk.",
        started_at=datetime.fromisoformat("2026-11-22T10:00:05.000Z"),
        ended_at=datetime.fromisoformat("2026-11-22T10:00:07.125Z"),
        interrupted=False,
    )
    [packet] = turn_packets(turn, session_id="sess-9")
    assert strict_json(packet) == golden("turn_message")


def test_interim_and_end_packets_are_the_golden_messages() -> None:
    interim = InterimMessage(item_id="item-5", text="Hi, it's").to_json_bytes()
    end = EndMessage(session_id="sess-9", turn_count=3).to_json_bytes()
    assert strict_json(interim) == golden("interim_message")
    assert strict_json(end) == golden("end_message")
