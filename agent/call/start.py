"""Steps 1 and 2 of a call: validated metadata, then scenario, session (then the look-back for
its earlier turns) and room in one gather.

Rule: ids come only from `ctx.job.metadata` (room metadata and participant attributes are
client-writable). The backend calls and `ctx.connect()` overlap, so a cold start costs about the
slowest of them, not their sum; a backend that is down or refuses us surfaces as `BackendError`
so the caller can take the apology path. The look-back (`agent.call.resume`) never raises.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any

from livekit.agents import JobContext
from pydantic import ValidationError

from agent.backend import Backend, BackendError
from agent.call.earlier import Earlier
from agent.call.resume import look_back
from agent.config import Settings
from agent.journal import Journal
from agent.models import JobMetadata, Scenario, Session, SessionCreate
from agent.prompts import DEFAULT_SCENARIO_ID
from agent.tracing import in_span


class MetadataError(ValueError):
    def __init__(self, fields: list[str]) -> None:
        self.fields = fields
        super().__init__(f"invalid job metadata: {', '.join(fields)}")


class SessionMismatch(BackendError):
    """The backend's session belongs to another user or scenario than the job metadata says."""


# The documented metadata is a flat object of a few short ids. Anything far larger or deeper is
# refused before json.loads: its recursive parser raises RecursionError (not a JSONDecodeError)
# on deep input, which would escape as a crash instead of `invalid_metadata`.
MAX_METADATA_BYTES = 64 * 1024
MAX_METADATA_DEPTH = 32
# The characters that matter for nesting: brackets count only outside strings, and a string ends
# at a quote that no backslash escapes. One pass over them keeps the scan linear in the input.
_STRUCTURAL = re.compile(r'[\[\]{}"\\]')


def _nesting_depth(raw: str, limit: int) -> int:
    """The deepest bracket nesting outside JSON strings; counting stops once past `limit`."""
    depth = deepest = 0
    in_string = False
    escaped_at = -1  # the position of the character a backslash escapes
    for match in _STRUCTURAL.finditer(raw):
        position = match.start()
        if position == escaped_at:
            continue
        char = raw[position]
        if in_string:
            if char == "\\":
                escaped_at = position + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
        elif char in "]}":
            depth -= 1
    return deepest


def parse_job_metadata(raw: str, settings: Settings) -> JobMetadata:
    """Empty metadata is a local run (console, dev without a backend): the default scenario."""
    if not raw.strip():
        if settings.has_backend:
            raise MetadataError(["(empty): scenarioId and userId are required"])
        return JobMetadata(scenario_id=DEFAULT_SCENARIO_ID, user_id="local")
    # len() first: a code point is at least one byte, so a huge string is refused unencoded
    if len(raw) > MAX_METADATA_BYTES or len(raw.encode("utf-8")) > MAX_METADATA_BYTES:
        raise MetadataError([f"(too large: over {MAX_METADATA_BYTES} bytes)"])
    if _nesting_depth(raw, MAX_METADATA_DEPTH) > MAX_METADATA_DEPTH:
        raise MetadataError([f"(nested deeper than {MAX_METADATA_DEPTH} levels)"])
    try:
        data: Any = json.loads(raw)
    except json.JSONDecodeError as error:
        raise MetadataError([f"(not JSON: {error.msg} at position {error.pos})"]) from None
    try:
        return JobMetadata.model_validate(data)
    except ValidationError as error:
        fields = [
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in error.errors()
        ]
        raise MetadataError(fields) from None


async def open_session(
    backend: Backend, metadata: JobMetadata, *, room_sid: str, room_name: str
) -> Session:
    """Fetch the session the platform created, or create one under `create:{roomSid}` (one
    session per room: a job re-dispatched into the room finds the same session and attempt);
    either way it must belong to the metadata's user and scenario."""
    if metadata.session_id:
        session = await backend.get_session(metadata.session_id)
    else:
        body = SessionCreate(
            scenario_id=metadata.scenario_id,
            user_id=metadata.user_id,
            assignment_id=metadata.assignment_id,
            room_name=room_name,
        )
        session = await backend.create_session(body, room_sid=room_sid)
    mismatched = [
        name
        for name, ours, theirs in (
            ("userId", metadata.user_id, session.user_id),
            ("scenarioId", metadata.scenario_id, session.scenario_id),
        )
        if ours != theirs
    ]
    if mismatched:
        raise SessionMismatch(f"session {session.id} does not match the metadata's {mismatched}")
    return session


@dataclass(frozen=True, slots=True)
class Started:
    """What the parallel step found: the scenario, the session, and the attempt's earlier
    turns (None: a new call)."""

    scenario: Scenario
    session: Session
    earlier: Earlier | None


def room_sid(ctx: JobContext) -> str:
    """The room's server id, the session's create key. A job without one (a local `console`
    run) keys by its job id, as before: still one session per job."""
    return str(getattr(ctx.job.room, "sid", "") or "") or ctx.job.id


async def _session_then_look_back(
    backend: Backend, metadata: JobMetadata, journal: Journal | None, ctx: JobContext
) -> tuple[Session, Earlier | None]:
    # chained in the session's branch: the look-back needs the session id and attempt, and
    # overlaps the scenario fetch and the connection like the session itself
    session = await in_span(
        "voice_agent.session_open",
        open_session(backend, metadata, room_sid=room_sid(ctx), room_name=ctx.job.room.name),
    )
    earlier = await in_span("voice_agent.look_back", look_back(backend, journal, session))
    return session, earlier


async def start_in_parallel(
    ctx: JobContext, backend: Backend, metadata: JobMetadata, *, journal: Journal | None
) -> Started:
    """Scenario, session (then the look-back for its earlier turns: `agent.call.resume`) and
    room connection at once. The connection is awaited even when the backend fails, because
    the apology needs the room; a connection failure is raised as is."""
    scenario_result, session_result, connect_result = await asyncio.gather(
        in_span("voice_agent.scenario_fetch", backend.get_scenario(metadata.scenario_id)),
        _session_then_look_back(backend, metadata, journal, ctx),
        ctx.connect(),
        return_exceptions=True,
    )
    for result in (connect_result, scenario_result, session_result):
        if isinstance(result, BaseException):
            raise result
    assert isinstance(scenario_result, Scenario) and isinstance(session_result, tuple)
    session, earlier = session_result
    return Started(scenario_result, session, earlier)


async def fetch_and_connect(
    ctx: JobContext, backend: Backend, metadata: JobMetadata
) -> tuple[Scenario, Session]:
    """`start_in_parallel` without the journal: scenario and session (the look-back still asks
    the backend) for callers that start a new call only."""
    started = await start_in_parallel(ctx, backend, metadata, journal=None)
    return started.scenario, started.session
