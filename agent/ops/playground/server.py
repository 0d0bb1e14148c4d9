"""`python -m agent playground`: a local page to talk to the agent in a browser (issue 14).

Rule: the server listens on 127.0.0.1 only (never another interface: it mints room tokens for
anyone who can reach it). Only the page this server serves may use it (`guard`: Host, Origin,
content type). The page's code (static/app.js) is the living example of the front-end contract
in the README.

This module is the routes: the page and its static files, the scenarios, the call (its
upstream side, the scenario check, the dispatch and the token, in `upstream`), and after the
call what the embedded local backend (no BACKEND_URL) holds (`delivered`): the delivered
transcript and, for a call dispatched with `record: true`, the delivered recording (its parts,
each served as audio/ogg, addressed by its position in the session's list: never a path or a
file name from the request).
"""

from __future__ import annotations

import asyncio
import re
from importlib.resources import files
from pathlib import Path
from typing import Final

from aiohttp import hdrs, web

from agent.backend.contract import RECORDING_CONTENT_TYPE, RECORDING_PATH
from agent.config import Settings
from agent.log import get_logger
from agent.ops.playground.delivered import PLAIN_ID, delivered_recording, delivered_transcript
from agent.ops.playground.guard import HOST, own_page_only
from agent.ops.playground.upstream import (
    UPSTREAM_TIMEOUT,
    UpstreamError,
    check_scenario,
    start_call,
)
from agent.prompts import PROMPTS_DIR, scenario_ids

__all__ = ["STATIC_DIR", "STATIC_FILES", "UPSTREAM_TIMEOUT", "Playground", "serve"]

log = get_logger(__name__)

STATIC_DIR: Final = Path(str(files("agent.ops.playground") / "static"))
STATIC_FILES: Final = frozenset({"app.js", "style.css", "livekit-client.umd.js"})
_SCENARIO_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# a recording part's position in the session's list (1..n), never a file name
_PART_NUMBER: Final = re.compile(r"^[1-9][0-9]{0,5}$")


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
        if not PLAIN_ID.match(session_id):
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
