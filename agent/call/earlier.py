"""What the look-back at job start found for the call's session attempt (agent.call.resume).

Rule: data only, so that the call's state (`agent.call.state`) can hold it without importing
the look-back, which itself works on a `Call`: imports point one way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from agent.models import Turn, Usage

Source = Literal["journal", "backend"]


@dataclass(frozen=True, slots=True)
class Earlier:
    """What the look-back found for the call's session attempt."""

    source: Source
    complete: bool
    started_at: datetime
    turns: tuple[Turn, ...]  # seq 1..k, in order
    # the journal row it came from (None: none); the new call's row adopts it
    call_id: str | None = None
    # what the earlier runs spent (the backend's checkpoint): billed again in the final transcript
    usage: tuple[Usage, ...] = ()

    def rank(self) -> tuple[bool, int]:
        return (self.complete, len(self.turns))
