"""End to end: interim user text flows from the streaming STT to the data channel (issue 11,
part 4; DESIGN.md "Data channel": `{"type": "interim", "v": 1, "role": "user", "itemId",
"text"}` only when the STT streams).

The worker runs with its shipped settings (STT_MODE defaults to realtime), the caller speaks
real speech through WebRTC, and the OpenAI stub answers over its realtime transcription
WebSocket with word-by-word deltas: the caller sees interim packets for that utterance before
the user's final turn, in order (each extends the one before), and none for it after.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e import test_worker_e2e
from tests.e2e.test_worker_e2e import (
    HEARD,
    TEST_BUDGET,
    Stack,
    metadata,
    spoken_turn,
    start_call,
)

pytestmark = pytest.mark.e2e

stack = test_worker_e2e.stack  # the same stack fixture as the worker's scenarios


async def test_interim_packets_arrive_in_order_before_the_final_user_turn(stack: Stack) -> None:
    async with asyncio.timeout(TEST_BUDGET):
        await stack.start_worker()
        call = await start_call(stack, "room-interim", "caller-1", metadata())
        await spoken_turn(call, reply_seq=3)

        messages = call.caller.messages()
        user_turn = next(
            i for i, m in enumerate(messages) if m["type"] == "turn" and m["role"] == "user"
        )
        assert messages[user_turn]["text"] == HEARD
        interims = [m for m in messages if m["type"] == "interim"]
        assert interims, "the streaming STT's interim text reaches the caller"
        before = [m for m in messages[:user_turn] if m["type"] == "interim"]
        assert before == interims, "no interim packet after the final turn"
        assert all(m["v"] == 1 and m["role"] == "user" for m in interims)
        assert len({m["itemId"] for m in interims}) == 1
        texts = [m["text"] for m in interims]
        assert all(HEARD.startswith(text) for text in texts)
        assert texts == sorted(texts, key=len)
