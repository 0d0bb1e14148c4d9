"""`python -m agent playground`: a local page to talk to the agent in a browser (issue 14).

Rule: the server listens on 127.0.0.1 only (never another interface: it mints room tokens for
anyone who can reach it), and the API secret stays here: the page gets a participant token for
one fresh room, never the key or the secret. The agent is dispatched explicitly (AGENT_NAME)
with valid job metadata, as the platform's server does. The page's code (static/app.js) is the
living example of the front-end contract in the README.

Only the page this server serves may use it (`guard`: Host, Origin, content type). Every wait on
LiveKit and the backend is bounded by `UPSTREAM_TIMEOUT`: a silent upstream is a 504, an
unreachable or garbled one a 502, an unknown scenario a 404, all before anything is dispatched.

After the call the page shows what the embedded local backend (no BACKEND_URL) holds: the
delivered transcript and, for a call dispatched with `record: true`, the delivered recording
(its parts, each served as audio/ogg from LocalBackend's recordings directory, found by the
session id alone: never a path from the request).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import hdrs, web
from google.protobuf.message import DecodeError
from livekit import api

from agent.backend.contract import RECORDING_CONTENT_TYPE, RECORDING_PATH
from agent.backend.http import HttpBackend
from agent.backend.local import LocalBackend
from agent.backend.protocol import BackendError, BackendMisconfigured
from agent.config import Settings
from agent.log import get_logger
from agent.models import JobMetadata
from agent.ops.playground.guard import HOST, own_page_only
from agent.prompts import PROMPTS_DIR, scenario_ids

log = get_logger(__name__)

PLAYGROUND_USER_ID: Final = "playground"
STATIC_DIR: Final = Path(str(files("agent.ops.playground") / "static"))
STATIC_FILES: Final = frozenset({"app.js", "style.css", "livekit-client.umd.js"})
# the local backend's session ids are plain; anything else is not a file name we wrote
_PLAIN_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_SCENARIO_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
TOKEN_TTL_SECONDS: Final = 3600
# a recording part's position in the session's list (1..n), never a file name
_PART_NUMBER: Final = re.compile(r"^[1-9][0-9]{0,5}$")
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


def delivered_transcript(data_dir: Path, session_id: str) -> dict[str, Any] | None:
    """The transcript the embedded local backend holds for `session_id` (its JSON files under
    AGENT_DATA_DIR/transcripts), the highest ranked of them; None if none is there yet. A live
    call's checkpoint (`in_progress`) is not a delivered transcript: the page waits on."""
    if not _PLAIN_ID.match(session_id):
        return None
    best: tuple[tuple[bool, int], dict[str, Any]] | None = None
    for path in (data_dir / "transcripts").glob(f"{session_id}.*.json"):
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            body = stored["transcript"]
            rank = (bool(body["complete"]), int(body["turnCount"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # half written or not ours
        if body.get("endedReason") == "in_progress":
            continue
        if best is None or rank > best[0]:
            best = (rank, body)
    return None if best is None else best[1]


def delivered_recording(data_dir: Path, session_id: str) -> list[tuple[Path, int]]:
    """The recording parts the embedded local backend holds for `session_id` (plain ids only,
    as `delivered_transcript`) and their sizes, in order of attempt and part; [] when none is
    there (the call was not recorded, or its upload has not arrived yet)."""
    if not _PLAIN_ID.match(session_id):
        return []
    parts: list[tuple[Path, int]] = []
    for path in LocalBackend(data_dir).recording_paths(session_id):
        try:
            parts.append((path, path.stat().st_size))
        except OSError:
            continue  # gone since the listing
    return parts


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


class Playground:
    def __init__(self, settings: Settings, *, timeout: float = UPSTREAM_TIMEOUT) -> None:
        self.settings = settings
        self.timeout = timeout

    def app(self) -> web.Application:
        app = web.Application(middlewares=[own_page_only])
        app.add_routes(
            [
                web.get("/", self.index),
                web.get("/static/{name}", self.static),
                web.get("/api/scenarios", self.scenarios),
                web.post("/api/call", self.call),
                web.get("/api/transcript/{session_id}", self.transcript),
                web.get("/api/recording/{session_id}", self.recording),
                web.get("/api/recording/{session_id}/{part}", self.recording_part),
            ]
        )
        return app

    async def index(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        return web.FileResponse(STATIC_DIR / name)

    async def scenarios(self, _request: web.Request) -> web.Response:
        # the backend's contract has no list route: with a backend, the page asks for an id
        if self.settings.has_backend:
            return web.json_response({"source": "backend", "scenarios": []})
        return web.json_response({"source": "prompts", "scenarios": scenario_ids(PROMPTS_DIR)})

    async def call(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            scenario_id = str(body.get("scenarioId", ""))
            record = body.get("record", False)
        except (ValueError, AttributeError):
            return web.json_response({"error": "a JSON body {scenarioId} is needed"}, status=400)
        if not _SCENARIO_ID.match(scenario_id):
            return web.json_response({"error": "scenarioId is not a valid id"}, status=400)
        if not isinstance(record, bool):  # as the job metadata: a JSON boolean only
            return web.json_response({"error": "record must be true or false"}, status=400)
        try:
            await check_scenario(self.settings, scenario_id, self.timeout)
            grant = await start_call(self.settings, scenario_id, self.timeout, record=record)
        except UpstreamError as error:
            log.warning("playground.call_failed", status=error.status)
            return web.json_response({"error": str(error)}, status=error.status)
        return web.json_response(grant.to_json())

    async def transcript(self, request: web.Request) -> web.Response:
        if self.settings.has_backend:
            return web.json_response(
                {"error": "delivered to BACKEND_URL: look there", "where": "backend"}, status=404
            )
        body = delivered_transcript(self.settings.agent_data_dir, request.match_info["session_id"])
        if body is None:
            return web.json_response({"error": "not delivered yet"}, status=404)
        return web.json_response({"where": "local", "transcript": body})

    def _no_recording(self, session_id: str) -> web.Response | None:
        """The answer when the recording of `session_id` cannot be here: with BACKEND_URL it
        went to the backend; an id that is not plain is not one the local backend names."""
        if self.settings.has_backend:
            return web.json_response(
                {
                    "error": f"recordings are uploaded to the backend at BACKEND_URL (PUT "
                    f"{RECORDING_PATH}), not kept here: replay them from there",
                    "where": "backend",
                },
                status=404,
            )
        if not _PLAIN_ID.match(session_id):
            return web.json_response({"error": "not a session id"}, status=400)
        return None

    async def recording(self, request: web.Request) -> web.Response:
        """The delivered recording's parts (in order) with the URL that plays each, or a 404
        that says why there is none."""
        session_id = request.match_info["session_id"]
        refused = self._no_recording(session_id)
        if refused is not None:
            return refused
        held = await asyncio.to_thread(
            delivered_recording, self.settings.agent_data_dir, session_id
        )
        if not held:
            return web.json_response(
                {
                    "error": "no recording delivered for this session: not recorded, or not "
                    "delivered yet",
                    "where": "local",
                },
                status=404,
            )
        parts = [
            {"url": f"/api/recording/{session_id}/{number}", "bytes": size}
            for number, (_path, size) in enumerate(held, start=1)
        ]
        return web.json_response({"where": "local", "parts": parts})

    async def recording_part(self, request: web.Request) -> web.StreamResponse:
        """Part `part` (its position, 1..n, in the session's list) as audio/ogg."""
        session_id = request.match_info["session_id"]
        refused = self._no_recording(session_id)
        if refused is not None:
            return refused
        part = request.match_info["part"]
        held = await asyncio.to_thread(
            delivered_recording, self.settings.agent_data_dir, session_id
        )
        if not _PART_NUMBER.match(part) or int(part) > len(held):
            return web.json_response({"error": "no such recording part"}, status=404)
        path, _size = held[int(part) - 1]
        return web.FileResponse(
            path,
            headers={
                hdrs.CONTENT_TYPE: RECORDING_CONTENT_TYPE,
                hdrs.CACHE_CONTROL: "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )


async def serve(
    settings: Settings, port: int, *, timeout: float = UPSTREAM_TIMEOUT
) -> web.AppRunner:
    """Start the playground on 127.0.0.1:`port` (0 picks one); returns the runner (the bound
    port is `runner.addresses[0][1]`). `timeout` bounds each wait on LiveKit and the backend."""
    runner = web.AppRunner(Playground(settings, timeout=timeout).app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port).start()
    return runner
