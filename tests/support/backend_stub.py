"""A stand-in for the platform backend's internal API, on loopback, with fault injection.

Rule: it behaves like the real backend where the contract says how (the key checked with
`hmac.compare_digest`, request bodies validated with the JSON Schemas written by hand from
DESIGN.md in tests/contract/ (never with agent.models, so a drift of our models cannot pass
unseen), Idempotency-Key replays, transcript ranking, 409 for an equal or better transcript) and
it records every request, so tests assert on what actually went over the wire. It is test
infrastructure: no auth on `/_control`.

Internal API (every request needs `X-Internal-Service-Key`, else 401):
- `GET  /api/internal/scenarios/{scenarioId}` -> Scenario (404 unknown). The bundled `default`
  scenario is always there.
- `POST /api/internal/sessions` (`Idempotency-Key: create:{roomSid}` required, body
  SessionCreate) -> 201 Session; one session per key (the same room sid answers the same
  session and attemptNumber, as for a job re-dispatched into its room); attemptNumber counts
  per (userId, scenarioId); 403 when a registered assignment belongs to another user. Every
  session answer carries `heldTurns`, the turnCount of the best transcript held for its attempt
  now (0 when none): a repeated create is answered afresh, never replayed, or a re-dispatched
  job would read a stale 0 and start the call over.
- `GET  /api/internal/sessions/{sessionId}` -> Session with `heldTurns` (404 unknown).
- `POST /api/internal/sessions/{sessionId}/transcript` (`Idempotency-Key` = sha256 hex of
  `sessionId|attemptNumber|source|complete|turnCount`, checked; body TranscriptPayload, where
  `source` may also be `browser`) -> 201 stored, or 409 when the stub holds an equal or better
  transcript (agent over browser, complete over incomplete, then higher turnCount); 404 unknown
  session, 422 wrong attemptNumber.
- `PUT  /api/internal/sessions/{sessionId}/recording?attemptNumber=N&part=K` (`Content-Type:
  audio/ogg`, `Idempotency-Key` = sha256 hex of the body, checked; the body an Ogg stream, at
  most 64 MiB, else 413) -> 201 stored; the same key again replays 201; another body for a part
  already held -> 409; 404 unknown session, 422 wrong attemptNumber, a part below 1, a bad key
  or a body that is not Ogg; 400 when a query value is not a positive integer.
- `GET  /api/internal/sessions/{sessionId}/transcript?attemptNumber=N` -> 200 the best
  transcript held for that attempt, as it was received (by the ranking above), or 404 when
  none is held; 400 when attemptNumber is missing or not a positive integer.
Bad bodies get 422 `{"error": "invalid_body", "message": "field.path: msg; ..."}`. A repeated
Idempotency-Key with the same body replays the stored response; with a different body, 422.

Faults (per route, consumed in order, before normal handling but after the key check): see
`Fault`. Routes: `get_scenario`, `create_session`, `get_session`, `post_transcript`,
`get_transcript`, `put_recording`.

Down mode: `await stub.stop()` closes the API listener and its connections (clients get
connection refused); `await stub.start()` listens again on the same port.

Control endpoints (JSON; served on the API port and, when `control_port` is given, on a separate
listener that stays up while the API is down):
- `GET    /_control/health`                 -> `{"ok": true, "down": bool, "port": N}`
- `POST   /_control/faults`                 body `{"route", "status"?, "json"?, "text"?,
                                            "delay"?, "headers"?, "oversize"?, "chunked"?,
                                            "contentType"?, "times"?}`
                                            queues `times` (default 1) copies of the fault
- `DELETE /_control/faults`                 clears every queue
- `POST   /_control/down`, `/_control/up`   stop / restart the API listener (same port)
- `GET    /_control/requests`               recorded requests; the key header is replaced by
                                            `keyOk` (true when it matched)
- `GET    /_control/sessions`               every session
- `POST   /_control/sessions`               body Session: add one (e.g. the sessionId a job's
                                            metadata will carry)
- `GET    /_control/transcripts`            `{sessionId: [{"source", "idempotencyKey",
                                            "transcript"}...]}` in acceptance order
- `GET    /_control/transcripts/{sessionId}` the accepted transcripts of one session
- `GET    /_control/recordings`             `{sessionId: [{"attemptNumber", "part",
                                            "idempotencyKey", "size", "sha256"}...]}`
- `GET    /_control/recordings/{sessionId}/{attemptNumber}/{part}` the bytes held (audio/ogg)
- `POST   /_control/scenarios`              body Scenario: add or replace a scenario
- `POST   /_control/assignments`            body `{"assignmentId", "userId"}`: owner for 403s
- `POST   /_control/reset`                  forget requests, faults, sessions and transcripts

Standalone: `python -m tests.support.backend_stub --port N --key K [--control-port M]
[--host H]` (the key may come from BACKEND_STUB_KEY instead). Once listening it prints one JSON
line `{"url", "port", "controlPort"}` to stdout; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import json
import os
import signal
import sys
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import ValidationError

from agent.models import Scenario, Session, TranscriptPayload
from agent.prompts import DEFAULT_SCENARIO_ID, load_scenario
from tests.contract.oracle import Body, contract_errors

KEY_HEADER = "X-Internal-Service-Key"
IDEMPOTENCY_HEADER = "Idempotency-Key"
Route = Literal[
    "get_scenario",
    "create_session",
    "get_session",
    "post_transcript",
    "get_transcript",
    "put_recording",
]
ROUTES: tuple[Route, ...] = (
    "get_scenario",
    "create_session",
    "get_session",
    "post_transcript",
    "get_transcript",
    "put_recording",
)
# The contract's bound on a recording's body (DESIGN.md: "at most 64 MiB").
MAX_RECORDING_BYTES = 64 * 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Fault:
    """The next answer of one route.

    - only `delay`: a stall; after the delay the request is handled normally (a client with a
      shorter timeout gives up first).
    - `status` and/or a body (`json`, `text` served raw, e.g. invalid JSON, or `oversize`: a
      valid JSON body of that many bytes) with optional `headers` (e.g. Retry-After): answered
      as given after `delay`; the status defaults to 200 when only a body is given.
    - `chunked`: send the body with chunked transfer encoding (no Content-Length), so a client
      can only find out the size by reading.
    - `content_type`: the answer's Content-Type (e.g. `text/html` for a proxy's login page on
      200; `text=""` gives an empty body, as for 204).
    """

    status: int | None = None
    json: Any = None
    text: str | None = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    oversize: int | None = None
    chunked: bool = False
    content_type: str = "application/json"

    @property
    def answers(self) -> bool:
        return (
            self.status is not None
            or self.json is not None
            or self.text is not None
            or self.oversize is not None
        )

    def response(self) -> web.Response:
        status = 200 if self.status is None else self.status
        if self.oversize is not None:
            padding = max(0, self.oversize - len('{"padding":""}'))
            body = ('{"padding":"' + "x" * padding + '"}').encode()
        elif self.text is not None:
            body = self.text.encode()
        elif self.json is not None:
            body = json.dumps(self.json).encode()
        else:
            body = json.dumps({"error": f"injected {status}"}).encode()
        response = web.Response(
            status=status, body=body, content_type=self.content_type, headers=self.headers
        )
        if self.chunked:
            response.enable_chunked_encoding()
        return response


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    route: str
    headers: dict[str, str]
    json: Any
    key_ok: bool
    size: int = 0  # bytes of the body as received

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)

    def to_control(self) -> dict[str, Any]:
        headers = {k: v for k, v in self.headers.items() if k.lower() != KEY_HEADER.lower()}
        return {
            "method": self.method,
            "path": self.path,
            "route": self.route,
            "headers": headers,
            "json": self.json,
            "keyOk": self.key_ok,
            "size": self.size,
        }


@dataclass(frozen=True)
class StoredTranscript:
    source: str
    idempotency_key: str
    body: dict[str, Any]  # as received, already checked against the contract

    @property
    def payload(self) -> TranscriptPayload:
        """The body parsed with our model: a convenience for tests, not the validation."""
        return TranscriptPayload.model_validate({**self.body, "source": "agent"})

    @property
    def rank(self) -> tuple[bool, bool, int]:
        return (self.source == "agent", bool(self.body["complete"]), int(self.body["turnCount"]))

    def to_control(self) -> dict[str, Any]:
        wire = {**self.body, "source": self.source}
        return {"source": self.source, "idempotencyKey": self.idempotency_key, "transcript": wire}


@dataclass(frozen=True)
class StoredRecording:
    attempt_number: int
    part: int
    idempotency_key: str
    body: bytes

    def to_control(self) -> dict[str, Any]:
        return {
            "attemptNumber": self.attempt_number,
            "part": self.part,
            "idempotencyKey": self.idempotency_key,
            "size": len(self.body),
            "sha256": hashlib.sha256(self.body).hexdigest(),
        }


def expected_transcript_key(session_id: str, data: dict[str, Any]) -> str:
    """The contract's key, computed here independently of agent.backend on purpose."""
    complete = "true" if data["complete"] else "false"
    material = (
        f"{session_id}|{data['attemptNumber']}|{data['source']}|{complete}|{data['turnCount']}"
    )
    return hashlib.sha256(material.encode()).hexdigest()


def _error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


def _describe(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in item['loc']) or '(root)'}: {item['msg']}"
        for item in error.errors(include_input=False, include_url=False)
    )


class _InvalidBody(Exception):
    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


def _check(body: Body, data: Any) -> dict[str, Any]:
    """`data` if it follows the contract schema (tests/contract/), else 422 naming each problem."""
    problems = contract_errors(body, data)
    if problems:
        raise _InvalidBody("; ".join(problems[:20]))
    assert isinstance(data, dict)
    return data


class BackendStub:
    def __init__(
        self,
        key: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        control_port: int | None = None,
        scenarios: list[Scenario] | None = None,
    ) -> None:
        self.key = key
        self.host = host
        self.port = port
        self.control_port = control_port
        self.scenarios: dict[str, Scenario] = {}
        for scenario in [load_scenario(DEFAULT_SCENARIO_ID), *(scenarios or [])]:
            self.scenarios[scenario.id] = scenario
        self.sessions: dict[str, Session] = {}
        self.created: dict[str, str] = {}  # create key (`create:{roomSid}`) -> session id
        self.assignments: dict[str, str] = {}  # assignmentId -> owning userId
        self.transcripts: dict[str, list[StoredTranscript]] = defaultdict(list)
        self.recordings: dict[str, list[StoredRecording]] = defaultdict(list)
        self.requests: list[RecordedRequest] = []
        self.faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._replays: dict[tuple[str, str], tuple[str, int, Any]] = {}
        self._api: web.AppRunner | None = None
        self._control: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def down(self) -> bool:
        return self._api is None

    async def __aenter__(self) -> BackendStub:
        await self.start()
        if self.control_port is not None:
            self._control = await self._listen(self._control_app(), self.control_port)
            self.control_port = self._control.addresses[0][1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Listen for the internal API (again), on the same port as before."""
        if self._api is None:
            self._api = await self._listen(self._api_app(), self.port)
            self.port = self._api.addresses[0][1]

    async def stop(self) -> None:
        """Close the API listener and its open connections: clients get connection refused."""
        runner, self._api = self._api, None
        if runner is not None:
            await runner.cleanup()

    async def close(self) -> None:
        await self.stop()
        runner, self._control = self._control, None
        if runner is not None:
            await runner.cleanup()

    async def _listen(self, app: web.Application, port: int) -> web.AppRunner:
        # handler_cancellation: a stalled handler ends when its client gives up, so stop()
        # and teardown never wait out an injected delay.
        runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None
        )
        await runner.setup()
        await web.TCPSite(runner, self.host, port).start()
        return runner

    def _api_app(self) -> web.Application:
        # room for a recording at the bound and over it (the handler answers 413 itself)
        app = web.Application(client_max_size=MAX_RECORDING_BYTES + (1 << 20))
        app.add_routes(
            [
                web.get(
                    "/api/internal/scenarios/{id}", self._wrap("get_scenario", self._get_scenario)
                ),
                web.post(
                    "/api/internal/sessions", self._wrap("create_session", self._create_session)
                ),
                web.get(
                    "/api/internal/sessions/{id}", self._wrap("get_session", self._get_session)
                ),
                web.post(
                    "/api/internal/sessions/{id}/transcript",
                    self._wrap("post_transcript", self._post_transcript),
                ),
                web.get(
                    "/api/internal/sessions/{id}/transcript",
                    self._wrap("get_transcript", self._get_transcript),
                ),
                web.put(
                    "/api/internal/sessions/{id}/recording",
                    self._wrap("put_recording", self._put_recording),
                ),
            ]
        )
        self._add_control_routes(app)
        return app

    def _control_app(self) -> web.Application:
        app = web.Application()
        self._add_control_routes(app)
        return app

    # ------------------------------------------------------------------ helpers for tests

    def queue(self, route: Route, *faults: Fault) -> None:
        self.faults[route].extend(faults)

    def add_session(self, session: Session) -> Session:
        self.sessions[session.id] = session
        return session

    def requests_for(self, route: Route) -> list[RecordedRequest]:
        return [r for r in self.requests if r.route == route]

    def best_transcript(
        self, session_id: str, attempt_number: int | None = None
    ) -> StoredTranscript | None:
        """The best transcript held (of one attempt when `attempt_number` is given)."""
        held = [
            t
            for t in self.transcripts.get(session_id) or []
            if attempt_number is None or t.body["attemptNumber"] == attempt_number
        ]
        return max(held, key=lambda t: t.rank, default=None)

    def reset(self) -> None:
        self.sessions.clear()
        self.created.clear()
        self.transcripts.clear()
        self.recordings.clear()
        self.requests.clear()
        self.faults.clear()
        self._replays.clear()

    # ------------------------------------------------------------------ the internal API

    def _wrap(
        self, route: Route, handler: Callable[[web.Request, Any], Awaitable[web.Response]]
    ) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            data: Any = None
            parse_error: str | None = None
            if route == "put_recording":
                data = raw  # audio: the handler reads the bytes
            elif raw:
                try:
                    data = json.loads(raw)
                except ValueError as error:
                    parse_error = f"body is not JSON: {error}"
            supplied = request.headers.get(KEY_HEADER, "")
            key_ok = hmac.compare_digest(supplied.encode(), self.key.encode())
            self.requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.raw_path,  # as sent: shows the client's percent-encoding
                    route=route,
                    headers=dict(request.headers),
                    json=None if route == "put_recording" else data,
                    key_ok=key_ok,
                    size=len(raw),
                )
            )
            if not key_ok:
                return _error(401, "unauthorized", f"missing or wrong {KEY_HEADER}")
            queued = self.faults.get(route)
            if queued:
                fault = queued.popleft()
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.answers:
                    return fault.response()
            if parse_error is not None:
                return _error(400, "invalid_json", parse_error)
            try:
                return await self._idempotent(request, route, data, handler)
            except _InvalidBody as error:
                return _error(422, "invalid_body", error.message)

        return handle

    async def _idempotent(
        self,
        request: web.Request,
        route: Route,
        data: Any,
        handler: Callable[[web.Request, Any], Awaitable[web.Response]],
    ) -> web.Response:
        if request.method != "POST" or route == "create_session":
            # a create is idempotent by its room key in the handler itself (the contract), and
            # its `heldTurns` must be the current count, not the first answer's
            return await handler(request, data)
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if not key:
            return _error(400, "idempotency_key_required", f"{IDEMPOTENCY_HEADER} is required")
        fingerprint = json.dumps(data, sort_keys=True)
        stored = self._replays.get((request.path, key))
        if stored is not None:
            if stored[0] != fingerprint:
                return _error(422, "idempotency_key_reused", "same key, different body")
            return web.json_response(stored[2], status=stored[1])
        response = await handler(request, data)
        # Only successes are replayed: a 404 or 409 may not hold once the state has changed.
        if 200 <= response.status < 300:
            body = json.loads(response.body) if isinstance(response.body, bytes) else None
            self._replays[(request.path, key)] = (fingerprint, response.status, body)
        return response

    async def _get_scenario(self, request: web.Request, _data: Any) -> web.Response:
        scenario = self.scenarios.get(request.match_info["id"])
        if scenario is None:
            return _error(404, "not_found", f"no scenario {request.match_info['id']!r}")
        return web.json_response(scenario.to_wire())

    async def _create_session(self, request: web.Request, data: Any) -> web.Response:
        key = request.headers.get(IDEMPOTENCY_HEADER, "")
        if not key.startswith("create:") or len(key) == len("create:"):
            return _error(422, "invalid_idempotency_key", "expected create:{roomSid}")
        body = _check("session_create", data)
        # One session per room: a job re-dispatched into the room (same key) gets the same
        # session and attempt. Stated here, not left to the replay cache: it is the contract.
        existing = self.sessions.get(self.created.get(key, ""))
        if existing is not None:
            return web.json_response(self._session_answer(existing), status=201)
        user_id, scenario_id = body["userId"], body["scenarioId"]
        assignment_id = body.get("assignmentId")
        if assignment_id is not None:
            owner = self.assignments.get(assignment_id)
            if owner is not None and owner != user_id:
                return _error(403, "forbidden", "the user does not own this assignment")
        attempts = [
            s.attempt_number
            for s in self.sessions.values()
            if s.user_id == user_id and s.scenario_id == scenario_id
        ]
        session_id = f"sess-{next(self._ids)}"
        while session_id in self.sessions:  # a test may have added one by hand
            session_id = f"sess-{next(self._ids)}"
        session = Session(
            id=session_id,
            user_id=user_id,
            scenario_id=scenario_id,
            attempt_number=max(attempts, default=0) + 1,
            assignment_id=assignment_id,
        )
        self.sessions[session.id] = session
        self.created[key] = session.id
        return web.json_response(self._session_answer(session), status=201)

    async def _get_session(self, request: web.Request, _data: Any) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            return _error(404, "not_found", f"no session {request.match_info['id']!r}")
        return web.json_response(self._session_answer(session))

    def _session_answer(self, session: Session) -> dict[str, Any]:
        held = self.best_transcript(session.id, session.attempt_number)
        return {**session.to_wire(), "heldTurns": held.body["turnCount"] if held else 0}

    async def _post_transcript(self, request: web.Request, data: Any) -> web.Response:
        session_id = request.match_info["id"]
        session = self.sessions.get(session_id)
        if session is None:
            return _error(404, "not_found", f"no session {session_id!r}")
        # The contract is the agent's copy; the browser's has the same shape.
        source = data.get("source") if isinstance(data, dict) else None
        body = _check("transcript", {**data, "source": "agent"} if source == "browser" else data)
        # What a schema cannot say, from the text: seq runs 1..n, turnCount = number of turns.
        turns = body["turns"]
        if [turn["seq"] for turn in turns] != list(range(1, len(turns) + 1)):
            raise _InvalidBody("turns: seq must run 1..n without gaps")
        if body["turnCount"] != len(turns):
            raise _InvalidBody("turnCount: must equal the number of turns")
        if body["attemptNumber"] != session.attempt_number:
            raise _InvalidBody(
                f"attemptNumber: {body['attemptNumber']} is not the session's attempt "
                f"{session.attempt_number}"
            )
        key = request.headers.get(IDEMPOTENCY_HEADER, "")
        expected = expected_transcript_key(session_id, data)
        if not hmac.compare_digest(key, expected):
            return _error(
                422,
                "invalid_idempotency_key",
                "expected sha256(sessionId|attemptNumber|source|complete|turnCount)",
            )
        incoming = StoredTranscript(source=str(source), idempotency_key=key, body=data)
        best = self.best_transcript(session_id)
        if best is not None and best.rank >= incoming.rank:
            return _error(409, "already_delivered", "an equal or better transcript is held")
        self.transcripts[session_id].append(incoming)
        return web.json_response({"sessionId": session_id, "stored": True}, status=201)

    def recording(self, session_id: str, attempt_number: int, part: int) -> bytes | None:
        held = self.recordings.get(session_id) or []
        return next(
            (r.body for r in held if (r.attempt_number, r.part) == (attempt_number, part)), None
        )

    async def _put_recording(self, request: web.Request, body: bytes) -> web.Response:
        session_id = request.match_info["id"]
        query = {}
        for name in ("attemptNumber", "part"):
            value = request.query.get(name, "")
            if not value.isascii() or not value.isdigit():
                return _error(400, "invalid_query", f"{name} must be a positive integer")
            query[name] = int(value)
        content_type = request.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() != "audio/ogg":
            return _error(415, "unsupported_media_type", "Content-Type must be audio/ogg")
        if len(body) > MAX_RECORDING_BYTES:
            return _error(413, "too_large", "a recording is at most 64 MiB")
        session = self.sessions.get(session_id)
        if session is None:
            return _error(404, "not_found", f"no session {session_id!r}")
        if query["attemptNumber"] != session.attempt_number or query["part"] < 1:
            raise _InvalidBody("attemptNumber or part: not the session's attempt, or below 1")
        key = request.headers.get(IDEMPOTENCY_HEADER, "")
        # the contract's key, computed here from the bytes received
        if not hmac.compare_digest(key, hashlib.sha256(body).hexdigest()):
            raise _InvalidBody("Idempotency-Key: expected the sha256 hex digest of the body")
        if not body.startswith(b"OggS"):
            raise _InvalidBody("body: not an Ogg stream")
        answer = {"sessionId": session_id, "part": query["part"], "stored": True}
        for held in self.recordings[session_id]:
            if (held.attempt_number, held.part) != (query["attemptNumber"], query["part"]):
                continue
            if held.idempotency_key == key:
                return web.json_response(answer, status=201)  # a replay
            return _error(409, "already_held", "another recording is held for this part")
        self.recordings[session_id].append(
            StoredRecording(query["attemptNumber"], query["part"], key, body)
        )
        return web.json_response(answer, status=201)

    async def _get_transcript(self, request: web.Request, _data: Any) -> web.Response:
        session_id = request.match_info["id"]
        attempt = request.query.get("attemptNumber", "")
        if not attempt.isascii() or not attempt.isdigit() or int(attempt) < 1:
            return _error(400, "invalid_query", "attemptNumber must be a positive integer")
        best = self.best_transcript(session_id, int(attempt))
        if best is None:
            return _error(404, "not_found", "no transcript held for this attempt")
        return web.json_response(best.to_control()["transcript"])

    # ------------------------------------------------------------------ control

    def _add_control_routes(self, app: web.Application) -> None:
        app.add_routes(
            [
                web.get("/_control/health", self._c_health),
                web.post("/_control/faults", self._c_queue_fault),
                web.delete("/_control/faults", self._c_clear_faults),
                web.post("/_control/down", self._c_down),
                web.post("/_control/up", self._c_up),
                web.get("/_control/requests", self._c_requests),
                web.get("/_control/sessions", self._c_sessions),
                web.post("/_control/sessions", self._c_add_session),
                web.get("/_control/transcripts", self._c_transcripts),
                web.get("/_control/transcripts/{id}", self._c_session_transcripts),
                web.get("/_control/recordings", self._c_recordings),
                web.get("/_control/recordings/{id}/{attempt}/{part}", self._c_recording),
                web.post("/_control/scenarios", self._c_add_scenario),
                web.post("/_control/assignments", self._c_add_assignment),
                web.post("/_control/reset", self._c_reset),
            ]
        )

    async def _c_health(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "down": self.down, "port": self.port})

    async def _c_queue_fault(self, request: web.Request) -> web.Response:
        data = await request.json()
        route = data.get("route")
        if route not in ROUTES:
            return _error(422, "invalid_route", f"route must be one of {', '.join(ROUTES)}")
        fault = Fault(
            status=data.get("status"),
            json=data.get("json"),
            text=data.get("text"),
            delay=float(data.get("delay", 0.0)),
            headers={str(k): str(v) for k, v in (data.get("headers") or {}).items()},
            oversize=data.get("oversize"),
            chunked=bool(data.get("chunked", False)),
            content_type=str(data.get("contentType", "application/json")),
        )
        times = int(data.get("times", 1))
        self.queue(route, *([fault] * times))
        return web.json_response({"queued": len(self.faults[route])})

    async def _c_clear_faults(self, _request: web.Request) -> web.Response:
        self.faults.clear()
        return web.json_response({"ok": True})

    async def _c_down(self, _request: web.Request) -> web.Response:
        # Stopping the listener this request arrived on would cut our own answer: answer first,
        # stop in a task (kept referenced so it is not collected half-way).
        task = asyncio.get_running_loop().create_task(self._stop_soon())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response({"down": True})

    async def _stop_soon(self) -> None:
        await asyncio.sleep(0.05)
        await self.stop()

    async def _c_up(self, _request: web.Request) -> web.Response:
        await self.start()
        return web.json_response({"down": False, "port": self.port})

    async def _c_requests(self, _request: web.Request) -> web.Response:
        return web.json_response([r.to_control() for r in self.requests])

    async def _c_sessions(self, _request: web.Request) -> web.Response:
        return web.json_response([s.to_wire() for s in self.sessions.values()])

    async def _c_add_session(self, request: web.Request) -> web.Response:
        try:
            session = Session.model_validate(await request.json())
        except ValidationError as error:
            return _error(422, "invalid_body", _describe(error))
        self.add_session(session)
        return web.json_response(session.to_wire(), status=201)

    async def _c_transcripts(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {sid: [t.to_control() for t in held] for sid, held in self.transcripts.items()}
        )

    async def _c_session_transcripts(self, request: web.Request) -> web.Response:
        held = self.transcripts.get(request.match_info["id"]) or []
        return web.json_response([t.to_control() for t in held])

    async def _c_recordings(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {sid: [r.to_control() for r in held] for sid, held in self.recordings.items()}
        )

    async def _c_recording(self, request: web.Request) -> web.Response:
        info = request.match_info
        body = self.recording(info["id"], int(info["attempt"]), int(info["part"]))
        if body is None:
            return _error(404, "not_found", "no recording held for this part")
        return web.Response(body=body, content_type="audio/ogg")

    async def _c_add_scenario(self, request: web.Request) -> web.Response:
        try:
            scenario = Scenario.model_validate(await request.json())
        except ValidationError as error:
            return _error(422, "invalid_body", _describe(error))
        self.scenarios[scenario.id] = scenario
        return web.json_response(scenario.to_wire(), status=201)

    async def _c_add_assignment(self, request: web.Request) -> web.Response:
        data = await request.json()
        self.assignments[str(data["assignmentId"])] = str(data["userId"])
        return web.json_response({"ok": True}, status=201)

    async def _c_reset(self, _request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})


# --------------------------------------------------------------------------- standalone


async def serve(stub: BackendStub) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    async with stub:
        ready = {"url": stub.url, "port": stub.port, "controlPort": stub.control_port}
        print(json.dumps(ready), flush=True)
        await stopping.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Backend internal-API stub (tests only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--key", default=os.environ.get("BACKEND_STUB_KEY"))
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("--key (or BACKEND_STUB_KEY) is required")
    stub = BackendStub(args.key, host=args.host, port=args.port, control_port=args.control_port)
    asyncio.run(serve(stub))
    sys.exit(0)


if __name__ == "__main__":
    main()
