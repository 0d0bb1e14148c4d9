"""What the playground's call asks of LiveKit and the backend: the scenario check, then a fresh
room, an explicit dispatch of AGENT_NAME into it and a participant token for the page.

Rule: the API secret stays here: the page gets a participant token for one fresh room, never
the key or the secret. The agent is dispatched explicitly (AGENT_NAME) with valid job metadata,
as the platform's server does. Every wait on LiveKit and the backend is bounded by
`UPSTREAM_TIMEOUT`: a silent upstream is a 504, an unreachable or garbled one a 502, an unknown
scenario a 404 (each an `UpstreamError` whose text says what to fix and names the URL, never a
key), all before anything is dispatched.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import aiohttp
from google.protobuf.message import DecodeError
from livekit import api

from agent.backend.http import HttpBackend
from agent.backend.protocol import BackendError, BackendMisconfigured
from agent.config import Settings
from agent.log import get_logger
from agent.models import JobMetadata
from agent.prompts import PROMPTS_DIR, scenario_ids

log = get_logger(__name__)

PLAYGROUND_USER_ID: Final = "playground"
TOKEN_TTL_SECONDS: Final = 3600
# The longest the playground waits on LiveKit's dispatch or the backend's scenario: a few
# seconds, and under livekit-api's 5 s failover floor, so its client makes one attempt (with
# failover it would make three, each with its own timeout, plus region look-ups).
UPSTREAM_TIMEOUT: Final = 4.0


@dataclass(frozen=True)
class CallGrant:
    """What the page needs to join: never the API key or secret."""

    url: str
    token: str
    room: str
    identity: str
    agent_name: str

    def to_json(self) -> dict[str, str]:
        return {
            "url": self.url,
            "token": self.token,
            "room": self.room,
            "identity": self.identity,
            "agentName": self.agent_name,
        }


def http_url(livekit_url: str) -> str:
    """The twirp API lives on the same host as the signal URL, over http(s)."""
    return re.sub(r"^ws", "http", livekit_url)


def participant_token(settings: Settings, identity: str, room: str) -> str:
    return (
        api.AccessToken(settings.livekit_api_key, settings.livekit_api_secret.get_secret_value())
        .with_identity(identity)
        .with_name("playground")
        .with_ttl(timedelta(seconds=TOKEN_TTL_SECONDS))
        .with_grants(
            api.VideoGrants(
                room_join=True,
                room=room,
                can_publish=True,
                can_subscribe=True,
                can_publish_data=True,
            )
        )
        .to_jwt()
    )


class UpstreamError(Exception):
    """LiveKit or the backend did not do what the call needs; `status` is the playground's
    answer (404 unknown scenario, 502 unreachable or garbled, 504 silent), the text says what
    to fix and names the URL (never a key)."""

    def __init__(self, status: int, text: str) -> None:
        self.status = status
        super().__init__(text)


def _garbled(where: str, room: str) -> UpstreamError:
    log.warning("playground.dispatch_garbled", room=room)
    return UpstreamError(
        502,
        f"{where} answered the dispatch with something that is not a dispatch: is LIVEKIT_URL "
        "a LiveKit server (not a proxy or another service)?",
    )


async def start_call(
    settings: Settings,
    scenario_id: str,
    timeout: float = UPSTREAM_TIMEOUT,
    *,
    record: bool = False,
) -> CallGrant:
    """A fresh room, an explicit dispatch of AGENT_NAME into it, and a token for the page;
    `record` is the job metadata's consent to record the call (the page's checkbox). Raises
    `UpstreamError` (after at most `timeout` seconds) when LiveKit does not dispatch."""
    suffix = uuid.uuid4().hex[:10]
    room = f"playground-{suffix}"
    identity = f"playground-user-{suffix}"
    agent_name = settings.agent_name_or_default
    metadata = JobMetadata.model_validate(
        {
            "scenarioId": scenario_id,
            "userId": PLAYGROUND_USER_ID,
            "participantIdentity": identity,
            "record": record,
        }
    )
    where = f"LiveKit at LIVEKIT_URL {settings.livekit_url}"
    request = api.CreateAgentDispatchRequest(
        agent_name=agent_name, room=room, metadata=json.dumps(metadata.to_wire())
    )
    try:
        # The session's timeout only decides livekit-api's failover: its twirp client passes
        # a per-request timeout of None, which aiohttp reads as "none", so the bound is ours.
        async with (
            asyncio.timeout(timeout),
            api.LiveKitAPI(
                http_url(settings.livekit_url),
                settings.livekit_api_key,
                settings.livekit_api_secret.get_secret_value(),
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as lkapi,
        ):
            dispatch = await lkapi.agent_dispatch.create_dispatch(request)
    except TimeoutError:  # before OSError: it is one
        log.warning("playground.dispatch_timeout", room=room, timeout=timeout)
        raise UpstreamError(
            504, f"{where} did not answer the dispatch within {timeout:g} s: is it up?"
        ) from None
    except api.TwirpError as error:
        log.warning("playground.dispatch_failed", status=error.status, code=error.code)
        raise UpstreamError(
            502, f"{where} refused the dispatch ({error.status} {error.code})"
        ) from None
    except (aiohttp.ClientError, OSError) as error:
        log.warning("playground.livekit_unreachable", error_type=type(error).__name__)
        raise UpstreamError(
            502, f"{where} is unreachable ({type(error).__name__}): is the URL right and it up?"
        ) from None
    except DecodeError:  # a 200 whose body is not protobuf: a proxy's page, another service
        raise _garbled(where, room) from None
    if not dispatch.id:  # an empty 200 decodes as an empty dispatch: nothing was dispatched
        raise _garbled(where, room)
    log.info("playground.dispatched", room=room, dispatch_id=dispatch.id, agent_name=agent_name)
    return CallGrant(
        settings.livekit_url,
        participant_token(settings, identity, room),
        room,
        identity,
        agent_name,
    )


async def check_scenario(settings: Settings, scenario_id: str, timeout: float) -> None:
    """Raises `UpstreamError` (404) for a scenario the agent would not find: not in
    prompts/scenarios/ without a backend, not at BACKEND_URL with one (asked within
    `timeout`). The page would otherwise wait for an agent that never comes."""
    if not settings.has_backend or settings.internal_service_key is None:
        known = scenario_ids(PROMPTS_DIR)
        if scenario_id not in known:
            there = ", ".join(known) or "none"
            raise UpstreamError(
                404, f"no scenario {scenario_id!r} in prompts/scenarios/ (there: {there})"
            )
        return
    where = f"the backend at BACKEND_URL {settings.backend_url}"
    # the backend client's own bounds are longer than ours, so ours is the one that fires
    slack = timeout + 1
    try:
        async with (
            asyncio.timeout(timeout),
            HttpBackend(
                str(settings.backend_url),
                settings.internal_service_key,
                timeout=slack,
                default_deadline=slack,
            ) as backend,
        ):
            await backend.get_scenario(scenario_id)
    except TimeoutError:
        log.warning("playground.scenario_timeout", timeout=timeout)
        raise UpstreamError(
            504, f"{where} did not give scenario {scenario_id!r} within {timeout:g} s: is it up?"
        ) from None
    except BackendMisconfigured as error:
        if error.status == 404:
            raise UpstreamError(
                404, f"{where} has no scenario {scenario_id!r} (404; or BACKEND_URL is wrong)"
            ) from None
        raise UpstreamError(502, f"{where}: {error}") from None
    except BackendError as error:
        raise UpstreamError(
            502, f"{where} did not give scenario {scenario_id!r}: {error}"
        ) from None
