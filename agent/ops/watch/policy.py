"""The decision, per room: whether to re-create the dispatch of a room whose agent vanished.

Rule: the decision is a pure function of a snapshot of the server (rooms, participants,
dispatches) and the watcher's own small memory (when a room's agent went missing, what it
dispatched, which agents it saw), in `Watcher`; no I/O here (`loop` fetches the snapshots and
carries the decisions out). All the watcher's timing runs on the monotonic clock; the wall clock
is read only to place a server stamp on it when first seen, so a step of the wall clock changes
no decision. Per room, a new dispatch for AGENT_NAME (same metadata as the room's first live
dispatch for AGENT_NAME) is created only when all of these hold:

1. the room has a live (not deleted) dispatch for AGENT_NAME;
2. a caller is in it (a participant of kind STANDARD or SIP, not disconnected);
3. no participant of kind AGENT whose `lk.agent.name` attribute is AGENT_NAME is in it, and none
   has been for WATCH_GRACE_SECONDS as seen by this watcher (the timer resets whenever the agent is
   seen, or the caller is gone);
4. the newest dispatch's last job did not end in success (the agent ended the call on purpose);
5. no dispatch for AGENT_NAME is pending: one younger than WATCH_GRACE_SECONDS (server
   `created_at`, or when this watcher made it, whichever is younger), or one whose agent is
   starting: its newest job is JS_PENDING or JS_RUNNING, that job's agent was never seen in the
   room, and the later of the dispatch's creation and the job's start is younger than
   WATCH_GRACE_SECONDS + STARTING_LIMIT_SECONDS (a cold job process is slow to join; a dead
   worker's job stays JS_RUNNING on the server, hence the limit and the seen agents);
6. fewer than WATCH_MAX_REDISPATCH re-dispatches were made in the room: the larger of what this
   watcher made and the room's dispatches for AGENT_NAME (deleted ones too) minus the first.

Rules 5 and 6 read the server, so a second watcher sees the first one's dispatch and waits (the
loop's jitter and second look close the window in which two decide on the same snapshot). A
decision carries one log line per change of a room's state (static event names from
`_STATE_EVENTS`, room and counts as fields, never a secret), None when nothing changed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agent.ops.watch.views import Action, Decision, DispatchView, ParticipantView, RoomView

# A job whose agent has not joined yet is "starting" this long past the grace window at most: a
# job no worker takes, or one whose worker died before its agent joined, must not block the room.
STARTING_LIMIT_SECONDS = 30.0


@dataclass
class _RoomMemory:
    # all times on the monotonic clock
    missing_since: float | None = None
    ours: dict[str, float] = field(default_factory=dict)  # dispatch id -> when we made it
    stamps: dict[str, float] = field(default_factory=dict)  # server stamp -> when, fixed once
    seen_agents: set[str] = field(default_factory=set)  # identities of our agents seen here
    last_state: str | None = None
    last_detail: str | None = None  # e.g. the pending dispatch's id: a new one logs again


class Watcher:
    """The decisions, over snapshots; no I/O. `now` is this process's monotonic clock, `wall`
    its wall clock (epoch seconds), read only to place a server stamp on the monotonic clock the
    first time the stamp is seen (skew that makes a stamp look older is tolerated by rule 5 also
    using this watcher's own record of when it made a dispatch)."""

    def __init__(self, agent_name: str, *, grace: float, max_redispatch: int) -> None:
        self.agent_name = agent_name
        self.grace = grace
        self.max_redispatch = max_redispatch
        self._rooms: dict[tuple[str, str], _RoomMemory] = {}

    def forget_closed(self, listed: Iterable[tuple[str, str]]) -> None:
        """Drop the memory of rooms not listed (name, sid): a later room of that name is a new
        call. A listed room that failed this tick keeps its memory."""
        live = set(listed)
        for key in [key for key in self._rooms if key not in live]:
            del self._rooms[key]

    def record_dispatch(self, room: RoomView, dispatch_id: str, now: float) -> None:
        memory = self._memory(room)
        memory.ours[dispatch_id] = now
        memory.stamps.setdefault(dispatch_id, now)

    def needs_dispatches(self, participants: Sequence[ParticipantView]) -> bool:
        """Whether the room's dispatches matter (saves an API call per healthy room)."""
        return self._has_caller(participants) and not self._agent_present(participants)

    def decide(self, room: RoomView, now: float, wall: float) -> Decision:
        memory = self._memory(room)
        memory.seen_agents.update(p.identity for p in room.participants if self._is_ours(p))
        if not self._has_caller(room.participants):
            memory.missing_since = None
            return self._result(memory, room, "none", "no_caller")
        if self._agent_present(room.participants):
            was_missing = memory.missing_since
            memory.missing_since = None
            if was_missing is None:
                return self._result(memory, room, "none", "ok")
            return self._result(
                memory, room, "none", "ok", missing_seconds=round(now - was_missing, 1)
            )
        if room.dispatches is None:
            return self._result(memory, room, "none", "no_dispatch")
        ours = [d for d in room.dispatches if d.agent_name == self.agent_name]
        for dispatch in ours:
            self._stamp(memory, dispatch.id, dispatch.created_at, now, wall)
        live = [d for d in ours if not d.deleted]
        if not live:
            memory.missing_since = None
            return self._result(memory, room, "none", "no_dispatch")
        newest = max(live, key=lambda d: self._created(memory, d))
        if newest.jobs and newest.jobs[-1] == "success":
            memory.missing_since = None
            return self._result(memory, room, "none", "finished", dispatch_id=newest.id)

        if memory.missing_since is None:
            memory.missing_since = now
        missing = now - memory.missing_since
        if missing < self.grace:
            return self._result(memory, room, "none", "waiting_grace", grace_seconds=self.grace)
        pending = next((d for d in live if self._pending(memory, d, now, wall)), None)
        if pending is not None:
            return self._result(
                memory,
                room,
                "none",
                "dispatch_pending",
                detail=pending.id,
                dispatch_id=pending.id,
                by_this_watcher=pending.id in memory.ours,
                job_status=pending.jobs[-1] if pending.jobs else None,
            )
        made = max(len(memory.ours), len(ours) - 1)
        if made >= self.max_redispatch:
            return self._result(
                memory,
                room,
                "none",
                "cap_reached",
                redispatches=made,
                max_redispatch=self.max_redispatch,
            )
        first = min(live, key=lambda d: self._created(memory, d))
        decision = self._result(
            memory,
            room,
            "dispatch",
            "redispatch",
            missing_seconds=round(missing, 1),
            redispatches=made,
        )
        # no line yet: the loop logs `watch.redispatched` once the server has said yes
        return replace(
            decision, log_event=None, metadata=first.metadata, redispatch_number=made + 1
        )

    # ----------------------------------------------------------------- helpers

    def _memory(self, room: RoomView) -> _RoomMemory:
        return self._rooms.setdefault((room.name, room.sid), _RoomMemory())

    @staticmethod
    def _has_caller(participants: Sequence[ParticipantView]) -> bool:
        return any(p.kind == "caller" for p in participants)

    def _is_ours(self, participant: ParticipantView) -> bool:
        return participant.kind == "agent" and participant.agent_name == self.agent_name

    def _agent_present(self, participants: Sequence[ParticipantView]) -> bool:
        return any(self._is_ours(p) for p in participants)

    @staticmethod
    def _stamp(memory: _RoomMemory, key: str, stamp: float, now: float, wall: float) -> float:
        """A server stamp (epoch seconds; 0: not said, then first sight) on the monotonic clock,
        fixed when first seen; a server clock ahead of ours reads as "just now"."""
        if key not in memory.stamps:
            memory.stamps[key] = now - max(0.0, wall - stamp) if stamp else now
        return memory.stamps[key]

    @staticmethod
    def _created(memory: _RoomMemory, dispatch: DispatchView) -> float:
        return memory.stamps[dispatch.id]

    def _pending(
        self, memory: _RoomMemory, dispatch: DispatchView, now: float, wall: float
    ) -> bool:
        # the youngest of the server's stamp and our own record: skew never shortens the window
        made = max(self._created(memory, dispatch), memory.ours.get(dispatch.id, -math.inf))
        if now - made < self.grace:
            return True
        starting = (
            bool(dispatch.jobs)
            and dispatch.jobs[-1] in ("pending", "running")
            and dispatch.job_identity not in memory.seen_agents
        )
        if not starting:
            return False
        started = made
        if dispatch.job_started_at:
            key = f"{dispatch.id}/{len(dispatch.jobs)}/{dispatch.job_started_at}"
            started = max(made, self._stamp(memory, key, dispatch.job_started_at, now, wall))
        return now - started < self.grace + STARTING_LIMIT_SECONDS

    def _result(
        self,
        memory: _RoomMemory,
        room: RoomView,
        action: Action,
        state: str,
        *,
        detail: str | None = None,
        **fields: Any,
    ) -> Decision:
        changed = (state, detail) != (memory.last_state, memory.last_detail)
        previous = memory.last_state
        memory.last_state, memory.last_detail = state, detail
        event: str | None = None
        if changed and action == "none":
            if state == "ok":
                # silent for a healthy room, one line when its agent is back
                event = "watch.agent_back" if previous not in (None, "ok", "no_caller") else None
            else:
                event = _STATE_EVENTS.get(state)
        return Decision(
            room=room.name, action=action, state=state, log_event=event, fields=dict(fields)
        )


# the one line a room's change into each of these states is worth (static event names)
_STATE_EVENTS: dict[str, str] = {
    "waiting_grace": "watch.waiting_grace",
    "dispatch_pending": "watch.dispatch_pending",
    "cap_reached": "watch.cap_reached",
    "finished": "watch.finished",
}
