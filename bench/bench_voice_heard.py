"""Voice-to-voice as the caller hears it: the caller's true end of speech -> the first audible
agent audio frame at the caller, through the real worker (`python -m agent start`), the e2e
LiveKit stand-in, WebRTC/Opus both ways, and a caller on the real `livekit` rtc SDK.

Rule: prints figures and writes JSON; never asserts. It runs inside a network namespace of its
own (WebRTC media skips loopback; tests/e2e/netns.py): started outside one, it re-executes
itself through `unshare --net` (root, `unshare` and `ip` needed; otherwise it exits with the
reason and writes nothing).

The stack is the e2e layer's (tests/e2e/README.md), started as bench_capacity_deployed.py starts
it: the stand-in (in this process), the OpenAI stub (a process, timing profile `typical`: realtime
transcription final 0.15 s after its commit, LLM first token 0.35 s then 50 tokens/s, TTS first
byte 0.25 s then 2x real time; TTS audio capped at `TTS_MAX_SECONDS` per request), the backend
stub, and per arm one worker (`worker_env`, `NUM_IDLE_PROCESSES=1`; arm `shipped` = the worker's
defaults, arm `vad` = `TURN_DETECTION=vad`, `--env KEY=VALUE[,KEY=VALUE]` adds an arm with those
settings). Per arm one caller joins one room, the job is dispatched, the greeting is heard; then
the caller speaks finished utterances of the committed corpus (tests/audio/turns/, kinds
statement and question, round-robin) at real-time pace, each answered with one of two reply
shapes set on the stub (`/_control/config` "reply"; the stub's "transcript" is the utterance's
text, so the worker's LLM and TTS see realistic input):

- `short`: a short first sentence ("I hear you.") then a ~20-word sentence;
- `long`: a 29-word first sentence, its first comma after 16 words, then two more.

After each reply the caller waits until the agent's audio is over plus a 1 s gap.

- True end of speech: the moment the caller's microphone handed over the sample at the
  manifest's `end_of_speech` offset (`Caller.speak`'s start + that offset).
- First audio: the first frame the caller heard with RMS >= `DEFAULT_MIN_RMS` (tests/e2e/caller.py,
  as `wait_for_audio`), with 0.2 s of such frames from there on.
- Timeline (ms after the true end, on the stub's clocks: `/_control/realtime_events` and
  `/_control/requests`): the STT stub receiving the audio that holds the end of speech (the
  append that took the stream past its `speech_stopped` position: the media path in), the
  realtime STT's commit and final, the user turn on the data channel (as the caller received
  it), the LLM request whose reply was heard and its first token, the first TTS request after it
  and its first byte; and spans between them (media in, final -> LLM request, the first
  sentence, media out). Caller times (monotonic) are converted to wall time once per call
  (time.time() - time.monotonic()).
- LLM chat requests per answered turn: the stub's chat requests during the measured turns /
  the replies heard (issue 22: <= 1.3).
- `other_processes_cores_busy`: the machine's busy CPU over the measured turns minus that of this
  process, the stubs and the worker's whole process tree, per second.

    uv run python bench/bench_voice_heard.py [--arms shipped,vad] [--env KEY=VALUE[,KEY=VALUE]]
                                             [--repeat 8] [--json PATH] [--smoke] [--keep-logs]

(~5 min for the default two arms x 2 reply shapes x 8 replies; `--smoke`, one arm and one reply
per shape, ~35 s.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil

from agent.config import Settings
from bench._common import (
    RESULTS_DIR,
    env_overrides,
    machine_info,
    quiet_logging,
    summarize,
    write_result,
)
from bench._e2e import run_in_test_netns, stop_stack, stopped
from tests.e2e.caller import DEFAULT_MIN_RMS, Caller
from tests.e2e.harness import ProcessGroup, free_port, worker_env
from tests.e2e.standin import StandIn, participant_token
from tests.e2e.stubs import OpenAIStubProcess, start_backend_stub, start_openai_stub

AGENT_NAME: Final = "roleplay-heard"
SERVICE_KEY: Final = "bench-internal-service-key-0123456789"
CORPUS: Final = Path(__file__).resolve().parents[1] / "tests" / "audio" / "turns"
KINDS: Final = ("statement", "question")
PROFILE: Final = "typical"
TTS_MAX_SECONDS: Final = 2.0  # the stub's spoken audio per TTS request lasts at most this
GAP_AFTER_REPLY: Final = 1.0  # after the agent's audio is over, the caller waits this long
QUIET_AFTER_REPLY: Final = 0.6  # no loud frame for this long: the agent's audio is over
MIN_LOUD_SECONDS: Final = 0.2  # as Caller.wait_for_audio: a first frame followed by this much
REPLY_TIMEOUT: Final = 15.0  # true end -> first audio, at most (a missing reply is counted)
REPLY_AUDIO_TIMEOUT: Final = 30.0  # first audio -> the agent's audio over, at most
POLL: Final = 0.02
GOAL_LLM_REQUESTS_PER_TURN: Final = 1.3
# a user turn later than this after the true end waited for the model's max delay (the VAD ends
# turns at about 0.85-0.95 s as the caller receives them; the model at 0.3 s min delay alike)
HELD_AFTER_MS: Final = 1300
REPLIES: Final[dict[str, str]] = {
    # "I hear you." is one sentence, then 21 words
    "short": (
        "I hear you. Tell me a little more about what has been going on for you at home and "
        "at work this past week."
    ),
    # 29 words in the first sentence, its first comma after the 16th, then two more
    "long": (
        "I really want to understand what has been happening for you over these last few "
        "weeks, and what has made it so hard, for so long, to talk about. Take your time."
    ),
}
ARMS: Final[dict[str, dict[str, str]]] = {
    "shipped": {},
    "vad": {"TURN_DETECTION": "vad"},
}
STEPS: Final[dict[str, str]] = {
    "stt_heard_end": "STT received the end of speech (audio)",
    "stt_commit": "STT commit sent (stub VAD, 350 ms)",
    "stt_final": "STT final transcript sent",
    "user_turn": "user turn message at the caller",
    "llm_request": "LLM request received (reply heard)",
    "llm_first_token": "LLM first token sent",
    "tts_request": "TTS request received (first)",
    "tts_first_byte": "TTS first byte sent",
    "first_audio": "first audible frame at the caller",
}
SPANS: Final[dict[str, tuple[str, str, str]]] = {
    "media_in": ("caller mic -> STT (media in)", "", "stt_heard_end"),
    "final_to_llm": ("STT final -> LLM request", "stt_final", "llm_request"),
    "first_sentence": ("LLM first token -> TTS request", "llm_first_token", "tts_request"),
    "media_out": ("TTS first byte -> heard (media out)", "tts_first_byte", "first_audio"),
}
"""Spans of a turn in ms: (label, from step, to step); from "" is the true end of speech."""
REALTIME_BYTES_PER_MS: Final = 48  # the realtime API's audio: 24 kHz s16le mono


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Said:
    """One finished utterance of the corpus."""

    id: str
    kind: str
    text: str  # what the STT stub transcribes
    wav: Path
    end_of_speech: float  # seconds into the WAV


def load_utterances() -> list[Said]:
    manifest = json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))
    return [
        Said(
            id=str(u["id"]),
            kind=str(u["kind"]),
            text=" ".join(str(u["text"]).replace("...", " ").split()),
            wav=CORPUS / str(u["file"]),
            end_of_speech=float(u["end_of_speech"]),
        )
        for u in manifest["utterances"]
        if u["kind"] in KINDS
    ]


def schedule(utterances: list[Said], shapes: list[str], repeat: int) -> list[tuple[Said, str]]:
    """`repeat` turns per reply shape, utterances round-robin; the order of the shapes flips
    every round, so a shape does not always get the same utterances."""
    turns: list[tuple[Said, str]] = []
    for index in range(repeat):
        for shape in shapes if index % 2 == 0 else shapes[::-1]:
            turns.append((utterances[len(turns) % len(utterances)], shape))
    return turns


# --------------------------------------------------------------------------- CPU of the others


class OthersCpu:
    """The machine's busy CPU minus ours (this process, the stubs, the worker's process tree),
    per wall second, between `start()` and `stop()`."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self._start: tuple[float, float, dict[int, float]] | None = None
        self.result: dict[str, float] = {}

    def _ours(self) -> dict[int, float]:
        pids = {os.getpid(), *self.roots}
        for root in self.roots:
            with contextlib.suppress(psutil.Error):
                pids.update(child.pid for child in psutil.Process(root).children(recursive=True))
        spent: dict[int, float] = {}
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pid).cpu_times()
                spent[pid] = float(times.user + times.system)
        return spent

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return float(
            sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal"))
        )

    def start(self) -> None:
        self._start = (time.monotonic(), self._busy(), self._ours())

    def stop(self) -> dict[str, float]:
        if self._start is None:
            return {}
        started, busy0, ours0 = self._start
        wall = max(1e-9, time.monotonic() - started)
        busy = self._busy() - busy0
        ours = sum(v - ours0.get(pid, 0.0) for pid, v in self._ours().items())
        self.result = {
            "window_s": round(wall, 1),
            "machine_cores_busy": round(busy / wall, 3),
            "ours_cores_busy": round(ours / wall, 3),
            "other_processes_cores_busy": round(max(0.0, busy - ours) / wall, 3),
        }
        return self.result


# --------------------------------------------------------------------------- one call


@dataclass
class Turn:
    said: Said
    shape: str
    started: float  # caller time the clip began
    true_end: float  # caller time of the true end of speech
    window_end: float = 0.0  # caller time the turn's wait ended
    heard: float | None = None  # caller time of the first audible frame
    audio_over: float | None = None


@dataclass
class Listener:
    """The caller's heard frames, scanned from where the last scan stopped (a call's list grows
    by 100 frames a second: scanning it whole on every poll would load the harness)."""

    caller: Caller
    index: int = 0

    def skip_to_now(self) -> None:
        self.index = len(self.caller.heard)

    async def first_loud(self, *, after: float, timeout: float) -> float | None:
        """Caller time of the first loud frame at or after `after` that is followed by
        `MIN_LOUD_SECONDS` of loud frames; None when none came within `timeout`."""
        deadline = time.monotonic() + timeout
        first: float | None = None
        loud = 0.0
        while True:
            heard = self.caller.heard
            while self.index < len(heard):
                frame = heard[self.index]
                self.index += 1
                if frame.t < after or frame.rms < DEFAULT_MIN_RMS:
                    continue
                first = frame.t if first is None else first
                loud += frame.seconds
                if loud >= MIN_LOUD_SECONDS:
                    return first
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(POLL)

    async def audio_over(self, *, timeout: float) -> float:
        """Wait until no loud frame came for `QUIET_AFTER_REPLY` s; the caller time of the last
        loud frame (bounded by `timeout`)."""
        deadline = time.monotonic() + timeout
        last = self.caller.now()
        while True:
            heard = self.caller.heard
            while self.index < len(heard):
                frame = heard[self.index]
                self.index += 1
                if frame.rms >= DEFAULT_MIN_RMS:
                    last = frame.t
            if self.caller.now() - last >= QUIET_AFTER_REPLY or time.monotonic() > deadline:
                return last
            await asyncio.sleep(0.05)


@dataclass
class ArmRun:
    name: str
    env: dict[str, str]
    turns: list[Turn] = field(default_factory=list)
    wall_offset: float = 0.0  # caller time + this = time.time()
    chats: list[dict[str, Any]] = field(default_factory=list)
    speeches: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    user_turns: list[tuple[float, int]] = field(default_factory=list)  # (caller time, seq)
    cpu: dict[str, float] = field(default_factory=dict)
    loadavg: list[list[float]] = field(default_factory=list)
    problem: str | None = None


async def run_arm(
    arm: ArmRun,
    *,
    index: int,
    standin: StandIn,
    processes: ProcessGroup,
    openai: OpenAIStubProcess,
    backend_url: str,
    stub_pids: list[int],
    work: Path,
    plan: list[tuple[Said, str]],
) -> None:
    agent_name = f"{AGENT_NAME}-{index}"
    env = worker_env(
        livekit_url=standin.url,
        api_key=standin.api_key,
        api_secret=standin.api_secret,
        agent_name=agent_name,
        data_dir=work / f"data-{index}",
        OPENAI_BASE_URL=openai.base_url,
        BACKEND_URL=backend_url,
        INTERNAL_SERVICE_KEY=SERVICE_KEY,
        NUM_IDLE_PROCESSES="1",
        **arm.env,
    )
    worker = processes.start_worker(env, name=f"worker-{index}")
    caller: Caller | None = None
    try:
        await standin.wait_for_worker(agent_name, timeout=60)
        room, identity = f"room-heard-{index}", f"caller-heard-{index}"
        token = participant_token(
            identity, room, api_key=standin.api_key, api_secret=standin.api_secret
        )
        caller = Caller(standin.url, token, agent_name=agent_name)
        await caller.connect()
        arm.wall_offset = caller.t0 + (time.time() - time.monotonic())
        # this call's realtime connection only (its audio positions count from its start)
        await openai.clear_realtime_events()
        await standin.dispatch(
            room,
            json.dumps(
                {"scenarioId": "default", "userId": "u-heard", "participantIdentity": identity}
            ),
            agent_name,
        )
        listener = Listener(caller)
        if await listener.first_loud(after=0.0, timeout=60) is None:
            raise TimeoutError(f"no greeting heard in 60 s:\n{worker.log_tail(30)}")
        await listener.audio_over(timeout=REPLY_AUDIO_TIMEOUT)
        await asyncio.sleep(GAP_AFTER_REPLY)
        await openai.control("reset")  # the greeting's requests are not the turns'
        others = OthersCpu([worker.pid, *stub_pids])
        others.start()
        arm.loadavg.append([round(v, 2) for v in os.getloadavg()])
        for number, (said, shape) in enumerate(plan, 1):
            await openai.configure(transcript=said.text, reply=REPLIES[shape])
            listener.skip_to_now()
            started, _ = await caller.speak(said.wav, timeout=30)
            turn = Turn(said, shape, started, started + said.end_of_speech)
            arm.turns.append(turn)
            # from the clip's start: a reply before the true end is a cut-off, kept as negative
            turn.heard = await listener.first_loud(
                after=started, timeout=max(0.0, turn.true_end - caller.now()) + REPLY_TIMEOUT
            )
            if turn.heard is not None:
                turn.audio_over = await listener.audio_over(timeout=REPLY_AUDIO_TIMEOUT)
            await asyncio.sleep(GAP_AFTER_REPLY)
            turn.window_end = caller.now()
            heard = "none" if turn.heard is None else f"{turn.heard - turn.true_end:.3f} s"
            print(f"    {arm.name} {number}/{len(plan)} {shape:<5} {said.id}: {heard}", flush=True)
        arm.cpu = others.stop()
        arm.loadavg.append([round(v, 2) for v in os.getloadavg()])
    except Exception as error:  # an arm reports what it got and why it stopped
        arm.problem = stopped(error, processes)
    try:  # what the stub saw, for the turns measured (all of them, or up to a problem)
        arm.chats = await openai.requests("chat")
        arm.speeches = await openai.requests("speech")
        arm.events = await openai.realtime_events()
    except Exception as error:
        arm.problem = arm.problem or stopped(error, processes)
    try:
        if caller is not None:
            arm.user_turns = [
                (m.t, int(m.payload.get("seq", 0)))
                for m in caller.transcript
                if m.payload.get("type") == "turn" and m.payload.get("role") == "user"
            ]
            with contextlib.suppress(Exception):
                await caller.end_call(timeout=5)
            with contextlib.suppress(Exception):
                await caller.leave()
            await asyncio.sleep(1.0)  # the job ends its call (delivery) before the worker goes
    finally:
        worker.kill_group(grace=5.0)


# --------------------------------------------------------------------------- the figures


def speech_end_arrivals(events: list[dict[str, Any]]) -> dict[str, float]:
    """item id -> `time.time()` at which the stub received the audio holding that item's end of
    speech (its `speech_stopped` says where in the connection's audio it ended: the append that
    brought the stream past that point). A new connection (`session.created`) starts over."""
    found: dict[str, float] = {}
    position = 0.0  # ms of audio received on the connection
    arrivals: list[tuple[float, float]] = []  # (position after the append, its time)
    for record in events:
        event, direction = record["event"], record["dir"]
        kind = event.get("type")
        if direction == "out" and kind == "session.created":
            position, arrivals = 0.0, []
        elif direction == "in" and kind == "input_audio_buffer.append":
            position += float(event.get("bytes", 0)) / REALTIME_BYTES_PER_MS
            arrivals.append((position, float(record["at"])))
        elif direction == "out" and kind == "input_audio_buffer.speech_stopped":
            end_ms = float(event.get("audio_end_ms", 0))
            at = next((t for pos, t in arrivals if pos >= end_ms), None)
            if at is not None:
                found[str(event.get("item_id"))] = at
    return found


def turn_row(arm: ArmRun, turn: Turn, arrivals: dict[str, float]) -> dict[str, Any]:
    """One turn: its timeline in ms after the true end of speech, and its counts."""
    wall = arm.wall_offset
    start, end, until = turn.started + wall, turn.true_end + wall, turn.window_end + wall
    heard = None if turn.heard is None else turn.heard + wall
    chats = [r for r in arm.chats if start <= r["at"] < until]
    answered = [r for r in chats if heard is not None and r["at"] < heard]
    chat = answered[-1] if answered else None
    speech = next(
        (
            r
            for r in arm.speeches
            if chat is not None
            and chat["at"] <= r["at"] < until
            and (heard is None or r["at"] < heard)
        ),
        None,
    )
    out = [e for e in arm.events if e["dir"] == "out" and start <= e["at"] < until]
    commits = [e for e in out if e["event"].get("type") == "input_audio_buffer.committed"]
    commit = next((e for e in commits if e["at"] >= end), None)
    final = next(
        (
            e
            for e in out
            if commit is not None
            and e["event"].get("type") == "conversation.item.input_audio_transcription.completed"
            and e["event"].get("item_id") == commit["event"].get("item_id")
        ),
        None,
    )
    users = [t + wall for t, _ in arm.user_turns if turn.started <= t < turn.window_end]
    heard_end = arrivals.get(str(commit["event"].get("item_id"))) if commit else None
    steps: dict[str, float | None] = {
        "stt_heard_end": heard_end,
        "stt_commit": commit["at"] if commit else None,
        "stt_final": final["at"] if final else None,
        "user_turn": users[0] if users else None,
        "llm_request": chat["at"] if chat else None,
        "llm_first_token": chat["first_byte_at"] if chat else None,
        "tts_request": speech["at"] if speech else None,
        "tts_first_byte": speech["first_byte_at"] if speech else None,
        "first_audio": heard,
    }
    first_tts = speech["body"].get("input") if speech and isinstance(speech["body"], dict) else None
    timeline = {k: None if v is None else round((v - end) * 1000, 1) for k, v in steps.items()}
    spans: dict[str, float | None] = {}
    for key, (_, a, b) in SPANS.items():
        since, until_step = (timeline[a] if a else 0.0), timeline[b]
        spans[key] = None if since is None or until_step is None else round(until_step - since, 1)
    return {
        "utterance": turn.said.id,
        "kind": turn.said.kind,
        "shape": turn.shape,
        "timeline_ms": timeline,
        "spans_ms": spans,
        "agent_audio_ms": (
            None
            if turn.heard is None or turn.audio_over is None
            else round((turn.audio_over - turn.heard) * 1000)
        ),
        "llm_requests": len(chats),
        "stt_commits": len(commits),
        "stt_commits_before_end": sum(1 for e in commits if e["at"] < end),
        "user_turns": len(users),
        "first_tts_words": len(str(first_tts).split()) if first_tts else None,
    }


def medians(rows: list[dict[str, Any]], field: str, keys: list[str]) -> dict[str, float | None]:
    result: dict[str, float | None] = {}
    for key in keys:
        values = [v for row in rows if (v := row[field][key]) is not None]
        result[key] = round(statistics.median(values), 1) if values else None
    return result


def _held(row: dict[str, Any]) -> bool:
    """The end of turn waited past its usual delay: the user turn reached the caller later than
    HELD_AFTER_MS after the true end (the model's max delay; with the VAD it never is)."""
    user_turn = row["timeline_ms"]["user_turn"]
    return user_turn is not None and user_turn > HELD_AFTER_MS


def arm_result(arm: ArmRun, shapes: list[str]) -> dict[str, Any]:
    arrivals = speech_end_arrivals(arm.events)
    rows = [turn_row(arm, turn, arrivals) for turn in arm.turns]
    by_shape: dict[str, Any] = {}
    for shape in shapes:
        mine = [r for r in rows if r["shape"] == shape]
        heard = [r["timeline_ms"]["first_audio"] for r in mine]
        values = [v for v in heard if v is not None]
        held = [r for r in mine if _held(r)]
        by_shape[shape] = {
            "reply": REPLIES[shape],
            "first_audio_ms": summarize(values, digits=1),
            "held": len(held),
            "first_audio_not_held_ms": summarize(
                [
                    v
                    for r in mine
                    if not _held(r) and (v := r["timeline_ms"]["first_audio"]) is not None
                ],
                digits=1,
            ),
            "first_audio_held_ms": summarize(
                [v for r in held if (v := r["timeline_ms"]["first_audio"]) is not None], digits=1
            ),
            "unanswered": sum(1 for v in heard if v is None),
            "before_true_end": sum(1 for v in values if v < 0),
            "timeline_median_ms": medians(mine, "timeline_ms", list(STEPS)),
            "spans_median_ms": medians(mine, "spans_ms", list(SPANS)),
            "turns": mine,
        }
    answered = sum(1 for r in rows if r["timeline_ms"]["first_audio"] is not None)
    requests = sum(r["llm_requests"] for r in rows)
    return {
        "env": arm.env,
        "turn_detection": arm.env.get(
            "TURN_DETECTION", Settings.model_fields["turn_detection"].default
        ),
        "shapes": by_shape,
        "replies_heard": answered,
        "turns": len(rows),
        "llm_requests": requests,
        "llm_requests_per_answered_turn": round(requests / answered, 3) if answered else None,
        "cpu": arm.cpu,
        "other_processes_cores_busy": arm.cpu.get("other_processes_cores_busy"),
        "loadavg_before_after": arm.loadavg,
        "problem": arm.problem,
    }


# --------------------------------------------------------------------------- the run


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-voice-heard-"))
    processes = ProcessGroup(work / "logs")
    standin = StandIn(port=free_port())
    await standin.start()
    utterances = load_utterances()
    plan = schedule(utterances, args.shapes, args.repeat)
    runs = [ArmRun(name, env) for name, env in args.arms.items()]
    problem: str | None = None
    try:
        openai, backend = await asyncio.gather(
            start_openai_stub(
                processes,
                transcript=utterances[0].text,
                tts_max_seconds=TTS_MAX_SECONDS,
                profile=PROFILE,
            ),
            start_backend_stub(processes, key=SERVICE_KEY),
        )
        for index, arm in enumerate(runs):
            print(f"  arm {arm.name} {arm.env or '(worker defaults)'} ...", flush=True)
            await run_arm(
                arm,
                index=index,
                standin=standin,
                processes=processes,
                openai=openai,
                backend_url=backend.url,
                stub_pids=[openai.proc.pid, backend.proc.pid],
                work=work,
                plan=plan,
            )
    except Exception as error:  # a benchmark reports what it got and why it stopped
        problem = stopped(error, processes)
    finally:
        await stop_stack(processes, standin, work, keep_logs=args.keep_logs)
    arms = {arm.name: arm_result(arm, args.shapes) for arm in runs}
    others = [v for a in arms.values() if (v := a["other_processes_cores_busy"]) is not None]
    return {
        "bench": "voice_heard",
        "definition": (
            "the caller's true end of speech (the microphone handing over the sample at the "
            "corpus manifest's end_of_speech) -> the first frame the caller heard with RMS >= "
            f"{DEFAULT_MIN_RMS:.0f} followed by {MIN_LOUD_SECONDS} s of such frames; the real "
            "worker (python -m agent start), the e2e stand-in, WebRTC/Opus, a real rtc SDK "
            f"caller, the OpenAI stub's `{PROFILE}` profile"
        ),
        "definitions": {
            "steps": STEPS,
            "spans": {
                k: {"label": v[0], "from": v[1] or "true end", "to": v[2]} for k, v in SPANS.items()
            },
            "llm_requests_per_answered_turn": (
                "the stub's chat requests during the measured turns / replies heard"
            ),
            "other_processes_cores_busy": (
                "busy CPU of the machine over the measured turns minus this process, the stubs "
                "and the worker's process tree, per second"
            ),
        },
        "machine": machine_info(),
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "smoke": args.smoke,
        "profile": PROFILE,
        "tts_max_seconds": TTS_MAX_SECONDS,
        "gap_after_reply_s": GAP_AFTER_REPLY,
        "repeat": args.repeat,
        "corpus": {"path": str(CORPUS), "kinds": list(KINDS), "utterances": len(utterances)},
        "replies": {shape: REPLIES[shape] for shape in args.shapes},
        "worker_env": {"NUM_IDLE_PROCESSES": "1", "LOAD_THRESHOLD": "1000"},
        "goals": {"llm_requests_per_answered_turn_max": GOAL_LLM_REQUESTS_PER_TURN},
        "arms": arms,
        "other_processes_cores_busy": max(others) if others else None,
        "problem": problem,
    }


def _cell(value: Any) -> str:
    if value is None:
        return f"{'-':>15}"
    return f"{value:>15.0f}" if isinstance(value, float | int) else f"{value:>15}"


def report(result: dict[str, Any]) -> None:
    print(
        "voice to voice as the caller hears it (python -m agent start, stand-in, WebRTC/Opus, "
        f"stub `{result['profile']}`): true end of speech -> first audible frame, ms"
    )
    print(f"  {'arm':<24} {'reply':<6} {'median':>7} {'p90':>7} {'max':>7} {'n':>3} {'unans':>5}")
    columns: list[tuple[str, str, dict[str, Any]]] = []
    for name, arm in result["arms"].items():
        for shape, data in arm["shapes"].items():
            columns.append((name, shape, data))
            s = data["first_audio_ms"]
            figures = (
                f"{s['median']:>7.0f} {s['p90']:>7.0f} {s['max']:>7.0f}"
                if s.get("n")
                else f"{'-':>7} {'-':>7} {'-':>7}"
            )
            print(f"  {name:<24} {shape:<6} {figures} {s.get('n', 0):>3} {data['unanswered']:>5}")
    print(
        f"\n  turns whose end of turn was held (user turn > {HELD_AFTER_MS} ms after the true "
        "end), and the median first audio of the others / of those:"
    )
    for name, shape, data in columns:
        quick, held = data["first_audio_not_held_ms"], data["first_audio_held_ms"]
        n = data["first_audio_ms"].get("n", 0)
        print(
            f"  {name:<24} {shape:<6} held {data['held']:>2} of {n}"
            f"  not held {quick.get('median', '-')}  held {held.get('median', '-')}"
        )
    print("\n  median timeline, ms after the caller's true end of speech:")
    print(f"  {'':<40}" + "".join(f"{(n[:9] + '/' + s):>15}" for n, s, _ in columns))
    for key, label in STEPS.items():
        print(f"  {label:<40}" + "".join(_cell(d["timeline_median_ms"][key]) for *_, d in columns))
    print("  median spans, ms:")
    for key, (label, *_) in SPANS.items():
        print(f"  {label:<40}" + "".join(_cell(d["spans_median_ms"][key]) for *_, d in columns))
    cells = ""
    for *_, data in columns:
        counts = [t["first_tts_words"] for t in data["turns"] if t["first_tts_words"]]
        cells += _cell(statistics.median(counts) if counts else None)
    print(f"  {'words in the first TTS request':<40}{cells}")
    print()
    for name, arm in result["arms"].items():
        per = arm["llm_requests_per_answered_turn"]
        print(
            f"  {name}: LLM chat requests per answered turn {per if per is not None else '-'} "
            f"({arm['llm_requests']} / {arm['replies_heard']} heard of {arm['turns']} turns; "
            f"issue 22: <= {GOAL_LLM_REQUESTS_PER_TURN}); other processes "
            f"{arm['other_processes_cores_busy']} cores busy, the stack "
            f"{arm['cpu'].get('ours_cores_busy')} (of {result['machine']['cpus']})"
        )
        if arm["problem"]:
            print(f"  {name}: stopped early: {arm['problem']}")
    if result["problem"]:
        print(f"  stopped early: {result['problem']}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--arms",
        default="shipped,vad",
        help=f"named arms, comma-separated ({', '.join(ARMS)}); '' for only the --env arms",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="an extra arm with these worker settings (e.g. TURN_DETECTION=vad), repeatable",
    )
    parser.add_argument(
        "--repeat", type=int, default=8, help="replies per arm and reply shape (default 8)"
    )
    parser.add_argument("--shapes", default=",".join(REPLIES), help="reply shapes")
    parser.add_argument(
        "--json", type=Path, default=RESULTS_DIR / "bench_voice_heard.json", metavar="PATH"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    parser.add_argument(
        "--smoke", action="store_true", help="one reply per shape, the first arm only"
    )
    args = parser.parse_args(argv)
    arms: dict[str, dict[str, str]] = {}
    for name in (n.strip() for n in str(args.arms).split(",")):
        if not name:
            continue
        if name not in ARMS:
            parser.error(f"unknown arm {name!r}; one of {', '.join(ARMS)} (or use --env)")
        arms[name] = dict(ARMS[name])
    for spec in args.env:
        arms[spec] = env_overrides([spec], parser)
    if not arms:
        parser.error("no arm to run")
    args.shapes = [s.strip() for s in str(args.shapes).split(",") if s.strip()]
    unknown = [s for s in args.shapes if s not in REPLIES]
    if unknown or not args.shapes:
        parser.error(f"reply shapes are {', '.join(REPLIES)}")
    if args.smoke:
        first = next(iter(arms))
        arms, args.repeat = {first: arms[first]}, 1
    args.arms = arms
    args.repeat = max(1, args.repeat)
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    run_in_test_netns(__file__, argv)  # WebRTC media skips loopback
    quiet_logging()
    result = asyncio.run(run(args))
    report(result)
    write_result(args.json, result)


if __name__ == "__main__":
    main()
