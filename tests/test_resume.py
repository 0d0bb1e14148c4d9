"""Resume (DESIGN.md, "Surviving a worker's death"), at session level through the worker's own
functions: a job that starts in a room whose attempt already holds turns (the local journal
first, then the backend's GET) continues the call: the turns are the persona's chat context,
the resume line replaces the greeting, `seq` continues on the data channel and in the
transcript, and the final transcript holds every turn once, `complete: true`, delivered once. A
complete earlier transcript means the call is over: nothing said, nothing delivered, the job
ends. A failed GET starts a new call.

Expected texts come from the prompt files and the hand-written JSON below, not from the code
under test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from livekit.agents import AgentSession, llm
from livekit.agents.voice.events import ConversationItemAddedEvent
from livekit.agents.voice.transcription import TranscriptSynchronizer

from agent.backend import BackendUnavailable, DeliveryReceipt
from agent.call import CALL_KEY, Call
from agent.call.session import open_journal, start_conversation
from agent.call.start import start_in_parallel
from agent.journal import Journal, Owner
from agent.models import (
    HeldTranscript,
    JobMetadata,
    Scenario,
    Session,
    SessionCreate,
    TranscriptPayload,
    Turn,
    utc_now,
)
from agent.persona import PersonaAgent
from agent.prompts import load_scenario
from agent.transcript import TurnRecorder
from agent.worker import PROCESS_KEY, ProcessState, _start_call, on_session_end
from tests.support import journal_probe
from tests.support.fake_job import FakeEndingJobContext, FakeJob, FakeJobContext
from tests.support.fakes import (
    CaptureAudioOutput,
    CaptureRoom,
    CaptureTextOutput,
    FakeLLM,
    FakeTTS,
    echo_reply,
)
from tests.support.settings import make_settings
from tests.support.text_call import hang_up_and_finish, text_session

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"
RESUME_LINE = (PROMPTS / "resume.md").read_text(encoding="utf-8").strip()
# the default scenario's greeting, as its front matter has it
GREETING = next(
    line.removeprefix("greeting:").strip()
    for line in (PROMPTS / "scenarios" / "default.md").read_text(encoding="utf-8").splitlines()
    if line.startswith("greeting:")
)
SESSION = Session(id="S1", user_id="u1", scenario_id="default", attempt_number=1)
METADATA = JobMetadata(scenario_id="default", user_id="u1")
AGENT_SAYS = "I haven't told my partner yet."
USER_SAYS = "You were telling me about your job."

# What the backend holds: a checkpoint of the dead container's call (contract: the POST body).
CHECKPOINT_JSON = json.dumps(
    {
        "attemptNumber": 1,
        "source": "agent",
        "complete": False,
        "endedReason": "in_progress",
        "startedAt": "2026-12-02T18:00:00.000Z",
        "endedAt": "2026-12-02T18:01:10.000Z",
        "turnCount": 3,
        "turns": [
            {
                "seq": 1,
                "role": "assistant",
                "text": "Hi... is this the support line?",
                "startedAt": "2026-12-02T18:00:01.000Z",
                "endedAt": "2026-12-02T18:00:04.000Z",
                "interrupted": False,
            },
            {
                "seq": 2,
                "role": "user",
                "text": "Yes, I'm here. What's going on?",
                "startedAt": "2026-12-02T18:00:05.000Z",
                "endedAt": "2026-12-02T18:00:07.000Z",
                "interrupted": False,
            },
            {
                "seq": 3,
                "role": "assistant",
                "text": "I lost my job two weeks ago.",
                "startedAt": "2026-12-02T18:00:08.000Z",
                "endedAt": "2026-12-02T18:00:11.000Z",
                "interrupted": False,
            },
        ],
        "usage": [],
        "latency": {},
    }
)
CHECKPOINT_TEXTS = [
    ("assistant", "Hi... is this the support line?"),
    ("user", "Yes, I'm here. What's going on?"),
    ("assistant", "I lost my job two weeks ago."),
]


@dataclasses.dataclass
class ResumeBackend:
    """The backend as a re-dispatched job meets it: one session per room, and the best
    transcript it holds for the attempt (`held`: the GET's JSON body; None: 404)."""

    held: str | None = None
    get_fails: bool = False
    # the session answer's `heldTurns`: the held body's turnCount (0 when none), as the
    # contract says; False: an older backend that does not send it
    says_held_turns: bool = True
    gets: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    create_keys: list[str] = dataclasses.field(default_factory=list)
    posted: list[TranscriptPayload] = dataclasses.field(default_factory=list)

    async def get_scenario(self, scenario_id: str) -> Scenario:
        return load_scenario(scenario_id)

    def _session(self) -> Session:
        if not self.says_held_turns:
            return SESSION
        held = json.loads(self.held)["turnCount"] if self.held is not None else 0
        return SESSION.model_copy(update={"held_turns": held})

    async def create_session(self, body: SessionCreate, *, room_sid: str) -> Session:
        self.create_keys.append(f"create:{room_sid}")
        return self._session()

    async def get_session(self, session_id: str) -> Session:
        return self._session()

    async def get_transcript(self, session_id: str, attempt_number: int) -> HeldTranscript | None:
        self.gets.append((session_id, attempt_number))
        if self.get_fails:
            raise BackendUnavailable("connection refused (fake)")
        if self.held is None:
            return None
        return HeldTranscript.model_validate_json(self.held)

    async def post_transcript(
        self, session_id: str, payload: TranscriptPayload, *, deadline: float
    ) -> DeliveryReceipt:
        self.posted.append(payload)
        return DeliveryReceipt(status="delivered", attempts=1)

    async def put_recording(
        self, session_id: str, attempt_number: int, part: int, body: bytes, *, deadline: float
    ) -> DeliveryReceipt:
        raise AssertionError("these calls are not recorded")

    async def aclose(self) -> None:
        return None


def job_context(job_id: str) -> FakeJobContext:
    return FakeJobContext(job=FakeJob(id=job_id, metadata=METADATA.model_dump_json()))


async def start_job(
    backend: ResumeBackend, journal: Journal, room: CaptureRoom, *, job_id: str
) -> tuple[Call, AgentSession[Call] | None, FakeLLM]:
    """What the entrypoint does up to the persona speaking, with a text session (no audio)."""
    call = Call(
        job_id,
        "room-1",
        METADATA,
        backend=backend,
        journal=journal,
        room_connected=room.isconnected,
    )
    started = await start_in_parallel(
        job_context(job_id),  # type: ignore[arg-type]
        backend,
        METADATA,
        journal=journal,
    )
    call.scenario, call.session = started.scenario, started.session
    call.resume_from(started.earlier)
    fake_llm = FakeLLM(AGENT_SAYS)
    if call.already_ended:
        return call, None, fake_llm
    await open_journal(call)
    return call, text_session(call, room, reply=fake_llm), fake_llm


async def talk(call: Call, session: AgentSession[Call], room: CaptureRoom) -> None:
    """The persona's opening line, one exchange, the caller hangs up, the call is delivered."""
    opened = asyncio.Event()

    def on_item(event: ConversationItemAddedEvent) -> None:
        if isinstance(event.item, llm.ChatMessage) and event.item.role == "assistant":
            opened.set()  # the opening line was spoken (not the agent's config item)

    session.on("conversation_item_added", on_item)
    await start_conversation(call, session, make_settings(), None)
    await asyncio.wait_for(opened.wait(), 5)
    await session.run(user_input=USER_SAYS)
    await hang_up_and_finish(call, session)


def turn_packets(room: CaptureRoom) -> list[tuple[int, str, str]]:
    packets = [json.loads(payload) for _topic, payload in room.local_participant.packets]
    return [(p["seq"], p["role"], p["text"]) for p in packets if p["type"] == "turn"]


def messages(chat_ctx: llm.ChatContext) -> list[tuple[str, str]]:
    return [
        (item.role, item.text_content or "")
        for item in chat_ctx.items
        if isinstance(item, llm.ChatMessage) and item.role in ("user", "assistant")
    ]


async def test_a_call_resumes_from_the_backends_checkpoint(tmp_path: Path) -> None:
    backend = ResumeBackend(held=CHECKPOINT_JSON)
    room = CaptureRoom()
    with Journal.in_dir(tmp_path) as journal:
        call, session, fake_llm = await start_job(backend, journal, room, job_id="AJ_new")
        assert session is not None
        await talk(call, session, room)
    assert backend.gets == [("S1", 1)]
    assert call.resumed_from == "backend"
    # seq continues after the stored turns, and the opening line is the resume line
    assert turn_packets(room) == [
        (4, "assistant", RESUME_LINE),
        (5, "user", USER_SAYS),
        (6, "assistant", AGENT_SAYS),
    ]
    # the persona remembers: its instructions, then the earlier turns in order, then the
    # resume line
    [reply] = fake_llm.calls
    first = reply.chat_ctx.items[0]
    assert isinstance(first, llm.ChatMessage) and first.role == "system"
    assert messages(reply.chat_ctx) == [
        *CHECKPOINT_TEXTS,
        ("assistant", RESUME_LINE),
        ("user", USER_SAYS),
    ]
    # one transcript, every turn once, continuous, with the earlier call's start
    [sent] = backend.posted
    wire = sent.to_wire()
    assert (wire["complete"], wire["endedReason"], wire["turnCount"]) == (True, "caller_hangup", 6)
    assert wire["startedAt"] == "2026-12-02T18:00:00.000Z"
    assert [(t["seq"], t["role"], t["text"]) for t in wire["turns"]] == [
        (1, *CHECKPOINT_TEXTS[0]),
        (2, *CHECKPOINT_TEXTS[1]),
        (3, *CHECKPOINT_TEXTS[2]),
        (4, "assistant", RESUME_LINE),
        (5, "user", USER_SAYS),
        (6, "assistant", AGENT_SAYS),
    ]


def dead_local_owner() -> Owner:
    """This host, this boot, this pid, another start: a process that is gone (pid reused)."""
    me = Owner.current()
    return dataclasses.replace(me, start_ticks=me.start_ticks - 1)


def journal_turn(seq: int, role: str, text: str) -> Turn:
    at = utc_now()
    return Turn(
        seq=seq, role=role, text=text, started_at=at, ended_at=at + timedelta(milliseconds=300)
    )


async def test_a_call_resumes_from_a_dead_jobs_journal_row_under_another_job_id(
    tmp_path: Path,
) -> None:
    with Journal.in_dir(tmp_path, owner=dead_local_owner()) as dead:
        dead.open_call("AJ_dead", session_id="S1", attempt_number=1, started_at=utc_now())
        for seq, (role, text) in enumerate(CHECKPOINT_TEXTS, start=1):
            dead.append_turn("AJ_dead", journal_turn(seq, role, text))
    # the backend holds a shorter checkpoint: the journal is asked first and wins
    backend = ResumeBackend(held=None)
    room = CaptureRoom()
    with Journal.in_dir(tmp_path) as journal:
        call, session, _ = await start_job(backend, journal, room, job_id="AJ_new")
        assert session is not None
        # the dead row is adopted: nothing left for a recovery to deliver as `crashed`
        assert journal.state("AJ_dead") is None
        await talk(call, session, room)
        assert journal_probe.counts(journal) == journal_probe.Counts(0, 0, 0, 0)
    assert backend.gets == []
    assert call.resumed_from == "journal"
    assert [seq for seq, _role, _text in turn_packets(room)] == [4, 5, 6]
    [sent] = backend.posted
    assert [t.text for t in sent.turns] == [
        *(text for _role, text in CHECKPOINT_TEXTS),
        RESUME_LINE,
        USER_SAYS,
        AGENT_SAYS,
    ]


async def test_a_failed_get_starts_a_new_call_with_the_greeting(tmp_path: Path) -> None:
    # the session says turns are held, and reading them back fails
    backend = ResumeBackend(held=CHECKPOINT_JSON, get_fails=True)
    room = CaptureRoom()
    with Journal.in_dir(tmp_path) as journal:
        call, session, _ = await start_job(backend, journal, room, job_id="AJ_new")
        assert session is not None
        await talk(call, session, room)
    assert backend.gets == [("S1", 1)]
    assert call.resumed_from is None
    assert turn_packets(room) == [
        (1, "assistant", GREETING),
        (2, "user", USER_SAYS),
        (3, "assistant", AGENT_SAYS),
    ]
    [sent] = backend.posted
    assert sent.turn_count == 3 and sent.complete


async def test_a_complete_earlier_transcript_ends_the_job_saying_and_delivering_nothing(
    tmp_path: Path,
) -> None:
    held: dict[str, Any] = json.loads(CHECKPOINT_JSON)
    held |= {"complete": True, "endedReason": "caller_left"}
    backend = ResumeBackend(held=json.dumps(held))
    settings = make_settings(AGENT_DATA_DIR=str(tmp_path))
    ctx = FakeEndingJobContext(job=FakeJob(id="AJ_late", metadata=METADATA.model_dump_json()))
    with Journal.in_dir(tmp_path) as journal:
        call = Call(
            "AJ_late",
            "room-1",
            METADATA,
            backend=backend,
            journal=journal,
            shutdown=ctx.shutdown,
            room_connected=ctx.room.isconnected,
        )
        proc = ProcessState(settings=settings, vad=None, journal=journal)  # type: ignore[arg-type]
        ctx.proc.userdata |= {CALL_KEY: call, PROCESS_KEY: proc}
        await _start_call(ctx, call, proc, METADATA)  # type: ignore[arg-type]
        assert ctx.shutdown_reasons == ["already_ended"]
        assert call.agent_session is None and call.recorder is None  # nothing said
        assert journal.state("AJ_late") is None  # nothing journaled
        await on_session_end(ctx)  # type: ignore[arg-type]
    assert backend.posted == []  # nothing delivered
    assert call.outcome is None


async def test_a_resume_line_the_caller_talks_over_is_still_a_turn() -> None:
    # Like the greeting (tests/test_transcript_session.py): heard, then cut inside its first
    # word, it is an interrupted turn of what was played, numbered after the earlier turns.
    earlier = [
        journal_turn(seq, role, text) for seq, (role, text) in enumerate(CHECKPOINT_TEXTS, 1)
    ]
    session: AgentSession[None] = AgentSession(
        llm=FakeLLM(echo_reply),
        tts=FakeTTS(sec_per_char=0.06, max_duration=10.0),
        vad=None,
        turn_handling={"turn_detection": None},
    )
    audio_out = CaptureAudioOutput()
    synchronizer = TranscriptSynchronizer(
        next_in_chain_audio=audio_out, next_in_chain_text=CaptureTextOutput()
    )
    session.output.audio = synchronizer.audio_output
    session.output.transcription = synchronizer.text_output
    recorder = TurnRecorder(earlier_turns=earlier)
    recorder.attach(session)
    replied = asyncio.Event()

    def on_item(event: ConversationItemAddedEvent) -> None:
        item = event.item
        if isinstance(item, llm.ChatMessage) and item.role == "assistant" and not item.interrupted:
            replied.set()

    session.on("conversation_item_added", on_item)
    await session.start(PersonaAgent(load_scenario("default"), earlier_turns=earlier))
    try:
        await asyncio.wait_for(audio_out.first_frame.wait(), 10)  # it starts playing
        await session.interrupt()  # the caller types over it (the library's lk.chat handler)
        session.generate_reply(user_input="Sorry, what?")
        await asyncio.wait_for(replied.wait(), 10)
    finally:
        await session.aclose()
        await audio_out.aclose()

    new = recorder.turns[3:]
    assert [(t.seq, t.role) for t in new] == [(4, "assistant"), (5, "user"), (6, "assistant")]
    assert new[0].interrupted and new[0].text and RESUME_LINE.startswith(new[0].text)
    assert new[0].text != RESUME_LINE
    assert not GREETING.startswith(new[0].text)


async def test_the_jobs_recovery_never_delivers_the_adopted_row_as_crashed(tmp_path: Path) -> None:
    # The worker's own start (`_start_call`): the job's background recovery starts only once
    # the call's row has adopted the dead run's row, so only the resumed call's transcript is
    # delivered. (The session cannot start on this fake room: the call ends as agent_error,
    # which is still delivered, whole.)
    with Journal.in_dir(tmp_path, owner=dead_local_owner()) as dead:
        dead.open_call("AJ_dead", session_id="S1", attempt_number=1, started_at=utc_now())
        for seq, (role, text) in enumerate(CHECKPOINT_TEXTS, start=1):
            dead.append_turn("AJ_dead", journal_turn(seq, role, text))
    backend = ResumeBackend()
    settings = make_settings(AGENT_DATA_DIR=str(tmp_path))
    ctx = FakeEndingJobContext(job=FakeJob(id="AJ_new", metadata=METADATA.model_dump_json()))
    with Journal.in_dir(tmp_path) as journal:
        call = Call(
            "AJ_new",
            "room-1",
            METADATA,
            backend=backend,
            journal=journal,
            shutdown=ctx.shutdown,
            room_connected=ctx.room.isconnected,
        )
        proc = ProcessState(settings=settings, vad=None, journal=journal)  # type: ignore[arg-type]
        ctx.proc.userdata |= {CALL_KEY: call, PROCESS_KEY: proc}
        await _start_call(ctx, call, proc, METADATA)  # type: ignore[arg-type]
        assert call.resumed_from == "journal"
        await on_session_end(ctx)  # type: ignore[arg-type]
        assert journal_probe.counts(journal) == journal_probe.Counts(0, 0, 0, 0)
    assert [(p.complete, p.ended_reason, p.turn_count) for p in backend.posted] == [
        (True, "agent_error", 3)
    ]
