"""The LiveKit server API as the watcher uses it: `ServerApi`, over `livekit.api.LiveKitAPI`.

Rule: the only module that knows the livekit-api client and its protos; it hands the loop views
(`views`), never protos. Every call is bounded by API_TIMEOUT_SECONDS (the client's own timeout
and a `wait_for` around each call) and failover is off (a self-hosted server has no other region).
An enum value a newer LiveKit adds, which this protocol version has no name for, reads as "other";
a participant that already left is not in the view. `livekit` and `aiohttp` are imported when
used, so importing the command stays light.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

from agent.ops.watch.views import DispatchView, JobStatus, ParticipantView

if TYPE_CHECKING:
    from livekit import api

AGENT_NAME_ATTRIBUTE = "lk.agent.name"  # set by livekit-agents on the agent's participant
API_TIMEOUT_SECONDS = 5.0


class ServerApi(Protocol):
    """What the loop uses of `livekit.api.LiveKitAPI` (a fake in tests)."""

    async def list_rooms(self) -> list[tuple[str, str]]: ...
    async def list_participants(self, room: str) -> list[ParticipantView]: ...
    async def list_dispatches(self, room: str) -> list[DispatchView]: ...
    async def create_dispatch(self, room: str, agent_name: str, metadata: str) -> str: ...


class LiveKitServerApi:
    """`ServerApi` over the real client; each call bounded by API_TIMEOUT_SECONDS."""

    def __init__(self, url: str, api_key: str, api_secret: str) -> None:
        import aiohttp
        from livekit import api

        # failover off: a self-hosted server has no other region to try
        self._api = api.LiveKitAPI(
            url,
            api_key,
            api_secret,
            timeout=aiohttp.ClientTimeout(total=API_TIMEOUT_SECONDS),
            failover=False,
        )

    async def _bounded(self, call: Awaitable[Any]) -> Any:
        return await asyncio.wait_for(call, API_TIMEOUT_SECONDS)

    async def list_rooms(self) -> list[tuple[str, str]]:
        from livekit import api

        response = await self._bounded(self._api.room.list_rooms(api.ListRoomsRequest()))
        return [(room.name, room.sid) for room in response.rooms]

    async def list_participants(self, room: str) -> list[ParticipantView]:
        from livekit import api

        response = await self._bounded(
            self._api.room.list_participants(api.ListParticipantsRequest(room=room))
        )
        views = (participant_view(info) for info in response.participants)
        return [view for view in views if view is not None]

    async def list_dispatches(self, room: str) -> list[DispatchView]:
        dispatches = await self._bounded(self._api.agent_dispatch.list_dispatch(room))
        return [dispatch_view(dispatch) for dispatch in dispatches]

    async def create_dispatch(self, room: str, agent_name: str, metadata: str) -> str:
        from livekit import api

        created = await self._bounded(
            self._api.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=agent_name, room=room, metadata=metadata)
            )
        )
        return str(created.id)

    async def aclose(self) -> None:
        await self._api.aclose()


def is_not_found(error: BaseException) -> bool:
    """The server's answer about a room that closed since the listing (not a failure)."""
    return getattr(error, "code", None) == "not_found" or getattr(error, "status", None) == 404


# --------------------------------------------------------------------------- from the protos

_CALLER_KINDS = frozenset({"STANDARD", "SIP"})
_JOB_STATUSES: dict[str, JobStatus] = {
    "JS_PENDING": "pending",
    "JS_RUNNING": "running",
    "JS_SUCCESS": "success",
    "JS_FAILED": "failed",
    "JS_CANCELLED": "cancelled",
}


def _enum_name(enum: Any, value: int) -> str:
    # a value a newer LiveKit added has no name here: "" (it reads as "other")
    try:
        return str(enum.Name(value))
    except ValueError:
        return ""


def participant_view(info: api.ParticipantInfo) -> ParticipantView | None:
    """None for a participant that already left (state DISCONNECTED)."""
    from livekit import api

    if info.state == api.ParticipantInfo.State.DISCONNECTED:
        return None
    kind_name = _enum_name(api.ParticipantInfo.Kind, info.kind)
    if kind_name == "AGENT":
        return ParticipantView(
            info.identity, "agent", str(info.attributes.get(AGENT_NAME_ATTRIBUTE, ""))
        )
    return ParticipantView(info.identity, "caller" if kind_name in _CALLER_KINDS else "other")


def dispatch_view(dispatch: api.AgentDispatch) -> DispatchView:
    from livekit import api

    jobs: list[JobStatus] = []
    for job in dispatch.state.jobs:
        if not job.HasField("state"):
            jobs.append("other")  # JS_PENDING is 0: an absent state must not read as pending
            continue
        jobs.append(_JOB_STATUSES.get(_enum_name(api.JobStatus, job.state.status), "other"))
    newest = dispatch.state.jobs[-1].state if dispatch.state.jobs else None
    return DispatchView(
        id=dispatch.id,
        agent_name=dispatch.agent_name,
        metadata=dispatch.metadata,
        created_at=dispatch.state.created_at / 1e9,  # the server stamps UnixNano
        deleted=dispatch.state.deleted_at != 0,
        jobs=tuple(jobs),
        job_started_at=newest.started_at / 1e9 if newest is not None else 0.0,
        job_identity=newest.participant_identity if newest is not None else "",
    )
