"""Delivery: journal first, backend second, delete last; every failure keeps the transcript.

Each behaviour is shown against an in-memory fake backend (tests/support/fake_backend.py), and the
ones that depend on HTTP status semantics again against the real HttpBackend and the loopback
backend stub (tests/support/backend_stub.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from agent.backend import HttpBackend
from agent.delivery import DeliveryOutcome, backstop, deliver, keep_lease, recover_pending
from agent.journal import Journal, Owner
from agent.models import Session, TranscriptPayload, Turn, utc_now
from tests.support import journal_probe
from tests.support.backend_stub import BackendStub, Fault
from tests.support.fake_backend import FakeBackend


def make_payload(turns: int, *, complete: bool = True) -> TranscriptPayload:
    at = utc_now()
    return TranscriptPayload(
        attempt_number=1,
        complete=complete,
        ended_reason="caller_left" if complete else "crashed",
        started_at=at,
        ended_at=at + timedelta(seconds=turns),
        turn_count=turns,
        turns=[
            Turn(
                seq=seq,
                role="user" if seq % 2 else "assistant",
                text=f"private words {seq}",
                started_at=at,
                ended_at=at,
            )
            for seq in range(1, turns + 1)
        ],
    )


def live_call(journal: Journal, call_id: str, turns: int) -> TranscriptPayload:
    """A call journaled turn by turn, as the live job does; returns its final transcript."""
    payload = make_payload(turns)
    journal.open_call(call_id, session_id="session-1", attempt_number=1, started_at=utc_now())
    for turn in payload.turns:
        journal.append_turn(call_id, turn)
    return payload


def events(logs: list[MutableMapping[str, Any]]) -> list[str]:
    return [str(entry["event"]) for entry in logs]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite3"


@pytest.fixture
def journal(db: Path) -> Iterator[Journal]:
    with Journal(db) as opened:
        yield opened


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


async def test_delivered_transcript_leaves_no_journal_row(
    journal: Journal, backend: FakeBackend
) -> None:
    payload = live_call(journal, "job-1", turns=3)

    outcome = await deliver(journal, backend, "job-1", "session-1", payload, deadline=5)

    assert outcome == DeliveryOutcome("job-1", "session-1", "delivered", 1, "http_attempts=1")
    assert journal.state("job-1") is None
    assert journal_probe.counts(journal).turns == 0
    assert [session for session, _ in backend.accepted] == ["session-1"]


async def test_backend_down_for_the_whole_call_then_back_is_delivered_once_by_recovery(
    journal: Journal, backend: FakeBackend
) -> None:
    backend.mode = "down"
    payload = live_call(journal, "job-1", turns=4)

    first = await deliver(journal, backend, "job-1", "session-1", payload, deadline=5)
    still_down = await recover_pending(journal, backend, deadline=5)
    backend.mode = "up"
    recovered = await recover_pending(journal, backend, deadline=5)
    again = await recover_pending(journal, backend, deadline=5)

    assert first.status == "deferred"
    assert [o.status for o in still_down] == ["deferred"]
    assert [(o.call_id, o.status, o.attempts) for o in recovered] == [("job-1", "delivered", 3)]
    assert again == []
    assert len(backend.accepted) == 1, "delivered exactly once"
    assert backend.accepted[0][1].to_wire() == payload.to_wire()
    assert journal.state("job-1") is None


async def test_409_counts_as_delivered_and_removes_the_row(
    journal: Journal, backend: FakeBackend
) -> None:
    payload = live_call(journal, "job-1", turns=2)
    backend.held[("session-1", 1)] = payload  # the backend already holds an equal transcript

    outcome = await deliver(journal, backend, "job-1", "session-1", payload, deadline=5)

    assert outcome.status == "already_delivered"
    assert journal.state("job-1") is None
    assert backend.accepted == []


async def test_422_is_kept_as_a_dead_letter_and_logged_loudly(
    journal: Journal, backend: FakeBackend
) -> None:
    backend.mode = "reject"
    payload = live_call(journal, "job-1", turns=2)

    with capture_logs() as logs:
        outcome = await deliver(journal, backend, "job-1", "session-1", payload, deadline=5)

    assert outcome.status == "rejected"
    assert outcome.detail.startswith("422: turns.0.text")
    assert journal.state("job-1") == "dead"
    assert [r.last_error for r in journal.rows("dead")] == [outcome.detail]
    rejected = [entry for entry in logs if entry["event"] == "delivery.rejected"]
    assert rejected and rejected[0]["log_level"] == "error"
    assert rejected[0]["status"] == 422 and rejected[0]["call_id"] == "job-1"
    # Dead letters are not claimed again automatically.
    backend.mode = "up"
    assert await recover_pending(journal, backend, deadline=5) == []


async def test_401_is_kept_pending_not_dead_and_logged_loudly(
    journal: Journal, backend: FakeBackend
) -> None:
    backend.mode = "unauthorized"
    payload = live_call(journal, "job-1", turns=2)

    with capture_logs() as logs:
        outcome = await deliver(journal, backend, "job-1", "session-1", payload, deadline=5)

    assert outcome.status == "misconfigured"
    assert outcome.detail == "401: wrong INTERNAL_SERVICE_KEY"
    assert journal.state("job-1") == "pending"
    assert "delivery.misconfigured" in events(logs)
    backend.mode = "up"  # the key was fixed: the next recovery delivers it
    assert [o.status for o in await recover_pending(journal, backend, deadline=5)] == ["delivered"]


async def test_deadline_is_respected_when_the_backend_hangs(
    journal: Journal, backend: FakeBackend
) -> None:
    backend.mode = "hang"
    payload = live_call(journal, "job-1", turns=2)

    started = time.monotonic()
    outcome = await deliver(journal, backend, "job-1", "session-1", payload, deadline=0.3)
    elapsed = time.monotonic() - started

    assert outcome.status == "deferred" and outcome.detail == "timeout"
    assert 0.25 <= elapsed < 1.0
    assert 0 < backend.deadlines[0] <= 0.3, "the backend was told the remaining budget"
    assert journal.state("job-1") == "pending"


@pytest.mark.parametrize("mode", ["down", "invalid"])
async def test_transient_and_invalid_responses_are_deferred_and_logged(
    journal: Journal, backend: FakeBackend, mode: Any
) -> None:
    backend.mode = mode
    payload = live_call(journal, "job-1", turns=1)

    with capture_logs() as logs:
        outcome = await deliver(journal, backend, "job-1", "session-1", payload, deadline=5)

    assert outcome.status == "deferred"
    assert "delivery.deferred" in events(logs)
    assert journal.state("job-1") == "pending"


async def test_logs_never_carry_transcript_text(journal: Journal, backend: FakeBackend) -> None:
    payload = live_call(journal, "job-1", turns=2)
    with capture_logs() as logs:
        await deliver(journal, backend, "job-1", "session-1", payload, deadline=5)
        backend.mode = "reject"
        await deliver(journal, backend, "job-2", "session-2", make_payload(2), deadline=5)
    assert "private words" not in repr(logs)


async def test_recovery_stops_at_the_first_deferral_and_releases_the_rest(
    db: Path, backend: FakeBackend
) -> None:
    me = Owner.current()
    with Journal(db, owner=Owner(me.host, me.boot_id, me.pid, me.start_ticks - 1)) as dead:
        for index in range(3):
            live_call(dead, f"job-{index}", turns=1)
    backend.mode = "down"
    with Journal(db) as journal:
        with capture_logs() as logs:
            outcomes = await recover_pending(journal, backend, deadline=5)
        assert [o.status for o in outcomes] == ["deferred"]
        assert backend.posts == 1
        assert "recovery.incomplete" in events(logs)
        summary = next(entry for entry in logs if entry["event"] == "recovery.incomplete")
        assert summary["not_attempted"] == 2
        backend.mode = "up"
        delivered = await recover_pending(journal, backend, deadline=5)
        assert sorted(o.call_id for o in delivered) == ["job-0", "job-1", "job-2"]
        assert journal_probe.counts(journal).pending == journal_probe.counts(journal).live == 0


async def test_recovered_crashed_call_is_posted_incomplete_with_reason_crashed(
    db: Path, backend: FakeBackend
) -> None:
    me = Owner.current()
    with Journal(db, owner=Owner(me.host, me.boot_id, me.pid, me.start_ticks - 1)) as dead:
        live_call(dead, "job-1", turns=5)
    with Journal(db) as journal:
        outcomes = await recover_pending(journal, backend, deadline=5)
    assert [o.status for o in outcomes] == ["delivered"]
    (session_id, sent) = backend.accepted[0]
    assert session_id == "session-1"
    assert (sent.complete, sent.ended_reason, sent.turn_count) == (False, "crashed", 5)


async def test_lease_is_held_while_a_slow_delivery_is_in_flight(
    db: Path, backend: FakeBackend
) -> None:
    backend.delay = 0.6
    with (
        Journal(db, lease_seconds=0.3) as journal,
        Journal(db, owner=Owner("elsewhere", "boot-elsewhere", 1, 1)) as other,
    ):
        payload = live_call(journal, "job-1", turns=1)
        delivery = asyncio.create_task(
            deliver(journal, backend, "job-1", "session-1", payload, deadline=5)
        )
        await asyncio.sleep(0.45)  # past the first lease: only a refresh keeps the row ours
        assert await asyncio.to_thread(other.claim_recoverable) == []
        assert (await delivery).status == "delivered"
    assert len(backend.accepted) == 1


async def test_keep_lease_keeps_a_live_call_unclaimable_and_ends_quietly_on_delivery(
    db: Path, backend: FakeBackend
) -> None:
    with (
        Journal(db, lease_seconds=0.3) as journal,
        Journal(db, owner=Owner("elsewhere", "boot-elsewhere", 1, 1)) as other,
    ):
        payload = live_call(journal, "job-1", turns=2)
        with capture_logs() as logs:
            keeper = asyncio.create_task(keep_lease(journal, "job-1", interval=0.05))
            await asyncio.sleep(0.5)  # well past the first lease
            assert await asyncio.to_thread(other.claim_recoverable) == []
            await deliver(journal, backend, "job-1", "session-1", payload, deadline=5)
            await asyncio.wait_for(keeper, 1)
    assert "journal.lease_lost" not in events(logs)


async def test_keep_lease_warns_when_another_process_took_the_call(db: Path) -> None:
    with (
        Journal(db, lease_seconds=0.1) as journal,
        Journal(
            db, owner=Owner("elsewhere", "boot-elsewhere", 1, 1), clock=lambda: time.monotonic() + 1
        ) as other,
    ):
        live_call(journal, "job-1", turns=1)
        # Our loop was blocked past the lease: recovery elsewhere took the call over.
        assert len(other.claim_recoverable()) == 1
        with capture_logs() as logs:
            await asyncio.wait_for(keep_lease(journal, "job-1", interval=0.01), 1)
    assert "journal.lease_lost" in events(logs)


async def test_backstop_does_nothing_when_already_delivered(
    journal: Journal, backend: FakeBackend
) -> None:
    payload = live_call(journal, "job-1", turns=2)
    await deliver(journal, backend, "job-1", "session-1", payload, deadline=5)

    assert await backstop(journal, backend, "job-1", "session-1", timeout=2) is None
    assert backend.posts == 1


async def test_backstop_skips_a_dead_letter(journal: Journal, backend: FakeBackend) -> None:
    backend.mode = "reject"
    payload = live_call(journal, "job-1", turns=2)
    await deliver(journal, backend, "job-1", "session-1", payload, deadline=5)

    assert await backstop(journal, backend, "job-1", "session-1", timeout=2) is None
    assert backend.posts == 1


async def test_backstop_delivers_the_stored_transcript_after_a_deferral(
    journal: Journal, backend: FakeBackend
) -> None:
    backend.mode = "down"
    payload = live_call(journal, "job-1", turns=3)
    await deliver(journal, backend, "job-1", "session-1", payload, deadline=5)
    backend.mode = "up"

    outcome = await backstop(journal, backend, "job-1", "session-1", timeout=2)

    assert outcome is not None and outcome.status == "delivered"
    assert backend.accepted[0][1].complete is True
    assert journal.state("job-1") is None


async def test_backstop_rebuilds_from_turns_when_the_call_never_finished(
    journal: Journal, backend: FakeBackend
) -> None:
    live_call(journal, "job-1", turns=3)  # on_session_end never ran

    outcome = await backstop(
        journal, backend, "job-1", "session-1", timeout=2, ended_reason="job_terminated"
    )

    assert outcome is not None and outcome.status == "delivered"
    sent = backend.accepted[0][1]
    # complete: false only with crashed / in_progress (DESIGN.md); this process journaled every
    # final turn it saw.
    assert (sent.complete, sent.ended_reason, sent.turn_count) == (True, "job_terminated", 3)


async def test_backstop_is_bounded_by_its_timeout(journal: Journal, backend: FakeBackend) -> None:
    backend.mode = "hang"
    live_call(journal, "job-1", turns=1)

    started = time.monotonic()
    outcome = await backstop(journal, backend, "job-1", "session-1", timeout=0.3)

    assert outcome is not None and outcome.status == "deferred"
    assert time.monotonic() - started < 1.0
    assert journal.state("job-1") == "pending"


async def test_cancelled_delivery_releases_the_row_for_recovery(
    db: Path, backend: FakeBackend
) -> None:
    backend.mode = "hang"
    with (
        Journal(db) as journal,
        Journal(db, owner=Owner("elsewhere", "boot-elsewhere", 1, 1)) as other,
    ):
        payload = live_call(journal, "job-1", turns=1)
        delivery = asyncio.create_task(
            deliver(journal, backend, "job-1", "session-1", payload, deadline=30)
        )
        await asyncio.sleep(0.1)
        delivery.cancel()
        with pytest.raises(asyncio.CancelledError):
            await delivery
        assert [c.call_id for c in other.claim_recoverable()] == ["job-1"]


async def test_a_transcript_is_posted_even_when_the_journal_cannot_write(
    journal: Journal, backend: FakeBackend
) -> None:
    payload = make_payload(2)
    journal.close()  # every journal call now raises sqlite3.ProgrammingError

    with capture_logs() as logs:
        outcome = await deliver(journal, backend, "job-1", "session-1", payload, deadline=5)

    assert outcome.status == "delivered"
    assert len(backend.accepted) == 1
    assert "journal.write_failed" in events(logs)


# ------------------------------------------------------------------ real HttpBackend + stub

STUB_KEY = "stub-internal-key"


@pytest.fixture
async def stub() -> AsyncIterator[BackendStub]:
    async with BackendStub(STUB_KEY) as running:
        running.add_session(
            Session(id="session-1", user_id="user-1", scenario_id="default", attempt_number=1)
        )
        yield running


@pytest.fixture
async def http(stub: BackendStub) -> AsyncIterator[HttpBackend]:
    async with HttpBackend(stub.url, SecretStr(STUB_KEY), timeout=1.0) as client:
        yield client


async def test_http_backend_down_then_back_is_delivered_once_by_recovery(
    journal: Journal, stub: BackendStub, http: HttpBackend
) -> None:
    payload = live_call(journal, "job-1", turns=6)
    await stub.stop()  # connection refused for the whole call and its delivery

    first = await deliver(journal, http, "job-1", "session-1", payload, deadline=0.5)
    await stub.start()
    recovered = await recover_pending(journal, http, deadline=5)
    again = await recover_pending(journal, http, deadline=5)

    assert first.status == "deferred"
    assert [o.status for o in recovered] == ["delivered"]
    assert again == []
    assert len(stub.transcripts["session-1"]) == 1, "no duplicate"
    assert stub.transcripts["session-1"][0].payload.to_wire() == payload.to_wire()
    assert len(stub.requests_for("post_transcript")) == 1
    assert journal.state("job-1") is None


async def test_http_409_counts_as_delivered_and_removes_the_row(
    journal: Journal, stub: BackendStub, http: HttpBackend
) -> None:
    payload = live_call(journal, "job-1", turns=2)
    # The backend already holds a better transcript of this attempt (a different body: an
    # identical one would be an idempotent replay answered 201).
    await http.post_transcript("session-1", make_payload(3), deadline=5)

    outcome = await deliver(journal, http, "job-1", "session-1", payload, deadline=5)

    assert outcome.status == "already_delivered"
    assert journal.state("job-1") is None
    assert len(stub.transcripts["session-1"]) == 1


async def test_http_422_is_kept_as_a_dead_letter_with_the_servers_reason(
    journal: Journal, stub: BackendStub, http: HttpBackend
) -> None:
    payload = live_call(journal, "job-1", turns=2)
    stub.queue(
        "post_transcript",
        Fault(status=422, json={"error": "invalid_body", "message": "turns.0.text: too short"}),
    )

    with capture_logs() as logs:
        outcome = await deliver(journal, http, "job-1", "session-1", payload, deadline=5)

    assert outcome.status == "rejected"
    assert journal.state("job-1") == "dead"
    assert "too short" in str(journal.rows("dead")[0].last_error)
    assert "delivery.rejected" in events(logs)


async def test_http_401_is_kept_pending_not_dead(journal: Journal, stub: BackendStub) -> None:
    payload = live_call(journal, "job-1", turns=2)
    async with HttpBackend(stub.url, SecretStr("wrong-key"), timeout=1.0) as wrong:
        outcome = await deliver(journal, wrong, "job-1", "session-1", payload, deadline=5)

    assert outcome.status == "misconfigured"
    assert journal.state("job-1") == "pending"
    assert stub.transcripts["session-1"] == []


async def test_http_deadline_is_respected_when_the_backend_stalls(
    journal: Journal, stub: BackendStub, http: HttpBackend
) -> None:
    payload = live_call(journal, "job-1", turns=2)
    stub.queue("post_transcript", Fault(delay=10), Fault(delay=10), Fault(delay=10))

    started = time.monotonic()
    outcome = await deliver(journal, http, "job-1", "session-1", payload, deadline=0.5)

    assert outcome.status == "deferred"
    assert time.monotonic() - started < 1.5
    assert journal.state("job-1") == "pending"


async def test_a_call_another_process_claimed_is_not_posted_twice(
    db: Path, backend: FakeBackend
) -> None:
    with (
        Journal(db) as journal,
        Journal(db, owner=Owner("elsewhere", "boot-elsewhere", 1, 1)) as other,
    ):
        payload = live_call(journal, "job-1", turns=2)
        backend.mode = "down"
        deferred = await deliver(journal, backend, "job-1", "session-1", payload, deadline=1)
        assert deferred.status == "deferred"  # released for anyone's recovery
        [claimed] = await asyncio.to_thread(other.claim_recoverable)
        assert claimed.call_id == "job-1"
        backend.mode = "up"
        # the first owner's backstop now finds the row held by the recovering process
        again = await deliver(journal, backend, "job-1", "session-1", payload, deadline=1)
    assert again.status == "deferred" and again.detail == "held by another process"
    assert backend.accepted == []


# ------------------------------------------------------------------ status classes end to end
# Each status class through `deliver` with the real HttpBackend, the loopback stub and a real
# journal. Expected states are DESIGN.md's "Status semantics": acknowledged -> gone; transient or
# a configuration error -> pending; another 4xx -> dead, its reason free of turn text.


class FakeTime:
    """Backoff waits move this clock instead of passing, so retries cost no real time."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.offset += seconds
        await asyncio.sleep(0)


def fast_client(stub: BackendStub, key: str = STUB_KEY) -> HttpBackend:
    clock = FakeTime()
    return HttpBackend(
        stub.url, SecretStr(key), timeout=1.0, sleep=clock.sleep, clock=clock.monotonic
    )


SIGN_IN_PAGE = "<!doctype html><html><body><form>Sign in</form></body></html>"
LOGIN = "https://login.example.com/sso?next=%2Fapi&token=SECRET-TOKEN"

# name: (faults queued on the transcript route, service key, expected outcome, cause in logs)
KEPT_PENDING: dict[str, tuple[list[Fault], str, str, str]] = {
    "html_200": (
        [Fault(status=200, text=SIGN_IN_PAGE, content_type="text/html")] * 30,
        STUB_KEY,
        "deferred",
        "200 is not an acknowledgement: body is not JSON (text/html)",
    ),
    "empty_200": ([Fault(status=200, text="")] * 30, STUB_KEY, "deferred", "empty body"),
    "json_array_200": ([Fault(status=200, json=[])] * 30, STUB_KEY, "deferred", "JSON array"),
    "redirect_302": (
        [Fault(status=302, headers={"Location": LOGIN})],
        STUB_KEY,
        "misconfigured",
        "redirect to login.example.com",
    ),
    "not_found_404": (
        [Fault(status=404, text="<h1>Not Found</h1>", content_type="text/html")],
        STUB_KEY,
        "misconfigured",
        "BACKEND_URL or route wrong",
    ),
    "method_405": ([Fault(status=405, text="")], STUB_KEY, "misconfigured", "route wrong"),
    "wrong_key_401": ([], "not-the-key", "misconfigured", "wrong INTERNAL_SERVICE_KEY"),
}


@pytest.mark.parametrize("case", KEPT_PENDING.values(), ids=KEPT_PENDING.keys())
async def test_unacknowledged_or_misconfigured_stays_pending_until_recovery_delivers_it(
    case: tuple[list[Fault], str, str, str], journal: Journal, stub: BackendStub
) -> None:
    faults, key, expected, cause = case
    payload = live_call(journal, "job-1", turns=3)
    stub.queue("post_transcript", *faults)

    async with fast_client(stub, key) as client:
        with capture_logs() as logs:
            outcome = await deliver(journal, client, "job-1", "session-1", payload, deadline=2)

    assert outcome.status == expected
    assert journal.state("job-1") == "pending"
    assert journal.rows("dead") == []
    held = journal.current_payload("job-1")
    assert held is not None and held.to_wire() == payload.to_wire()
    assert stub.transcripts["session-1"] == []
    loud = [entry for entry in logs if entry["log_level"] == "error"]
    assert len(loud) == 1 and cause in repr(loud[0])
    assert "SECRET-TOKEN" not in repr(logs) and "private words" not in repr(logs)

    # The proxy, URL or key is fixed: the next recovery claims the row and delivers it once.
    stub.faults.clear()
    async with fast_client(stub) as fixed:
        recovered = await recover_pending(journal, fixed, deadline=2)
    assert [(o.call_id, o.status) for o in recovered] == [("job-1", "delivered")]
    assert journal.state("job-1") is None
    assert [t.payload.to_wire() for t in stub.transcripts["session-1"]] == [payload.to_wire()]


async def test_recovery_stops_at_the_first_configuration_error(
    journal: Journal, stub: BackendStub
) -> None:
    stub.queue("post_transcript", *[Fault(status=404)] * 10)
    async with fast_client(stub) as client:
        for call_id in ("job-1", "job-2"):
            payload = live_call(journal, call_id, turns=1)
            await deliver(journal, client, call_id, "session-1", payload, deadline=2)
        posted = len(stub.requests_for("post_transcript"))
        outcomes = await recover_pending(journal, client, deadline=2)

    assert [o.status for o in outcomes] == ["misconfigured"]
    assert len(stub.requests_for("post_transcript")) == posted + 1
    assert journal.state("job-1") == journal.state("job-2") == "pending"


@pytest.mark.parametrize("status", [400, 413, 422])
async def test_a_rejection_is_a_dead_letter_whose_reason_does_not_quote_the_turns(
    status: int, journal: Journal, stub: BackendStub
) -> None:
    payload = live_call(journal, "job-1", turns=3)
    refused = {"error": "invalid_body", "message": "turns.1.text: not allowed: 'private words 2'"}
    stub.queue("post_transcript", Fault(status=status, json=refused))

    async with fast_client(stub) as client:
        with capture_logs() as logs:
            outcome = await deliver(journal, client, "job-1", "session-1", payload, deadline=2)

    expected = (
        f'{status}: {{"error": "invalid_body", '
        """"message": "turns.1.text: not allowed: '[transcript text]'"}"""
    )
    assert (outcome.status, outcome.detail) == ("rejected", expected)
    assert journal.state("job-1") == "dead"
    assert [r.last_error for r in journal.rows("dead")] == [expected]
    assert len(stub.requests_for("post_transcript")) == 1, "a rejection is not retried"
    assert "delivery.rejected" in events(logs)
    assert "private words" not in repr(logs)


ACKNOWLEDGED = {
    "json_object_200": Fault(status=200, json={"ok": True}),
    "no_content_204": Fault(status=204, text=""),
    "conflict_409_json": Fault(status=409, json={"error": "already_delivered"}),
    "conflict_409_text": Fault(status=409, text="Conflict", content_type="text/plain"),
}


@pytest.mark.parametrize("fault", ACKNOWLEDGED.values(), ids=ACKNOWLEDGED.keys())
async def test_an_acknowledgement_removes_the_row(
    fault: Fault, journal: Journal, stub: BackendStub
) -> None:
    payload = live_call(journal, "job-1", turns=2)
    stub.queue("post_transcript", fault)

    async with fast_client(stub) as client:
        outcome = await deliver(journal, client, "job-1", "session-1", payload, deadline=2)

    assert outcome.status in ("delivered", "already_delivered")
    assert journal.state("job-1") is None
    assert len(stub.requests_for("post_transcript")) == 1
