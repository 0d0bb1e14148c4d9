"""The job start: metadata rules, and scenario + session + room connection in one gather,
against both backend implementations."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from livekit.agents import JobContext
from pydantic import SecretStr

from agent.backend import BackendAuthError, BackendUnavailable, HttpBackend, LocalBackend
from agent.call.start import (
    MetadataError,
    SessionMismatch,
    fetch_and_connect,
    parse_job_metadata,
)
from agent.models import JobMetadata, Session
from tests.support.backend_stub import BackendStub, Fault
from tests.support.fake_job import FakeJob, FakeJobContext
from tests.support.settings import make_settings

KEY = "internal-service-key-for-tests"
D = 0.2


def as_ctx(fake: FakeJobContext) -> JobContext:
    return cast(JobContext, fake)


@pytest.fixture
async def stub() -> AsyncIterator[BackendStub]:
    async with BackendStub(key=KEY) as running:
        yield running


@pytest.fixture
async def client(stub: BackendStub) -> AsyncIterator[HttpBackend]:
    backend = HttpBackend(stub.url, SecretStr(KEY), timeout=2.0, default_deadline=2.0)
    yield backend
    await backend.aclose()


# --------------------------------------------------------------------------- metadata


def test_metadata_is_parsed_from_camel_case_and_unknown_keys_ignored() -> None:
    raw = json.dumps({"scenarioId": "s1", "userId": "u1", "sessionId": "x", "extra": 1})
    parsed = parse_job_metadata(raw, make_settings())
    assert (parsed.scenario_id, parsed.user_id, parsed.session_id) == ("s1", "u1", "x")


def test_empty_metadata_means_the_default_scenario_without_a_backend() -> None:
    parsed = parse_job_metadata("", make_settings())
    assert parsed.scenario_id == "default" and parsed.user_id == "local"


def test_empty_metadata_is_refused_with_a_backend() -> None:
    with_backend = make_settings(BACKEND_URL="https://b.example.com", INTERNAL_SERVICE_KEY="k" * 16)
    with pytest.raises(MetadataError):
        parse_job_metadata("  ", with_backend)


def test_invalid_metadata_names_the_field_paths() -> None:
    with pytest.raises(MetadataError) as caught:
        parse_job_metadata(json.dumps({"scenarioId": "", "userId": 5}), make_settings())
    joined = " ".join(caught.value.fields)
    assert "scenarioId" in joined and "userId" in joined


def test_metadata_that_is_not_json_is_refused() -> None:
    with pytest.raises(MetadataError, match="not JSON"):
        parse_job_metadata("{oops", make_settings())


def test_overlong_ids_are_refused() -> None:
    with pytest.raises(MetadataError):
        parse_job_metadata(json.dumps({"scenarioId": "s" * 500, "userId": "u"}), make_settings())


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 100_000,  # not even closed: the parser recursed before it noticed
        '{"a":' * 10_000 + "1" + "}" * 10_000,  # valid JSON, 10k deep, under the size cap
        "[" * 1_000 + "]" * 1_000,
        '{"scenarioId": "s", "userId": "u", "extra": ' + "[" * 200 + "]" * 200 + "}",
    ],
    ids=["open-brackets", "deep-objects", "deep-arrays", "deep-unknown-key"],
)
def test_deeply_nested_metadata_is_invalid_metadata_not_a_recursion_error(raw: str) -> None:
    with pytest.raises(MetadataError):
        parse_job_metadata(raw, make_settings())


def test_oversized_metadata_is_invalid_metadata() -> None:
    # LiveKit's dispatch metadata is small; 64 KiB is far above any real one (issue 10, sec. 6)
    raw = json.dumps({"scenarioId": "s1", "userId": "u1", "extra": "x" * (64 * 1024)})
    with pytest.raises(MetadataError):
        parse_job_metadata(raw, make_settings())


def test_brackets_inside_strings_and_modest_nesting_are_fine() -> None:
    # the depth check counts structure, not characters inside strings (escaped quotes included)
    raw = json.dumps(
        {
            "scenarioId": "[" * 100 + '"\\' + "{" * 20,
            "userId": "u1",
            "extra": {"a": {"b": [[{"c": "]]]]]"}]]}},
        }
    )
    parsed = parse_job_metadata(raw, make_settings())
    assert parsed.scenario_id.startswith("[" * 100) and parsed.user_id == "u1"


# --------------------------------------------------------------------------- the gather


async def test_scenario_session_and_connect_overlap_in_time(
    stub: BackendStub, client: HttpBackend
) -> None:
    stub.queue("get_scenario", Fault(delay=D))
    stub.queue("create_session", Fault(delay=D))
    ctx = FakeJobContext(connect_delay=D)
    started = time.monotonic()
    scenario, session = await fetch_and_connect(
        as_ctx(ctx), client, JobMetadata(scenario_id="default", user_id="u1")
    )
    elapsed = time.monotonic() - started
    assert scenario.id == "default" and session.attempt_number == 1
    # sequential would take 3 * D; overlapping takes about D
    assert elapsed < 2 * D, f"start-up calls did not overlap: {elapsed:.3f}s"
    assert ctx.connected_at is not None


async def test_session_is_created_under_the_job_id_key(
    stub: BackendStub, client: HttpBackend
) -> None:
    ctx = FakeJobContext(job=FakeJob(id="AJ_key1"))
    await fetch_and_connect(as_ctx(ctx), client, JobMetadata(scenario_id="default", user_id="u1"))
    [create] = stub.requests_for("create_session")
    assert create.headers["Idempotency-Key"] == "create:AJ_key1"
    assert create.json is not None and create.json["roomName"] == "room-1"


async def test_an_existing_session_is_fetched_and_checked(
    stub: BackendStub, client: HttpBackend
) -> None:
    stub.add_session(Session(id="S1", user_id="u1", scenario_id="default", attempt_number=2))
    meta = JobMetadata(scenario_id="default", user_id="u1", session_id="S1")
    _, session = await fetch_and_connect(as_ctx(FakeJobContext()), client, meta)
    assert session.attempt_number == 2
    assert stub.requests_for("create_session") == []


async def test_a_session_of_another_user_is_refused(stub: BackendStub, client: HttpBackend) -> None:
    stub.add_session(
        Session(id="S2", user_id="someone-else", scenario_id="default", attempt_number=1)
    )
    meta = JobMetadata(scenario_id="default", user_id="u1", session_id="S2")
    with pytest.raises(SessionMismatch, match="userId"):
        await fetch_and_connect(as_ctx(FakeJobContext()), client, meta)


async def test_backend_down_surfaces_as_unavailable_after_the_room_connected(
    stub: BackendStub, client: HttpBackend
) -> None:
    await stub.stop()
    ctx = FakeJobContext()
    with pytest.raises(BackendUnavailable):
        await fetch_and_connect(
            as_ctx(ctx), client, JobMetadata(scenario_id="default", user_id="u1")
        )
    assert ctx.connected_at is not None  # the apology needs the room


async def test_a_forbidden_assignment_surfaces_as_an_auth_error(
    stub: BackendStub, client: HttpBackend
) -> None:
    stub.queue("create_session", Fault(status=403, json={"error": "not your assignment"}))
    meta = JobMetadata(scenario_id="default", user_id="u1", assignment_id="A1")
    with pytest.raises(BackendAuthError):
        await fetch_and_connect(as_ctx(FakeJobContext()), client, meta)


async def test_a_connection_failure_wins_over_backend_results(client: HttpBackend) -> None:
    ctx = FakeJobContext(connect_error=ConnectionError("no room"))
    with pytest.raises(ConnectionError):
        await fetch_and_connect(
            as_ctx(ctx), client, JobMetadata(scenario_id="default", user_id="u1")
        )


async def test_the_local_backend_serves_the_same_start(tmp_path: Path) -> None:
    local = LocalBackend(tmp_path)
    meta = JobMetadata(scenario_id="default", user_id="local")
    first: Any = await fetch_and_connect(as_ctx(FakeJobContext()), local, meta)
    second: Any = await fetch_and_connect(
        as_ctx(FakeJobContext(job=FakeJob(id="AJ_test2"))), local, meta
    )
    assert first[0].id == "default"
    assert (first[1].attempt_number, second[1].attempt_number) == (1, 2)
