"""A journaled call as the entrypoint builds one, for session-level tests: the default scenario,
session S1 of user u1 on the backend given, its journal row opened (and lease task started) by
the worker's own `open_journal`."""

from __future__ import annotations

from agent.backend import Backend
from agent.call import Call
from agent.call.session import open_journal
from agent.journal import Journal
from agent.models import JobMetadata, Session
from agent.prompts import load_scenario
from tests.support.fakes import CaptureRoom

SESSION = Session(id="S1", user_id="u1", scenario_id="default", attempt_number=1)


async def open_default_call(
    backend: Backend,
    journal: Journal,
    room: CaptureRoom,
    *,
    job_id: str = "AJ_1",
    record: bool = False,
) -> Call:
    call = Call(
        job_id,
        "room-1",
        JobMetadata(scenario_id="default", user_id="u1", session_id=SESSION.id, record=record),
        backend=backend,
        journal=journal,
        room_connected=room.isconnected,
        scenario=load_scenario("default"),
        session=SESSION,
    )
    await open_journal(call)
    return call
