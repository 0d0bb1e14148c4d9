"""Traces (issue 12): a call's span tree through the SDK's in-memory exporter, on the tracer the
library instruments, and no transcript text or prompt in any attribute.

The call is run as the worker runs it (the call span around the start, `fetch_and_connect`
against the backend stub, the persona's session in text mode, `finish`); expected names and
parentage are written by hand from the issue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit.agents import AgentSession, telemetry
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr

from agent.backend import HttpBackend
from agent.call import Call
from agent.call.finish import finish
from agent.call.session import attach_transcript, open_journal, start_conversation
from agent.call.start import fetch_and_connect
from agent.journal import Journal
from agent.models import JobMetadata
from agent.persona import greeting
from agent.prompts import load_prompt, load_scenario
from agent.tracing import install, setup_tracing, start_call_span
from tests.support.backend_stub import BackendStub
from tests.support.fake_job import FakeJob, FakeJobContext
from tests.support.fakes import CaptureRoom, FakeLLM
from tests.support.settings import make_settings

KEY = "internal-service-key-for-tests"
USER_SAYS = "My sister stopped talking to me after the wedding."
AGENT_SAYS = "That sounds painful. What happened at the wedding?"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    previous = telemetry.tracer._tracer_provider
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    install(provider)  # as setup_tracing does, without the OTLP exporter
    try:
        yield memory
    finally:
        telemetry.tracer.set_provider(previous)
        provider.shutdown()


def test_nothing_is_set_up_without_the_otlp_variables() -> None:
    before = telemetry.tracer._tracer_provider
    assert setup_tracing(make_settings()) is False
    assert telemetry.tracer._tracer_provider is before


async def test_a_call_is_one_span_tree_without_transcript_text(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    scenario = load_scenario("default")
    settings = make_settings(AGENT_DATA_DIR=str(tmp_path))
    metadata = JobMetadata(scenario_id="default", user_id="u1")
    ctx = FakeJobContext(job=FakeJob(id="AJ_trace"))
    async with BackendStub(key=KEY) as stub:
        backend = HttpBackend(stub.url, SecretStr(KEY))
        journal = Journal.in_dir(tmp_path)
        room = CaptureRoom()
        call = Call(
            "AJ_trace",
            "room-1",
            metadata,
            backend=backend,
            journal=journal,
            room_connected=room.isconnected,
        )
        call.span = start_call_span("AJ_trace", "default")
        with trace.use_span(call.span, end_on_exit=False):
            call.scenario, call.session = await fetch_and_connect(ctx, backend, metadata)  # type: ignore[arg-type]
            await open_journal(call)
            session: AgentSession[Call] = AgentSession(
                llm=FakeLLM(AGENT_SAYS), turn_handling={"turn_detection": None}, userdata=call
            )
            call.agent_session = session
            attach_transcript(call, session, room.as_room())
            greeted = asyncio.Event()
            session.on("conversation_item_added", lambda _event: greeted.set())
            await start_conversation(call, session, settings, None)
        await asyncio.wait_for(greeted.wait(), 5)
        await session.run(user_input=USER_SAYS)
        await session.aclose()
        call.end_reason("caller_hangup")
        await finish(call, settings)
        await backend.aclose()
        journal.close()
    assert call.outcome is not None and call.outcome.status == "delivered"

    spans = exporter.get_finished_spans()
    by_id = {span.context.span_id: span for span in spans if span.context is not None}
    roots = [span for span in spans if span.name == "voice_agent.call"]
    assert len(roots) == 1
    root = roots[0]
    assert root.parent is None and root.context is not None
    assert root.attributes is not None
    assert root.attributes["voice_agent.ended_reason"] == "caller_hangup"
    assert root.attributes["voice_agent.delivery"] == "delivered"

    def ancestors(span: ReadableSpan) -> list[str]:
        names = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            names.append(span.name)
        return names

    def children_of_root(name: str) -> list[ReadableSpan]:
        return [
            s
            for s in spans
            if s.name == name and s.parent is not None and s.parent.span_id == root.context.span_id
        ]

    for name in ("voice_agent.scenario_fetch", "voice_agent.session_open", "voice_agent.delivery"):
        assert len(children_of_root(name)) == 1, name
    # the library's session and turn spans (LLM here: text mode has no STT/TTS) are in the tree
    in_tree = {s.name for s in spans if "voice_agent.call" in ancestors(s)}
    assert {"agent_session", "llm_node"} <= in_tree, in_tree
    assert all(s.context.trace_id == root.context.trace_id for s in spans if s.context)

    secrets = [USER_SAYS, AGENT_SAYS, greeting(scenario), scenario.prompt, load_prompt("system")]
    for span in spans:
        values = [str(v) for v in (span.attributes or {}).values()]
        values += [str(v) for event in span.events for v in (event.attributes or {}).values()]
        for value in values:
            for text in secrets:
                # a prompt is long: any line of it would be a leak
                for line in filter(None, (part.strip() for part in text.splitlines())):
                    if len(line) >= 12:
                        assert line not in value, f"{span.name} carries text: {line[:40]!r}"
