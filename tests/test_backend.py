"""HttpBackend against a real aiohttp stub on 127.0.0.1: statuses, faults, validation, the key.

Retries run on a fake clock: the injected `sleep` records the delay and moves the clock the
client measures its deadline on, so backoff never costs real time. Only timeouts cost real time,
and they are set to fractions of a second.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from agent.backend import (
    SESSION_PATH,
    TRANSCRIPT_PATH,
    BackendAuthError,
    BackendMisconfigured,
    BackendRejected,
    BackendResponseInvalid,
    BackendUnavailable,
    HttpBackend,
    LocalBackend,
    make_backend,
    strip_echoes,
    transcript_idempotency_key,
)
from agent.config import Settings
from agent.models import Session, SessionCreate, TranscriptPayload, Turn
from tests.support.backend_stub import BackendStub, Fault

KEY = "internal-service-key-0123456789abcdef"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class FakeTime:
    """A monotonic clock that injected sleeps move forward instead of waiting."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.offset += seconds
        await asyncio.sleep(0)


def transcript(
    turns: int = 2, *, complete: bool = True, attempt: int = 1, text: str = "hello"
) -> TranscriptPayload:
    return TranscriptPayload(
        attempt_number=attempt,
        complete=complete,
        ended_reason="caller_left" if complete else "crashed",
        started_at=T0,
        ended_at=T0 + timedelta(minutes=1),
        turn_count=turns,
        turns=[
            Turn(
                seq=seq,
                role="user" if seq % 2 else "assistant",
                text=f"{text} {seq}",
                started_at=T0,
                ended_at=T0,
            )
            for seq in range(1, turns + 1)
        ],
    )


NEW_SESSION = SessionCreate(scenario_id="default", user_id="u1", room_name="room-1")


@pytest.fixture
async def stub() -> AsyncIterator[BackendStub]:
    async with BackendStub(key=KEY) as running:
        running.add_session(Session(id="s1", user_id="u1", scenario_id="default", attempt_number=1))
        yield running


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


MakeClient = Callable[..., HttpBackend]


@pytest.fixture
async def make_client(stub: BackendStub, fake_time: FakeTime) -> AsyncIterator[MakeClient]:
    """HttpBackend on the fake clock; random=1 makes the jittered backoff its ceiling."""
    made: list[HttpBackend] = []

    def make(**overrides: Any) -> HttpBackend:
        options: dict[str, Any] = {
            "timeout": 1.0,
            "default_deadline": 5.0,
            "sleep": fake_time.sleep,
            "random": lambda: 1.0,
            "clock": fake_time.monotonic,
        }
        options.update(overrides)
        key = options.pop("key", KEY)
        client = HttpBackend(stub.url, SecretStr(key), **options)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


@pytest.fixture
def backend(make_client: MakeClient) -> HttpBackend:
    return make_client()


# --------------------------------------------------------------------------- success paths


async def test_get_scenario_returns_the_validated_scenario(backend: HttpBackend) -> None:
    scenario = await backend.get_scenario("default")
    assert scenario.id == "default" and scenario.title and scenario.prompt


async def test_create_session_posts_the_body_under_create_room_sid_key(
    backend: HttpBackend, stub: BackendStub
) -> None:
    session = await backend.create_session(NEW_SESSION, room_sid="RM_7")
    (request,) = stub.requests_for("create_session")
    assert request.header("Idempotency-Key") == "create:RM_7"
    assert request.json == {"scenarioId": "default", "userId": "u1", "roomName": "room-1"}
    # The fixture's session s1 is this user's first attempt at this scenario.
    assert (session.user_id, session.scenario_id, session.attempt_number) == ("u1", "default", 2)


async def test_create_session_retry_reuses_the_create_key_and_makes_one_session(
    backend: HttpBackend, stub: BackendStub
) -> None:
    stub.queue("create_session", Fault(status=503))
    session = await backend.create_session(NEW_SESSION, room_sid="RM_8")
    keys = [r.header("Idempotency-Key") for r in stub.requests_for("create_session")]
    assert keys == ["create:RM_8", "create:RM_8"]
    assert [s.id for s in stub.sessions.values() if s.user_id == "u1"] == ["s1", session.id]


async def test_a_second_job_in_the_same_room_finds_the_same_session(
    backend: HttpBackend, stub: BackendStub
) -> None:
    first = await backend.create_session(NEW_SESSION, room_sid="RM_9")
    again = await backend.create_session(NEW_SESSION, room_sid="RM_9")  # the re-dispatched job
    other = await backend.create_session(NEW_SESSION, room_sid="RM_10")
    assert again == first and first.attempt_number == 2
    assert (other.attempt_number, other.id != first.id) == (3, True)


# --------------------------------------------------------------------------- held transcripts


async def test_get_transcript_returns_the_best_held_one(
    backend: HttpBackend, stub: BackendStub
) -> None:
    await backend.post_transcript("s1", transcript(2, complete=False), deadline=5)
    await backend.post_transcript("s1", transcript(3, complete=False), deadline=5)
    held = await backend.get_transcript("s1", 1)
    assert held is not None
    assert (held.source, held.complete, held.ended_reason, held.turn_count) == (
        "agent",
        False,
        "crashed",
        3,
    )
    assert [t.text for t in held.turns] == ["hello 1", "hello 2", "hello 3"]
    (request,) = stub.requests_for("get_transcript")
    assert request.path == "/api/internal/sessions/s1/transcript?attemptNumber=1"


async def test_get_transcript_quotes_the_session_id(
    backend: HttpBackend, stub: BackendStub
) -> None:
    assert await backend.get_transcript("a/b c?", 2) is None
    (request,) = stub.requests_for("get_transcript")
    assert request.path == "/api/internal/sessions/a%2Fb%20c%3F/transcript?attemptNumber=2"


async def test_get_transcript_404_is_none_without_an_error_line(
    backend: HttpBackend, stub: BackendStub
) -> None:
    with capture_logs() as logs:
        assert await backend.get_transcript("s1", 1) is None
    assert [e for e in logs if e["log_level"] == "error"] == []
    assert len(stub.requests_for("get_transcript")) == 1


async def test_get_transcript_retries_once_then_answers(
    backend: HttpBackend, stub: BackendStub
) -> None:
    stub.queue("get_transcript", Fault(status=503))
    assert await backend.get_transcript("s1", 1) is None
    assert len(stub.requests_for("get_transcript")) == 2


async def test_get_transcript_gives_up_after_two_attempts(
    make_client: MakeClient, stub: BackendStub
) -> None:
    # It is on the call's start path: a long default deadline must not make it retry on.
    client = make_client(default_deadline=60.0)
    stub.queue("get_transcript", *[Fault(status=503)] * 5)
    with pytest.raises(BackendUnavailable):
        await client.get_transcript("s1", 1)
    assert len(stub.requests_for("get_transcript")) == 2


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault(status=401), BackendAuthError),
        (Fault(status=405), BackendMisconfigured),
        (Fault(status=302, headers={"Location": "https://login.example/"}), BackendMisconfigured),
        (Fault(status=400, json={"error": "bad attemptNumber"}), BackendRejected),
        (Fault(json={"attemptNumber": 1}), BackendResponseInvalid),
    ],
)
async def test_get_transcript_follows_the_status_rules(
    fault: Fault, error: type[Exception], backend: HttpBackend, stub: BackendStub
) -> None:
    stub.queue("get_transcript", fault)
    with pytest.raises(error):
        await backend.get_transcript("s1", 1)
    assert len(stub.requests_for("get_transcript")) == 1


async def test_get_session_sends_the_id_as_one_quoted_path_segment(
    backend: HttpBackend, stub: BackendStub
) -> None:
    stub.add_session(Session(id="a/b c?", user_id="u1", scenario_id="x", attempt_number=1))
    session = await backend.get_session("a/b c?")
    assert session.id == "a/b c?"
    assert stub.requests_for("get_session")[0].path == "/api/internal/sessions/a%2Fb%20c%3F"


async def test_post_transcript_2xx_is_delivered(backend: HttpBackend, stub: BackendStub) -> None:
    receipt = await backend.post_transcript("s1", transcript(), deadline=5)
    assert (receipt.status, receipt.attempts) == ("delivered", 1)
    best = stub.best_transcript("s1")
    assert best is not None and best.payload == transcript()


async def test_post_transcript_409_is_already_delivered(
    backend: HttpBackend, stub: BackendStub
) -> None:
    await backend.post_transcript("s1", transcript(4), deadline=5)
    receipt = await backend.post_transcript("s1", transcript(3), deadline=5)
    assert receipt.status == "already_delivered"
    assert stub.requests_for("post_transcript")[-1].json is not None


async def test_reposting_the_same_transcript_replays_delivered(
    backend: HttpBackend, stub: BackendStub
) -> None:
    # The answer to the first POST was "lost": the same key gets the stored answer again.
    await backend.post_transcript("s1", transcript(), deadline=5)
    receipt = await backend.post_transcript("s1", transcript(), deadline=5)
    assert receipt.status == "delivered"
    assert len(stub.transcripts["s1"]) == 1


# --------------------------------------------------------------------------- final failures


async def test_wrong_key_401_raises_auth_error_without_retry(
    make_client: MakeClient, stub: BackendStub
) -> None:
    client = make_client(key="wrong-key-wrong-key")
    with pytest.raises(BackendAuthError) as caught:
        await client.get_scenario("default")
    assert caught.value.status == 401
    assert "wrong-key-wrong-key" not in str(caught.value)
    assert len(stub.requests) == 1


async def test_403_raises_auth_error_with_the_reason_without_retry(
    backend: HttpBackend, stub: BackendStub
) -> None:
    stub.assignments["as-1"] = "someone-else"
    body = SessionCreate(scenario_id="default", user_id="u1", assignment_id="as-1", room_name="r")
    with pytest.raises(BackendAuthError) as caught:
        await backend.create_session(body, room_sid="RM_1")
    assert caught.value.status == 403
    assert "does not own this assignment" in caught.value.reason
    assert len(stub.requests) == 1


async def test_404_is_a_configuration_error_keeping_the_server_reason(
    backend: HttpBackend, stub: BackendStub
) -> None:
    with pytest.raises(BackendMisconfigured) as caught:
        await backend.get_scenario("no-such-scenario")
    assert caught.value.status == 404
    assert caught.value.cause == "BACKEND_URL or route wrong"
    assert "no scenario 'no-such-scenario'" in caught.value.reason
    assert len(stub.requests) == 1


async def test_422_is_rejected_keeping_the_server_reason(
    backend: HttpBackend, stub: BackendStub
) -> None:
    with pytest.raises(BackendRejected) as caught:
        await backend.post_transcript("s1", transcript(attempt=2), deadline=5)
    assert caught.value.status == 422
    assert "attemptNumber" in caught.value.reason
    assert len(stub.requests) == 1


async def test_a_long_server_reason_is_truncated(backend: HttpBackend, stub: BackendStub) -> None:
    stub.queue("get_scenario", Fault(status=400, text="x" * 10_000))
    with pytest.raises(BackendRejected) as caught:
        await backend.get_scenario("default")
    assert 100 < len(caught.value.reason) <= 500


async def test_a_redirect_is_not_followed_and_is_a_configuration_error(
    backend: HttpBackend, stub: BackendStub
) -> None:
    # Following it would send the key wherever the Location points.
    stub.queue("get_scenario", Fault(status=307, headers={"Location": "http://127.0.0.1:9/x"}))
    with pytest.raises(BackendMisconfigured) as caught:
        await backend.get_scenario("default")
    assert caught.value.status == 307
    assert caught.value.cause == "redirect to 127.0.0.1 (not followed)"
    assert len(stub.requests) == 1


# --------------------------------------------------------------------------- transient failures


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
async def test_transient_status_is_retried_then_succeeds(
    status: int, backend: HttpBackend, stub: BackendStub, fake_time: FakeTime
) -> None:
    stub.queue("post_transcript", Fault(status=status))
    receipt = await backend.post_transcript("s1", transcript(), deadline=5)
    assert (receipt.status, receipt.attempts) == ("delivered", 2)
    assert fake_time.sleeps == [0.25]


async def test_429_retry_after_seconds_is_honoured(
    backend: HttpBackend, stub: BackendStub, fake_time: FakeTime
) -> None:
    stub.queue("get_scenario", Fault(status=429, headers={"Retry-After": "2"}))
    await backend.get_scenario("default")
    assert fake_time.sleeps == [2.0]


async def test_retry_after_http_date_is_honoured(
    backend: HttpBackend, stub: BackendStub, fake_time: FakeTime
) -> None:
    when = email.utils.format_datetime(datetime.now(tz=UTC) + timedelta(seconds=3), usegmt=True)
    stub.queue("get_scenario", Fault(status=503, headers={"Retry-After": when}))
    await backend.get_scenario("default")
    (slept,) = fake_time.sleeps
    assert 1.0 < slept <= 3.0  # the date has whole seconds


async def test_retry_after_beyond_the_deadline_gives_up_at_once(
    backend: HttpBackend, stub: BackendStub, fake_time: FakeTime
) -> None:
    stub.queue("post_transcript", Fault(status=503, headers={"Retry-After": "60"}))
    with pytest.raises(BackendUnavailable, match="Retry-After 60 s exceeds the deadline"):
        await backend.post_transcript("s1", transcript(), deadline=5)
    assert fake_time.sleeps == []
    assert len(stub.requests) == 1


async def test_transient_failures_until_the_deadline_raise_unavailable(
    backend: HttpBackend, stub: BackendStub, fake_time: FakeTime
) -> None:
    stub.queue("post_transcript", *[Fault(status=503)] * 20)
    with pytest.raises(BackendUnavailable, match=r"after 4 attempt\(s\) within 3 s"):
        await backend.post_transcript("s1", transcript(), deadline=3)
    # 0.25 + 0.5 + 1 = 1.75 s spent; the next wait (2 s) would end past the deadline.
    assert fake_time.sleeps == [0.25, 0.5, 1.0]
    assert len(stub.requests) == 4


async def test_get_calls_are_bounded_by_the_default_deadline(
    make_client: MakeClient, stub: BackendStub, fake_time: FakeTime
) -> None:
    stub.queue("get_session", *[Fault(status=500)] * 20)
    with pytest.raises(BackendUnavailable):
        await make_client(default_deadline=1).get_session("s1")
    assert fake_time.sleeps == [0.25, 0.5]


async def test_backoff_doubles_up_to_the_cap_scaled_by_jitter(
    make_client: MakeClient, stub: BackendStub, fake_time: FakeTime
) -> None:
    client = make_client(random=lambda: 0.5, backoff_base=0.2, backoff_cap=1.0, default_deadline=60)
    stub.queue("get_scenario", *[Fault(status=502)] * 6)
    await client.get_scenario("default")
    assert fake_time.sleeps == [0.1, 0.2, 0.4, 0.5, 0.5, 0.5]


async def test_a_response_slower_than_the_timeout_is_retried(
    make_client: MakeClient, stub: BackendStub
) -> None:
    client = make_client(timeout=0.2)
    stub.queue("post_transcript", Fault(delay=5))
    receipt = await client.post_transcript("s1", transcript(), deadline=5)
    assert (receipt.status, receipt.attempts) == ("delivered", 2)


async def test_a_stalled_backend_raises_unavailable_at_the_deadline(
    make_client: MakeClient, stub: BackendStub
) -> None:
    client = make_client(timeout=0.2)
    stub.queue("post_transcript", *[Fault(delay=5)] * 10)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="timeout"):
        await client.post_transcript("s1", transcript(), deadline=0.5)
    assert time.monotonic() - started < 1.0


async def test_connection_refused_raises_unavailable(
    backend: HttpBackend, stub: BackendStub
) -> None:
    await stub.stop()
    with pytest.raises(BackendUnavailable, match="ConnectError"):
        await backend.post_transcript("s1", transcript(), deadline=2)


async def test_a_backend_back_within_the_deadline_gets_the_transcript(
    make_client: MakeClient, stub: BackendStub, fake_time: FakeTime
) -> None:
    async def sleep_then_restart(seconds: float) -> None:
        await fake_time.sleep(seconds)
        await stub.start()  # same port as before

    client = make_client(sleep=sleep_then_restart)
    await client.get_scenario("default")  # a pooled keep-alive connection exists now
    await stub.stop()
    receipt = await client.post_transcript("s1", transcript(), deadline=5)
    assert (receipt.status, receipt.attempts) == ("delivered", 2)


# --------------------------------------------------------------------------- invalid responses


async def test_invalid_json_raises_response_invalid(
    backend: HttpBackend, stub: BackendStub
) -> None:
    stub.queue("get_scenario", Fault(text='{"id": "default", "title": '))
    with pytest.raises(BackendResponseInvalid, match="not JSON"):
        await backend.get_scenario("default")


async def test_a_body_not_matching_its_model_names_the_field(
    backend: HttpBackend, stub: BackendStub
) -> None:
    bad = {"id": "s1", "userId": "u1", "scenarioId": "default", "attemptNumber": "first"}
    stub.queue("get_session", Fault(json=bad))
    with pytest.raises(BackendResponseInvalid) as caught:
        await backend.get_session("s1")
    assert "attemptNumber: Input should be a valid integer" in str(caught.value)
    assert "first" not in str(caught.value)  # field paths, not the values


async def test_a_missing_field_is_named(backend: HttpBackend, stub: BackendStub) -> None:
    stub.queue("get_scenario", Fault(json={"id": "default", "prompt": "p"}))
    with pytest.raises(BackendResponseInvalid, match="title: Field required"):
        await backend.get_scenario("default")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_oversized_body_raises_response_invalid(
    chunked: bool, backend: HttpBackend, stub: BackendStub
) -> None:
    stub.queue("get_scenario", Fault(oversize=2 * 1024 * 1024, chunked=chunked))
    with pytest.raises(BackendResponseInvalid, match="exceeds 1048576 bytes"):
        await backend.get_scenario("default")


# --------------------------------------------------------------------------- acknowledgements

SIGN_IN_PAGE = "<!doctype html><html><body><form>Sign in</form></body></html>"

# 2xx answers that do not acknowledge a transcript (DESIGN.md: only a JSON object body or 204 do).
NOT_ACKNOWLEDGEMENTS = {
    "html_200": Fault(status=200, text=SIGN_IN_PAGE, content_type="text/html"),
    "empty_200": Fault(status=200, text=""),
    "json_array_200": Fault(status=200, json=["stored"]),
    "json_string_200": Fault(status=200, json="ok"),
    "json_number_201": Fault(status=201, json=1),
    "json_null_200": Fault(status=200, text="null"),
    "invalid_json_200": Fault(status=200, text='{"id": '),
}


@pytest.mark.parametrize("fault", NOT_ACKNOWLEDGEMENTS.values(), ids=NOT_ACKNOWLEDGEMENTS.keys())
async def test_a_2xx_without_acknowledgement_is_retried_like_a_transient_failure(
    fault: Fault, backend: HttpBackend, stub: BackendStub, fake_time: FakeTime
) -> None:
    stub.queue("post_transcript", fault)
    receipt = await backend.post_transcript("s1", transcript(), deadline=5)
    assert (receipt.status, receipt.attempts) == ("delivered", 2)
    assert fake_time.sleeps == [0.25]  # backoff (with jitter) as for a 503
    assert len(stub.transcripts["s1"]) == 1


async def test_html_200_until_the_deadline_raises_unavailable_naming_the_problem(
    backend: HttpBackend, stub: BackendStub
) -> None:
    stub.queue("post_transcript", *[NOT_ACKNOWLEDGEMENTS["html_200"]] * 20)
    with capture_logs() as logs, pytest.raises(BackendUnavailable) as caught:
        await backend.post_transcript("s1", transcript(), deadline=3)
    assert "200 is not an acknowledgement: body is not JSON (text/html)" in str(caught.value)
    assert "Sign in" not in str(caught.value)
    assert len(stub.requests) == 4
    retries = [e for e in logs if e["event"] == "backend.retrying"]
    assert retries[0]["status"] == 200 and "not an acknowledgement" in retries[0]["error"]
    assert stub.transcripts["s1"] == []


@pytest.mark.parametrize(
    "fault",
    [Fault(status=204, text=""), Fault(status=200, json={"ok": True}), Fault(status=202, json={})],
    ids=["204", "json_object_200", "empty_object_202"],
)
async def test_a_json_object_or_204_acknowledges_the_transcript(
    fault: Fault, backend: HttpBackend, stub: BackendStub
) -> None:
    stub.queue("post_transcript", fault)
    receipt = await backend.post_transcript("s1", transcript(), deadline=5)
    assert (receipt.status, receipt.attempts) == ("delivered", 1)


async def test_409_is_done_whatever_its_body(backend: HttpBackend, stub: BackendStub) -> None:
    stub.queue("post_transcript", Fault(status=409, text="Conflict", content_type="text/plain"))
    receipt = await backend.post_transcript("s1", transcript(), deadline=5)
    assert (receipt.status, receipt.attempts) == ("already_delivered", 1)


async def test_html_200_to_get_scenario_is_an_error_naming_the_problem(
    backend: HttpBackend, stub: BackendStub
) -> None:
    stub.queue("get_scenario", NOT_ACKNOWLEDGEMENTS["html_200"])
    with pytest.raises(BackendResponseInvalid, match="Scenario: response is not JSON"):
        await backend.get_scenario("default")


async def test_deeply_nested_json_is_an_error_not_a_crash(
    backend: HttpBackend, stub: BackendStub
) -> None:
    stub.queue("get_session", Fault(text="[" * 200_000))
    with pytest.raises(BackendResponseInvalid, match="Session: response is not JSON"):
        await backend.get_session("s1")


# --------------------------------------------------------------------------- configuration errors

LOGIN_REDIRECT = "https://login.example.com/sso?return=/api&token=SECRET-TOKEN"


@pytest.mark.parametrize(
    ("fault", "status", "cause"),
    [
        (Fault(status=403, json={"error": "forbidden"}), 403, "wrong INTERNAL_SERVICE_KEY"),
        (Fault(status=404, text="<h1>Not Found</h1>", content_type="text/html"), 404, "route"),
        (Fault(status=405, text=""), 405, "BACKEND_URL or route wrong"),
        (Fault(status=301, headers={"Location": LOGIN_REDIRECT}), 301, "login.example.com"),
        (Fault(status=302, headers={"Location": LOGIN_REDIRECT}), 302, "login.example.com"),
        (Fault(status=307, headers={"Location": "/elsewhere?x=1"}), 307, "redirect to 127.0.0.1"),
        (Fault(status=308, headers={"Location": LOGIN_REDIRECT}), 308, "login.example.com"),
        (Fault(status=303), 303, "redirect to nowhere"),
    ],
    ids=["403", "404", "405", "301", "302", "307_relative", "308", "303_no_location"],
)
async def test_a_configuration_error_is_not_retried_and_logged_once_naming_the_cause(
    fault: Fault, status: int, cause: str, backend: HttpBackend, stub: BackendStub
) -> None:
    stub.queue("post_transcript", fault)
    with capture_logs() as logs, pytest.raises(BackendMisconfigured) as caught:
        await backend.post_transcript("s1", transcript(), deadline=5)
    assert not isinstance(caught.value, BackendRejected)
    assert caught.value.status == status and cause in caught.value.cause
    assert len(stub.requests) == 1
    (loud,) = [e for e in logs if e["log_level"] == "error"]
    assert loud["status"] == status and cause in loud["cause"]
    assert "SECRET-TOKEN" not in repr(logs) + str(caught.value)


async def test_a_wrong_key_is_named_as_the_cause(
    make_client: MakeClient, stub: BackendStub
) -> None:
    client = make_client(key="wrong-key-wrong-key")
    with capture_logs() as logs, pytest.raises(BackendAuthError) as caught:
        await client.post_transcript("s1", transcript(), deadline=5)
    assert isinstance(caught.value, BackendMisconfigured)
    assert caught.value.cause == "wrong INTERNAL_SERVICE_KEY"
    (loud,) = [e for e in logs if e["log_level"] == "error"]
    assert loud["cause"] == "wrong INTERNAL_SERVICE_KEY" and loud["failure"] == "misconfigured"


# --------------------------------------------------------------------------- rejections


@pytest.mark.parametrize("status", [400, 413, 422])
async def test_a_rejection_reason_never_quotes_the_transcript(
    status: int, backend: HttpBackend, stub: BackendStub
) -> None:
    payload = transcript(3, text="my card number is 4111 1111")
    refused = {"message": "turns.1.text: too long", "input": "number is 4111 1111 2"}
    stub.queue("post_transcript", Fault(status=status, json=refused))
    with capture_logs() as logs, pytest.raises(BackendRejected) as caught:
        await backend.post_transcript("s1", payload, deadline=5)
    assert caught.value.status == status
    assert caught.value.reason == (
        '{"message": "turns.1.text: too long", "input": "[transcript text]"}'
    )
    assert "4111" not in repr(logs) + str(caught.value)
    assert len(stub.requests) == 1


def test_strip_echoes_replaces_runs_of_eight_characters_found_in_a_turn() -> None:
    texts = ["I live at 12 Baker Street, London", "ok"]
    assert strip_echoes("bad input 'at 12 Baker Street' here", texts) == (
        "bad input '[transcript text]' here"
    )
    # seven characters in common ("Street," is not in the reason) stay: too short to tell
    assert strip_echoes("field Street! invalid", texts) == "field Street! invalid"
    # short texts under four characters ("ok") are not looked for
    assert strip_echoes("ok: false", texts) == "ok: false"


def test_strip_echoes_finds_short_whole_texts_escaped_quotes_and_collapsed_spaces() -> None:
    texts = ["Paris", 'she said "no way"', "café au\n\nlait please"]
    assert strip_echoes("city Paris unknown", texts) == "city [transcript text] unknown"
    assert strip_echoes('{"input":"she said \\"no way\\""}', texts) == (
        '{"input":"[transcript text]"}'
    )
    assert strip_echoes('"caf\\u00e9 au lait"', texts) == '"[transcript text]"'
    assert strip_echoes("caf\u00e9 au lait please!", texts) == "[transcript text]!"
    assert strip_echoes("nothing to hide", []) == "nothing to hide"


# --------------------------------------------------------------------------- the key


async def test_every_request_carries_the_key(backend: HttpBackend, stub: BackendStub) -> None:
    stub.queue("post_transcript", Fault(status=503))
    await backend.get_scenario("default")
    session = await backend.create_session(NEW_SESSION, room_sid="RM_1")
    await backend.get_session(session.id)
    await backend.post_transcript("s1", transcript(), deadline=5)
    assert len(stub.requests) == 5
    assert all(r.key_ok and r.header("X-Internal-Service-Key") == KEY for r in stub.requests)


async def test_the_key_is_never_in_logs_exceptions_or_repr(
    make_client: MakeClient, stub: BackendStub
) -> None:
    errors: list[BaseException] = []
    with capture_logs() as logs:
        client = make_client()
        stub.queue("get_scenario", Fault(status=503), Fault(status=400, text=f"echo {KEY}"))
        stub.queue("get_session", Fault(json={"id": "s1"}))
        calls = [
            client.get_scenario("default"),
            client.get_session("s1"),
            client.get_scenario("missing"),
            make_client(key=KEY + "-wrong").get_scenario("default"),
        ]
        for call in calls:
            with pytest.raises(Exception) as caught:
                await call
            errors.append(caught.value)
        await stub.stop()
        with pytest.raises(BackendUnavailable) as down:
            await client.post_transcript("s1", transcript(), deadline=1)
        errors.append(down.value)
    assert {e["event"] for e in logs} >= {"backend.retrying", "backend.request_failed"}
    assert KEY not in repr(logs)
    assert not [e for e in errors if KEY in str(e) or KEY in repr(e) or KEY in repr(e.args)]
    assert "[redacted]" in str(errors[0])
    assert KEY not in repr(client)


async def test_transcript_text_is_never_logged(backend: HttpBackend, stub: BackendStub) -> None:
    stub.queue("post_transcript", Fault(status=503), Fault(status=500))
    with capture_logs() as logs:
        await backend.post_transcript("s1", transcript(text="PRIVATE-WORDS"), deadline=5)
        with pytest.raises(BackendRejected):
            await backend.post_transcript("s1", transcript(attempt=3), deadline=5)
    assert logs and "PRIVATE-WORDS" not in repr(logs)


async def test_a_retry_is_logged_with_method_path_template_status_attempt_and_delay(
    backend: HttpBackend, stub: BackendStub
) -> None:
    stub.queue("post_transcript", Fault(status=503))
    with capture_logs() as logs:
        await backend.post_transcript("s1", transcript(), deadline=5)
    (retry,) = [e for e in logs if e["event"] == "backend.retrying"]
    assert retry["method"] == "POST" and retry["path"] == TRANSCRIPT_PATH
    assert (retry["status"], retry["attempt"], retry["delay"]) == (503, 1, 0.25)


async def test_a_final_failure_is_logged_with_the_path_template(
    backend: HttpBackend, stub: BackendStub
) -> None:
    stub.queue("get_session", Fault(status=400, json={"message": "bad id"}))
    with capture_logs() as logs, pytest.raises(BackendRejected):
        await backend.get_session("nobody")
    (failed,) = [e for e in logs if e["event"] == "backend.request_failed"]
    assert (failed["path"], failed["status"], failed["failure"]) == (SESSION_PATH, 400, "rejected")
    assert failed["log_level"] == "error"


# --------------------------------------------------------------------------- idempotency keys


def test_transcript_key_is_the_sha256_of_the_documented_string() -> None:
    expected = hashlib.sha256(b"s1|1|agent|true|2").hexdigest()
    assert transcript_idempotency_key("s1", transcript(2)) == expected
    incomplete = hashlib.sha256(b"s1|1|agent|false|2").hexdigest()
    assert transcript_idempotency_key("s1", transcript(2, complete=False)) == incomplete


def test_the_same_body_gets_the_same_key() -> None:
    assert transcript_idempotency_key("s1", transcript(3)) == transcript_idempotency_key(
        "s1", transcript(3)
    )


def test_a_longer_body_gets_a_new_key() -> None:
    assert transcript_idempotency_key("s1", transcript(3)) != transcript_idempotency_key(
        "s1", transcript(4)
    )


def test_a_complete_body_gets_a_new_key() -> None:
    incomplete = transcript_idempotency_key("s1", transcript(3, complete=False))
    assert incomplete != transcript_idempotency_key("s1", transcript(3, complete=True))


async def test_a_transcript_retry_reuses_its_key(backend: HttpBackend, stub: BackendStub) -> None:
    stub.queue("post_transcript", Fault(status=502))
    await backend.post_transcript("s1", transcript(), deadline=5)
    keys = {r.header("Idempotency-Key") for r in stub.requests_for("post_transcript")}
    assert keys == {transcript_idempotency_key("s1", transcript())}


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "url", ["http://backend.example.com", "ftp://127.0.0.1", "https://", "https://u:p@x.com"]
)
def test_a_url_that_is_not_https_or_local_http_is_refused(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        HttpBackend(url, SecretStr(KEY))
    assert KEY not in str(caught.value)


@pytest.mark.parametrize("url", ["https://backend.example.com", "http://localhost:3000"])
async def test_https_and_local_http_urls_are_accepted(url: str) -> None:
    await HttpBackend(url, SecretStr(KEY)).aclose()


BASE_ENV = {
    "LIVEKIT_URL": "ws://127.0.0.1:7880",
    "LIVEKIT_API_KEY": "devkey",
    "LIVEKIT_API_SECRET": "secret_secret_secret_secret_secret_",
    "OPENAI_API_KEY": "sk-test",
}


async def test_make_backend_picks_http_when_backend_url_is_set() -> None:
    settings = Settings.model_validate(
        {**BASE_ENV, "BACKEND_URL": "https://b.example.com", "INTERNAL_SERVICE_KEY": KEY}
    )
    backend = make_backend(settings)
    assert isinstance(backend, HttpBackend)
    await backend.aclose()


def test_make_backend_picks_local_without_backend_url() -> None:
    assert isinstance(make_backend(Settings.model_validate(BASE_ENV)), LocalBackend)


# --------------------------------------------------------------------------- the stub itself


async def test_stub_answers_422_naming_the_field_of_a_bad_body(stub: BackendStub) -> None:
    async with httpx.AsyncClient(base_url=stub.url) as raw:
        response = await raw.post(
            "/api/internal/sessions",
            json={"scenarioId": "default", "roomName": "r"},
            headers={"X-Internal-Service-Key": KEY, "Idempotency-Key": "create:j"},
        )
    assert response.status_code == 422
    assert "userId: Field required" in response.json()["message"]


async def test_stub_ranks_agent_over_browser_then_complete_then_turn_count(
    backend: HttpBackend, stub: BackendStub
) -> None:
    browser = {**transcript(6).to_wire(), "source": "browser"}
    browser_key = hashlib.sha256(b"s1|1|browser|true|6").hexdigest()
    async with httpx.AsyncClient(base_url=stub.url) as raw:
        stored = await raw.post(
            "/api/internal/sessions/s1/transcript",
            json=browser,
            headers={"X-Internal-Service-Key": KEY, "Idempotency-Key": browser_key},
        )
    assert stored.status_code == 201
    sequence = [
        transcript(1, complete=False),  # agent beats browser, whatever the rest
        transcript(5, complete=False),  # more turns
        transcript(2),  # complete beats incomplete
        transcript(1),  # fewer turns: the stub holds better
        transcript(3),
    ]
    outcomes = [(await backend.post_transcript("s1", p, deadline=5)).status for p in sequence]
    assert outcomes == ["delivered", "delivered", "delivered", "already_delivered", "delivered"]
    best = stub.best_transcript("s1")
    assert best is not None and (best.source, best.payload.turn_count) == ("agent", 3)


async def test_stub_control_endpoints_queue_faults_toggle_down_mode_and_seed_sessions() -> None:
    async with BackendStub(key=KEY, control_port=0) as stub:
        fake = FakeTime()
        client = HttpBackend(stub.url, SecretStr(KEY), sleep=fake.sleep, clock=fake.monotonic)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stub.control_port}") as ctl:
            fault = {"route": "get_scenario", "status": 418, "json": {"message": "teapot"}}
            assert (await ctl.post("/_control/faults", json=fault)).status_code == 200
            with pytest.raises(BackendRejected, match="teapot"):
                await client.get_scenario("default")
            await ctl.post("/_control/down")
            await asyncio.sleep(0.2)
            brief = HttpBackend(
                stub.url,
                SecretStr(KEY),
                default_deadline=0.3,
                sleep=fake.sleep,
                clock=fake.monotonic,
            )
            async with brief:
                with pytest.raises(BackendUnavailable):
                    await brief.get_scenario("default")
            assert (await ctl.post("/_control/up")).json()["port"] == stub.port
            await client.get_scenario("default")
            seeded = {"id": "meta-1", "userId": "u", "scenarioId": "default", "attemptNumber": 1}
            assert (await ctl.post("/_control/sessions", json=seeded)).status_code == 201
            await client.post_transcript("meta-1", transcript(), deadline=5)
            held = (await ctl.get("/_control/transcripts/meta-1")).json()
            recorded = (await ctl.get("/_control/requests")).json()
        await client.aclose()
    assert all(r["keyOk"] and "X-Internal-Service-Key" not in r["headers"] for r in recorded)
    assert [t["transcript"]["turnCount"] for t in held] == [2]


@pytest.fixture
def standalone_stub() -> Iterator[dict[str, Any]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.backend_stub", "--port", "0"],
        stdout=subprocess.PIPE,
        env={**os.environ, "BACKEND_STUB_KEY": KEY, "PYTHONPATH": os.getcwd()},
        text=True,
    )
    try:
        assert process.stdout is not None
        ready: dict[str, Any] = json.loads(process.stdout.readline())
        yield ready
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0


async def test_stub_runs_standalone_and_prints_its_ports(
    standalone_stub: dict[str, Any],
) -> None:
    async with HttpBackend(standalone_stub["url"], SecretStr(KEY)) as client:
        assert (await client.get_scenario("default")).id == "default"
    control = f"http://127.0.0.1:{standalone_stub['controlPort']}/_control/health"
    async with httpx.AsyncClient() as raw:
        assert (await raw.get(control)).json()["ok"] is True
