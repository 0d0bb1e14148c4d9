"""End to end: the real worker's `/metrics` (METRICS_PORT) and `/ready` during and after calls
through the stand-in (issue 12). The call runs in a job process, so what the main process's
endpoint shows of its turns and delivery came through the multiprocess directory.

Scraped over HTTP and parsed with prometheus_client's exposition parser; the expected values
are written by hand from the call the test makes.
"""

from __future__ import annotations

import asyncio
import signal
import urllib.error
import urllib.request
from typing import Final

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import free_port
from tests.e2e.test_worker_e2e import (
    TEST_BUDGET,
    Stack,
    accepted_transcripts,
    hang_up,
    metadata,
    poll,
    spoken_turn,
    stack,
    start_call,
)

pytestmark = pytest.mark.e2e

__all__ = ["stack"]  # the fixture, used by name

TRANSCRIPT_ROUTE: Final = "/api/internal/sessions/{sessionId}/transcript"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except OSError:
        return 0, ""  # not listening (yet, or any more)


async def status_of(url: str) -> int:
    return (await asyncio.to_thread(_get, url))[0]


async def scrape(port: int) -> Samples:
    status, text = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
    if status != 200:
        return {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_and_readiness_during_calls_and_a_drain(stack: Stack) -> None:
    async with asyncio.timeout(TEST_BUDGET * 1.5):
        health_port, metrics_port = free_port(), free_port()
        ready_url = f"http://127.0.0.1:{health_port}/ready"
        await stack.backend.add_session("sess-m-1", user_id="u1", scenario_id="default")
        worker = await stack.start_worker(PORT=str(health_port), METRICS_PORT=str(metrics_port))
        await poll(lambda: status_of(ready_url), lambda s: s == 200, timeout=10, what="ready")

        # 1. a full call: live 1 while it runs, then 0; turns, delivery and the backend counted
        call = await start_call(
            stack,
            "room-m-1",
            "caller-1",
            metadata(sessionId="sess-m-1", participantIdentity="caller-1"),
        )
        during = await poll(
            lambda: scrape(metrics_port),
            lambda s: value(s, "voice_agent_calls_live") == 1,
            timeout=10,
            what="calls live 1",
        )
        assert value(during, "voice_agent_calls_started_total") == 1
        assert value(during, "voice_agent_turns_total", role="assistant") == 1  # the greeting
        await spoken_turn(call, reply_seq=3)
        await hang_up(call)
        await accepted_transcripts(stack, "sess-m-1")
        after = await poll(
            lambda: scrape(metrics_port),
            lambda s: value(s, "voice_agent_deliveries_total", outcome="delivered") == 1,
            timeout=15,
            what="the delivery counted",
        )
        assert value(after, "voice_agent_calls_live") == 0
        assert value(after, "voice_agent_calls_ended_total", ended_reason="caller_hangup") == 1
        assert value(after, "voice_agent_turns_total", role="user") == 1
        assert value(after, "voice_agent_turns_total", role="assistant") == 2
        assert (
            value(
                after,
                "voice_agent_backend_requests_total",
                route=TRANSCRIPT_ROUTE,
                status_class="2xx",
            )
            == 1
        )
        # the audio path measured the reply: one sample in each per-turn latency histogram
        assert value(after, "voice_agent_turn_response_latency_seconds_count") == 1
        assert value(after, "voice_agent_end_of_turn_delay_seconds_count") == 1
        assert value(after, "voice_agent_journal_calls", state="pending") == 0
        assert value(after, "voice_agent_draining") == 0
        assert value(after, "voice_agent_job_processes", state="idle") >= 1

        # 2. a second call, then one SIGTERM: /ready 503 and draining 1 while the call goes on
        call = await start_call(
            stack, "room-m-2", "caller-2", metadata(participantIdentity="caller-2")
        )
        worker.signal(signal.SIGTERM)
        await poll(lambda: status_of(ready_url), lambda s: s == 503, timeout=10, what="not ready")
        draining = await scrape(metrics_port)
        assert value(draining, "voice_agent_draining") == 1
        assert value(draining, "voice_agent_calls_live") == 1
        assert value(draining, "voice_agent_job_processes", state="running") == 1
        await hang_up(call)
        assert await worker.wait_exit(timeout=30) == 0
