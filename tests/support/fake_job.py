"""A plain stand-in for the parts of `JobContext` the job start touches (ids, connect,
shutdown), for start-up tests that need no room."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class FakeRoomInfo:
    name: str = "room-1"


@dataclass
class FakeJob:
    id: str = "AJ_test1"
    metadata: str = ""
    room: FakeRoomInfo = field(default_factory=FakeRoomInfo)


@dataclass
class FakeJobContext:
    job: FakeJob = field(default_factory=FakeJob)
    connect_delay: float = 0.0
    connect_error: Exception | None = None
    connected_at: float | None = None
    shutdown_reasons: list[str] = field(default_factory=list)

    async def connect(self) -> None:
        await asyncio.sleep(self.connect_delay)
        if self.connect_error is not None:
            raise self.connect_error
        self.connected_at = time.monotonic()

    def shutdown(self, reason: str = "") -> None:
        self.shutdown_reasons.append(reason)


@dataclass
class FakeProc:
    userdata: dict[str, object] = field(default_factory=dict)


@dataclass
class FakeRoom:
    connected: bool = True

    def isconnected(self) -> bool:
        return self.connected


@dataclass
class FakeEndingJobContext(FakeJobContext):
    """With the process and room parts `on_session_end` and the call-ending code read."""

    proc: FakeProc = field(default_factory=FakeProc)
    room: FakeRoom = field(default_factory=FakeRoom)
