"""The stand-in's Cloud-style re-dispatch (``redispatch_lost_jobs``) with real workers, in the
network namespace: two real AgentServer workers (tests/e2e/tone_agent.py), the one holding the
call is killed with its whole process group."""

from __future__ import annotations

import asyncio
import time

import pytest
from livekit import api
from livekit.protocol import models

from tests.e2e.conftest import Callers
from tests.e2e.harness import ProcessGroup, free_port
from tests.e2e.standin import StandIn
from tests.e2e.test_standin_smoke import AGENT_NAME as TONE_AGENT
from tests.e2e.test_standin_smoke import start_tone_worker

pytestmark = pytest.mark.e2e

METADATA = '{"scenarioId": "s", "participantIdentity": "caller-1"}'
Kind = models.ParticipantInfo.Kind


async def test_the_real_worker_gets_the_job_of_a_killed_worker_with_the_option_on(
    standin: StandIn, processes: ProcessGroup, callers: Callers
) -> None:
    """In the namespace, with two real AgentServer workers (tests/e2e/tone_agent.py): the one
    holding the call dies (SIGKILL of its group); the caller sees its agent leave, and the other
    worker's agent joins the same room with the same dispatch and metadata, listed over twirp
    with kind AGENT and the lk.agent.name attribute livekit-agents sets."""
    async with asyncio.timeout(90):
        standin.redispatch_lost_jobs = True
        survivor = await start_tone_worker(processes, standin)
        victim = processes.start_module(
            "tests.e2e.tone_agent",
            {
                "LIVEKIT_URL": standin.url,
                "LIVEKIT_API_KEY": standin.api_key,
                "LIVEKIT_API_SECRET": standin.api_secret,
                "LIVEKIT_AGENT_NAME": TONE_AGENT,
                "PORT": str(free_port()),
            },
            "start",
            name="tone_agent-victim",
        )
        await standin.wait_until(
            lambda: len(standin.worker_ids(TONE_AGENT)) == 2, timeout=40, what="two workers"
        )
        caller = await callers.join("caller-1", "room-lost", agent_name=TONE_AGENT)
        old_id = await standin.dispatch("room-lost", METADATA, TONE_AGENT)  # the newest: victim
        old_agent = await caller.wait_for_agent(timeout=20)
        assert old_agent.identity == f"agent-{old_id}"

        killed_at = time.monotonic()
        victim.kill_group()
        left = await standin.wait_for_event("left", identity=f"agent-{old_id}", timeout=10)
        assert left.detail["reason"] == "SIGNAL_CLOSE"
        record = await standin.wait_until(
            lambda: next(iter(standin.redispatches), None), timeout=30, what="the re-dispatch"
        )
        assert record.old_job_id == old_id and record.error == ""
        new_agent = await caller.wait_for_agent(timeout=30, exclude=(old_agent.identity,))
        assert new_agent.identity == f"agent-{record.new_job_id}"
        joined = await standin.wait_for_event("joined", identity=new_agent.identity, timeout=5)
        new_job = standin.jobs[record.new_job_id]
        old_job = standin.jobs[old_id]
        assert (new_job.dispatch_id, new_job.metadata) == (old_job.dispatch_id, METADATA)
        async with api.LiveKitAPI(standin.url, standin.api_key, standin.api_secret) as client:
            listed = await client.room.list_participants(
                api.ListParticipantsRequest(room="room-lost")
            )
        kinds = {
            p.identity: (p.kind, p.attributes.get("lk.agent.name")) for p in listed.participants
        }
        assert kinds == {
            "caller-1": (Kind.STANDARD, None),
            new_agent.identity: (Kind.AGENT, TONE_AGENT),
        }
        assert survivor.alive()
        print(
            f"re-dispatch: kill -> agent left {left.at - killed_at:.2f}s, "
            f"-> new job assigned {record.at - killed_at:.2f}s, "
            f"-> new agent joined {joined.at - killed_at:.2f}s"
        )
