"""/metrics and /ready (DESIGN.md "Operations"; issue 12): scraped over HTTP on 127.0.0.1 and
parsed with prometheus_client's exposition parser, never by string matching.

Oracles are written by hand from the issue's text: the series names, the bounded label sets
(DESIGN's endedReason list, the roles, the delivery outcomes, the backend's route templates) and
the counts a known call produces.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from livekit.agents import AgentSession
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from agent.backend import HttpBackend
from agent.call import Call
from agent.call.finish import finish
from agent.call.session import attach_transcript, start_conversation
from agent.journal import JOURNAL_FILENAME, Journal
from agent.metrics import series
from agent.ops.metrics import MULTIPROC_ENV, MetricsEndpoint, ScrapeCollector, read_journal
from agent.worker import build_server
from tests.contract.oracle import ENDED_REASONS as CONTRACT_ENDED_REASONS
from tests.support.backend_stub import BackendStub
from tests.support.calls import SESSION, open_default_call
from tests.support.fakes import CaptureRoom, FakeLLM
from tests.support.settings import make_settings

KEY = "internal-service-key-for-tests"

# DESIGN.md's endedReason list (the contract oracle, written by hand), plus the catch-all label.
ENDED_REASONS = {*CONTRACT_ENDED_REASONS, "other"}
BOUNDED_LABELS: dict[str, set[str]] = {
    "ended_reason": ENDED_REASONS,
    "role": {"user", "assistant", "other"},
    "outcome": {"delivered", "duplicate", "retried", "pending", "dead", "other"},
    "route": {
        "/api/internal/scenarios/{scenarioId}",
        "/api/internal/sessions",
        "/api/internal/sessions/{sessionId}",
        "/api/internal/sessions/{sessionId}/transcript",
        # DESIGN.md "Backend": the PUT of a recorded part (issue 24)
        "/api/internal/sessions/{sessionId}/recording",
        "other",
    },
    "status_class": {"2xx", "3xx", "4xx", "5xx", "timeout", "error", "other"},
    "kind": {"stt", "llm", "tts", "realtime", "other"},
    "state": {"live", "pending", "dead", "idle", "running"},
    # checkpoints of live calls (issue 15): acknowledged or not
    "result": {"sent", "failed", "other"},
    # resumed calls (issue 15): where the earlier turns came from
    "source": {"journal", "backend", "other"},
}
TRANSCRIPT_ROUTE = "/api/internal/sessions/{sessionId}/transcript"
DOCS = Path(__file__).resolve().parents[2] / "docs"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class FakeWorker:
    """What the endpoint reads of a worker (agent.ops.metrics.WorkerView)."""

    draining: bool = False
    ready: bool = True
    processes: list[tuple[int, bool]] = field(default_factory=list)

    def job_processes(self) -> list[tuple[int, bool]]:
        return list(self.processes)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def scrape(port: int) -> tuple[dict[str, str], Samples]:
    """Families by name -> type, and every sample of a voice_agent_* family."""
    status, text = await asyncio.to_thread(get, f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("voice_agent_"):
            continue
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return types, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def assert_bounded(samples: Samples) -> None:
    for (name, labels), _ in samples.items():
        for key, label_value in labels:
            if key == "le":
                continue
            assert key in BOUNDED_LABELS, f"{name}: unexpected label {key}"
            assert label_value in BOUNDED_LABELS[key], f"{name}: {key}={label_value!r}"


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[tuple[MetricsEndpoint, FakeWorker]]:
    worker = FakeWorker()
    server = MetricsEndpoint.start(
        0, journal_path=tmp_path / JOURNAL_FILENAME, worker=worker, host="127.0.0.1"
    )
    try:
        yield server, worker
    finally:
        server.stop()


async def test_a_text_call_and_its_delivery_show_in_the_scrape(
    tmp_path: Path, endpoint: tuple[MetricsEndpoint, FakeWorker]
) -> None:
    server, worker = endpoint
    settings = make_settings(AGENT_DATA_DIR=str(tmp_path))
    _, before = await scrape(server.port)
    async with BackendStub(key=KEY) as stub:
        stub.add_session(SESSION)
        backend = HttpBackend(stub.url, SecretStr(KEY))
        journal = Journal.in_dir(tmp_path)
        room = CaptureRoom()
        call = await open_default_call(backend, journal, room)
        session: AgentSession[Call] = AgentSession(
            llm=FakeLLM("I lost my job."), turn_handling={"turn_detection": None}, userdata=call
        )
        call.agent_session = session
        attach_transcript(call, session, room.as_room())
        greeted = asyncio.Event()
        session.on("conversation_item_added", lambda _event: greeted.set())
        await start_conversation(call, session, settings, None)
        await asyncio.wait_for(greeted.wait(), 5)
        await session.run(user_input="What's on your mind?")

        types, during = await scrape(server.port)
        live = "voice_agent_calls_live"
        assert value(during, live) - value(before, live) == 1
        assert value(during, "voice_agent_journal_calls", state="live") == 1

        await session.aclose()
        call.end_reason("caller_hangup")
        await finish(call, settings)
        await backend.aclose()
        journal.close()
    assert call.outcome is not None and call.outcome.status == "delivered"

    worker.draining = True
    types, after = await scrape(server.port)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert types["voice_agent_calls_started"] == "counter"
    assert types["voice_agent_calls_live"] == "gauge"
    assert types["voice_agent_turn_response_latency_seconds"] == "histogram"
    assert types["voice_agent_llm_first_token_seconds"] == "histogram"
    assert types["voice_agent_tts_first_byte_seconds"] == "histogram"
    assert types["voice_agent_end_of_turn_delay_seconds"] == "histogram"
    assert types["voice_agent_journal_oldest_pending_age_seconds"] == "gauge"

    assert grew("voice_agent_calls_started_total") == 1
    assert grew("voice_agent_calls_ended_total", ended_reason="caller_hangup") == 1
    assert grew("voice_agent_calls_live") == 0
    # greeting + reply by the assistant, one user turn
    assert grew("voice_agent_turns_total", role="assistant") == 2
    assert grew("voice_agent_turns_total", role="user") == 1
    assert grew("voice_agent_deliveries_total", outcome="delivered") == 1
    assert grew("voice_agent_backend_requests_total", route=TRANSCRIPT_ROUTE, status_class="2xx")
    # the fake LLM reports a first-token time for the reply the user asked for
    assert grew("voice_agent_llm_first_token_seconds_count") >= 1
    assert value(after, "voice_agent_journal_calls", state="pending") == 0
    assert value(after, "voice_agent_journal_calls", state="dead") == 0
    assert value(after, "voice_agent_journal_up") == 1
    assert value(after, "voice_agent_draining") == 1
    assert_bounded(after)


def _payload(ended_at: str, turns: int = 0) -> dict[str, object]:
    return {
        "attemptNumber": 1,
        "complete": True,
        "endedReason": "caller_left",
        "startedAt": "2026-01-01T00:00:00Z",
        "endedAt": ended_at,
        "turnCount": turns,
        "turns": [],
    }


def test_journal_gauges_count_pending_and_dead_and_age_the_oldest(tmp_path: Path) -> None:
    # rows written with SQL from DESIGN's journal states, not through the code under test
    Journal.in_dir(tmp_path).close()
    path = tmp_path / JOURNAL_FILENAME
    now = datetime(2026, 1, 1, 1, 0, 0, tzinfo=UTC).timestamp()
    rows = [
        ("c1", "pending", json.dumps(_payload("2026-01-01T00:00:00Z"))),  # 3600 s
        ("c2", "pending", json.dumps(_payload("2026-01-01T00:30:00+00:00"))),  # 1800 s
        ("c3", "dead", json.dumps(_payload("2026-01-01T00:59:00Z"))),
        ("c4", "live", None),
    ]
    with sqlite3.connect(path) as conn:
        for call_id, state, payload in rows:
            conn.execute(
                "INSERT INTO calls (call_id, session_id, attempt_number, started_at, lease_until,"
                " state, payload, updated_at) VALUES (?, 's', 1, '2026-01-01T00:00:00Z', 0, ?, ?,"
                " ?)",
                (call_id, state, payload, now),
            )
    collector = ScrapeCollector(path, None)
    counts, oldest = read_journal(path, now=now)
    assert counts == {"pending": 2, "dead": 1, "live": 1}
    assert oldest == 3600.0
    families = {family.name: family for family in collector.collect()}
    states = {s.labels["state"]: s.value for s in families["voice_agent_journal_calls"].samples}
    assert states == {"live": 1, "pending": 2, "dead": 1}
    assert families["voice_agent_journal_oldest_pending_age_seconds"].samples[0].value >= 3600


def test_job_processes_series_from_another_process_reach_the_scrape(tmp_path: Path) -> None:
    """Multiprocess mode: a process records into PROMETHEUS_MULTIPROC_DIR and exits; the
    collector reads its counters, and its live gauge is dropped because it is gone."""
    directory = tmp_path / "prom"
    directory.mkdir()
    child = (
        "from agent import metrics\n"
        "metrics.call_started()\n"
        "metrics.turn_recorded('user')\n"
        "metrics.delivery('dead')\n"
        "metrics.backend_request('/api/internal/sessions/abc/transcript', '5xx')\n"
    )
    env = {**os.environ, MULTIPROC_ENV: str(directory)}
    subprocess.run([sys.executable, "-c", child], env=env, check=True, cwd=Path.cwd())
    assert any(name.startswith("gauge_livesum_") for name in os.listdir(directory))

    old = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = str(directory)
    try:
        families = list(ScrapeCollector(tmp_path / JOURNAL_FILENAME, None).collect())
    finally:
        if old is None:
            del os.environ[MULTIPROC_ENV]
        else:
            os.environ[MULTIPROC_ENV] = old
    samples: Samples = {}
    for family in families:
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert value(samples, "voice_agent_calls_started_total") == 1
    assert value(samples, "voice_agent_turns_total", role="user") == 1
    assert value(samples, "voice_agent_deliveries_total", outcome="dead") == 1
    # an id in a path never becomes a label value
    assert value(samples, "voice_agent_backend_requests_total", route="other", status_class="5xx")
    assert value(samples, "voice_agent_calls_live") == 0  # its process is gone
    assert not any(name.startswith("gauge_livesum_") for name in os.listdir(directory))
    assert_bounded({k: v for k, v in samples.items() if k[0].startswith("voice_agent_")})


async def test_ready_is_503_until_registered_and_while_draining(tmp_path: Path) -> None:
    # a fixed free port: with PORT=0 the health server's IPv4 and IPv6 sockets get different ones
    settings = make_settings(AGENT_DATA_DIR=str(tmp_path), PORT=str(free_port()), METRICS_PORT="0")
    server = build_server(settings)
    started = asyncio.Event()
    server.on("worker_started", lambda: started.set())
    task = asyncio.create_task(server.run(devmode=True, unregistered=True))
    try:
        await asyncio.wait_for(started.wait(), 10)
        health = server._http_server
        assert health is not None
        base = f"http://127.0.0.1:{health.port}"

        status, _ = await asyncio.to_thread(get, f"{base}/ready")
        assert status == 503  # not registered with LiveKit yet
        assert (await asyncio.to_thread(get, f"{base}/"))[0] == 200  # liveness unchanged
        assert server._metrics is not None
        _, samples = await scrape(server._metrics.port)
        assert value(samples, "voice_agent_ready") == 0

        # what the library emits when LiveKit answers the registration
        server.emit("worker_registered", "AW_test", None)
        status, _ = await asyncio.to_thread(get, f"{base}/ready")
        assert status == 200
        _, samples = await scrape(server._metrics.port)
        assert value(samples, "voice_agent_ready") == 1
        assert value(samples, "voice_agent_draining") == 0

        await server.drain(timeout=5)
        status, _ = await asyncio.to_thread(get, f"{base}/ready")
        assert status == 503
        _, samples = await scrape(server._metrics.port)
        assert value(samples, "voice_agent_draining") == 1
    finally:
        await server.aclose()
        await asyncio.wait_for(task, 10)


async def test_the_dashboard_and_the_alert_rules_use_only_served_series(
    endpoint: tuple[MetricsEndpoint, FakeWorker],
) -> None:
    server, _ = endpoint
    series()  # every family is exposed once made, even before its first sample
    types, _ = await scrape(server.port)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    served = {name + suffix for name, kind in types.items() for suffix in suffixes.get(kind, ("",))}
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"voice_agent_[a-z_]+", expr)}
    assert used and used <= served, used - served
    guide = (DOCS / "operations.md").read_text()
    alerts = guide.split("## Alert rules", 1)[1].split("\n## ", 1)[0]
    in_alerts = set(re.findall(r"voice_agent_[a-z_]+", alerts))
    assert in_alerts and in_alerts <= served, in_alerts - served
