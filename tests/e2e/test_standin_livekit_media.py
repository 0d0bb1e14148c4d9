"""The stand-in's LiveKit-like media mode (``forward_rtp`` and ``negotiate_dtx``, what
bench/bench_capacity_deployed.py's ``--sfu livekit`` runs): the answer's Opus line, written here
by hand from LiveKit's (pion's default plus DTX), and a call through the real rtc SDK in which
the agent's tone still arrives whole while its silence arrives as DTX, counted by the caller's own
WebRTC statistics, not by the stand-in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from livekit import rtc

from tests.e2e import tone_agent
from tests.e2e.conftest import Callers, _require_netns
from tests.e2e.harness import ProcessGroup, free_port
from tests.e2e.standin import StandIn, with_opus_dtx
from tests.e2e.test_standin_smoke import AGENT_NAME, near, start_tone_worker

TEST_BUDGET = 60.0
# Opus at 20 ms sends 50 packets a second; with DTX a silent track sends one every 400 ms
SILENCE_SECONDS = 2.0

ANSWER = "\r\n".join(
    [
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 0",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=20",
        "a=rtpmap:0 PCMU/8000",
        "a=fmtp:97 apt=96",
        "",
    ]
)


def test_dtx_answer_carries_livekits_opus_line_once_and_leaves_other_lines() -> None:
    sdp = with_opus_dtx(ANSWER)

    assert sdp.split("\r\n") == [
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 0",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=10;useinbandfec=1;usedtx=1",
        "a=rtpmap:0 PCMU/8000",
        "a=fmtp:97 apt=96",
        "",
    ]


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    """This module's stand-in: as LiveKit's SFU forwards and negotiates media."""
    _require_netns()
    server = StandIn(port=free_port(), forward_rtp=True, negotiate_dtx=True)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def inbound_audio(room: rtc.Room) -> tuple[int, int, int]:
    """What this participant's subscriber has received so far (WebRTC's inbound-rtp): audio
    packets, samples played out, and how many of those its jitter buffer had to conceal."""
    stats = await room.get_rtc_stats()
    inbound = [
        s.inbound_rtp for s in stats.subscriber_stats if s.WhichOneof("stats") == "inbound_rtp"
    ]
    return (
        sum(i.received.packets_received for i in inbound),
        sum(i.inbound.total_samples_received for i in inbound),
        sum(i.inbound.concealed_samples for i in inbound),
    )


@pytest.mark.e2e
async def test_forwarded_tone_arrives_whole_and_silence_arrives_as_dtx(
    standin: StandIn, processes: ProcessGroup, callers: Callers
) -> None:
    async with asyncio.timeout(TEST_BUDGET):
        await start_tone_worker(processes, standin)
        caller = await callers.join("caller-1", "room-forward", agent_name=AGENT_NAME)
        await standin.dispatch("room-forward", "{}", AGENT_NAME)

        # the greeting's tone, its Opus packets forwarded as they came: the same pitch
        greeting_at = await caller.wait_for_audio(timeout=20)
        assert near(caller.dominant_frequency(greeting_at, greeting_at + 1.0), tone_agent.TONE_HZ)

        # after the tone the agent is silent: with DTX its encoder sends a packet every 400 ms
        await asyncio.sleep(tone_agent.TONE_SECONDS + 1.0)
        before, _, _ = await inbound_audio(caller.room)
        await asyncio.sleep(SILENCE_SECONDS)
        after, samples, concealed = await inbound_audio(caller.room)

        assert before > 0
        # 100 without DTX; about 5 with it, and some slack for the SDK's comfort noise updates
        assert after - before < 30, after - before
        # the DTX frames themselves arrive: the receiver plays comfort noise, not the loss
        # concealment that a decoded and re-encoded copy's gaps cost (more than half of it)
        assert concealed < 0.1 * samples, (concealed, samples)
