"""`python -m agent watch`: re-create the dispatch of a room whose agent vanished (self-hosted
LiveKit does not re-dispatch a dead worker's job; LiveKit Cloud does, livekit/agents #1472).

Rule: the decision is a pure function of a snapshot of the server and the watcher's own small
memory (`policy.Watcher`, its six rules in `policy`'s docstring); `loop.WatchLoop` only fetches
snapshots through the LiveKit server API and carries out the decisions. One concern a module,
imports pointing one way (views <- policy, server_api <- loop <- command):

- `views`: the snapshot (rooms, participants, dispatches) and the `Decision`, plain values;
- `policy`: which rooms to re-dispatch, and the one log line a room's change is worth;
- `server_api`: the livekit-api adapter (`ServerApi`, `LiveKitServerApi`, protos to views),
  every call bounded by API_TIMEOUT_SECONDS;
- `loop`: the watch loop (a failing room is one line, a failing listing a growing pause, never a
  crash), its metrics and its health answer;
- `command`: `main`, its help, settings and logging (JSON lines, through `agent.log`).

This package re-exports what the entry point (`agent/__main__.py`) and the tests import.
"""

from __future__ import annotations

from agent.ops.watch.command import main
from agent.ops.watch.loop import (
    MAX_BACKOFF_SECONDS,
    MAX_JITTER_SECONDS,
    WatchLoop,
    WatchMetrics,
    serve_health,
)
from agent.ops.watch.policy import STARTING_LIMIT_SECONDS, Watcher
from agent.ops.watch.server_api import (
    AGENT_NAME_ATTRIBUTE,
    API_TIMEOUT_SECONDS,
    LiveKitServerApi,
    ServerApi,
    dispatch_view,
    participant_view,
)
from agent.ops.watch.views import (
    Action,
    Decision,
    DispatchView,
    JobStatus,
    ParticipantKind,
    ParticipantView,
    RoomView,
)

__all__ = [
    "AGENT_NAME_ATTRIBUTE",
    "API_TIMEOUT_SECONDS",
    "MAX_BACKOFF_SECONDS",
    "MAX_JITTER_SECONDS",
    "STARTING_LIMIT_SECONDS",
    "Action",
    "Decision",
    "DispatchView",
    "JobStatus",
    "LiveKitServerApi",
    "ParticipantKind",
    "ParticipantView",
    "RoomView",
    "ServerApi",
    "WatchLoop",
    "WatchMetrics",
    "Watcher",
    "dispatch_view",
    "main",
    "participant_view",
    "serve_health",
]
