"""An in-memory `Backend` for delivery tests: it behaves like the real backend's transcript
endpoint (keeps the best transcript per session attempt, answers 409 for an equal or worse one)
and can be switched into each failure the real client reports.

Rule: only `post_transcript` and `put_recording` are modelled (the same modes answer both);
the other Protocol methods are not part of delivery and raise if called.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

from agent.backend import (
    BackendAuthError,
    BackendRejected,
    BackendResponseInvalid,
    BackendUnavailable,
    DeliveryReceipt,
)
from agent.models import HeldTranscript, Scenario, Session, SessionCreate, TranscriptPayload

Mode = Literal["up", "down", "hang", "reject", "unauthorized", "invalid"]


@dataclass
class FakeBackend:
    mode: Mode = "up"
    # Seconds each post takes before it answers (to test leases during a slow delivery).
    delay: float = 0.0
    # Every 2xx post, in order: (session_id, payload). Duplicates would show up here.
    accepted: list[tuple[str, TranscriptPayload]] = field(default_factory=list)
    held: dict[tuple[str, int], TranscriptPayload] = field(default_factory=dict)
    posts: int = 0
    deadlines: list[float] = field(default_factory=list)
    # Every recording held: (session_id, attempt, part) -> bytes; puts counts every attempt.
    recordings: dict[tuple[str, int, int], bytes] = field(default_factory=dict)
    puts: int = 0

    async def post_transcript(
        self, session_id: str, payload: TranscriptPayload, *, deadline: float
    ) -> DeliveryReceipt:
        self.posts += 1
        await self._answer(deadline)
        key = (session_id, payload.attempt_number)
        best = self.held.get(key)
        if best is not None and (best.complete, best.turn_count) >= (
            payload.complete,
            payload.turn_count,
        ):
            return DeliveryReceipt(status="already_delivered", attempts=1)
        self.held[key] = payload
        self.accepted.append((session_id, payload))
        return DeliveryReceipt(status="delivered", attempts=1)

    async def put_recording(
        self, session_id: str, attempt_number: int, part: int, body: bytes, *, deadline: float
    ) -> DeliveryReceipt:
        self.puts += 1
        await self._answer(deadline)
        key = (session_id, attempt_number, part)
        if key in self.recordings:
            return DeliveryReceipt(status="already_delivered", attempts=1)
        self.recordings[key] = body
        return DeliveryReceipt(status="delivered", attempts=1)

    async def _answer(self, deadline: float) -> None:
        """Raise as the mode says (after `delay`); return for "up"."""
        self.deadlines.append(deadline)
        if self.delay:
            await asyncio.sleep(self.delay)
        match self.mode:
            case "down":
                raise BackendUnavailable("connection refused (fake)")
            case "hang":
                await asyncio.sleep(3600)  # a backend that ignores the deadline
                raise AssertionError("unreachable")
            case "reject":
                raise BackendRejected(422, "turns.0.text: String should have at least 1 character")
            case "unauthorized":
                raise BackendAuthError(401, "invalid internal service key")
            case "invalid":
                raise BackendResponseInvalid("response field 'ok' missing (fake)")
            case "up":
                pass

    async def get_scenario(self, scenario_id: str) -> Scenario:
        raise NotImplementedError("FakeBackend models the transcript endpoint only")

    async def create_session(self, body: SessionCreate, *, room_sid: str) -> Session:
        raise NotImplementedError("FakeBackend models the transcript endpoint only")

    async def get_transcript(self, session_id: str, attempt_number: int) -> HeldTranscript | None:
        raise NotImplementedError("FakeBackend models the transcript endpoint only")

    async def get_session(self, session_id: str) -> Session:
        raise NotImplementedError("FakeBackend models the transcript endpoint only")

    async def aclose(self) -> None:
        return None
