"""One call's recording on disk: the library's `RecorderIO` around the session's audio, a size
cap, and the file sealed (size, sha256) in the journal when the call ends.

Rule: the journal row comes first (`Journal.open_recording`), then the file (0600 in a 0700
spool directory under AGENT_DATA_DIR), then the audio. Nothing here may break the call: a
recording that cannot start, a full disk mid-call (the library's encode thread logs it and
stops) or the cap reached costs the recording, never the conversation or the transcript.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from livekit.agents import AgentSession
from livekit.agents.voice.recorder_io import RecorderIO
from livekit.agents.voice.recorder_io import recorder_io as library_recorder

from agent.journal import Journal, RecordingToSend
from agent.log import get_logger
from agent.models import utc_now

log = get_logger(__name__)

SPOOL_DIRNAME = "recording-spool"
# How often the size is looked at, and the room left under the cap: the encoder writes every
# 2.5 s (the library's WRITE_INTERVAL), about 40 kB at its stereo bitrate, so 1 MiB of headroom
# holds half a minute of audio.
CAP_CHECK_SECONDS = 1.0
CAP_HEADROOM_BYTES = 1 << 20
READ_CHUNK = 1 << 20


class RecordingUnavailable(Exception):
    """The recording could not start (no audio IO, the journal or the disk refused)."""


def spool_dir(data_dir: Path) -> Path:
    return Path(data_dir) / SPOOL_DIRNAME


def new_spool_file(data_dir: Path) -> Path:
    """A fresh name in the spool (0700): random, so no id from outside ever names a path."""
    return spool_dir(data_dir) / f"{uuid.uuid4().hex}.ogg"


def digest_file(path: Path) -> tuple[int, str]:
    """(size, sha256 hex) of the file as it is now."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class _FlushingAv:
    """PyAV as the library's recorder sees it, except that a container opened for writing
    passes each packet to the file at once (`flush_packets`). Without it libavformat holds about
    256 kB (some 15 s of the call) in its buffer, and a process killed mid-call leaves an empty
    file; with it the file holds the call up to the encoder's last write (every 2.5 s)."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def open(self, file: Any, mode: str = "r", **kwargs: Any) -> Any:
        if mode == "w":
            options = dict(kwargs.pop("options", None) or {})
            options.setdefault("flush_packets", "1")
            kwargs["options"] = options
        return self._real.open(file, mode, **kwargs)


def _flush_every_packet() -> None:
    """Only the library's recorder module sees the wrapper (its own `av` name), once."""
    real = getattr(library_recorder, "av")  # noqa: B009 (not exported by the module)
    if not isinstance(real, _FlushingAv):
        setattr(library_recorder, "av", _FlushingAv(real))  # noqa: B010


def _create_private(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.parent.stat().st_mode & 0o077:
        path.parent.chmod(0o700)
    # 0600 before the encoder opens it (it truncates, keeping the mode): it is the caller's voice
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


@dataclass
class CallRecording:
    """The recording of one call (one part of its attempt), from `start` to `stop`."""

    journal: Journal
    recording_id: str
    path: Path
    max_bytes: int
    started_at: datetime = field(default_factory=utc_now)
    cut_at_cap: bool = False
    # what became of the upload at the call's end (`call.ended`'s `recording` field)
    outcome: str = "not_uploaded"
    _recorder: RecorderIO | None = None
    _closing: asyncio.Future[None] | None = None

    @classmethod
    async def start(
        cls,
        session: AgentSession[Any],
        journal: Journal,
        *,
        call_id: str,
        session_id: str,
        attempt_number: int,
        resumed: bool,
        data_dir: Path,
        max_bytes: int,
    ) -> CallRecording:
        """Journal the part, create its file and record the session's input (the caller, left)
        and output (the agent, right, as played). Call it once the session's audio IO exists
        and before the agent speaks."""
        if session.input.audio is None or session.output.audio is None:
            raise RecordingUnavailable("the session has no audio input or output")
        path = new_spool_file(data_dir)
        started_at = utc_now()

        def journal_then_file() -> str:
            part = journal.next_recording_part(session_id, attempt_number, resumed=resumed)
            rec_id = journal.open_recording(
                call_id,
                session_id=session_id,
                attempt_number=attempt_number,
                part=part,
                path=path,
                started_at=started_at,
            )
            try:
                _create_private(path)
            except OSError:
                # no file, nothing recorded: the row must not wait for one for ever
                journal.drop_empty_recording(rec_id)
                raise
            return rec_id

        try:
            rec_id = await asyncio.to_thread(journal_then_file)
        except Exception as error:
            raise RecordingUnavailable(f"{type(error).__name__}: {error}") from error
        recording = cls(journal, rec_id, path, max_bytes, started_at)
        # the library's recorder: the caller's frames as they arrive, the agent's where the
        # room's output reports them played (an interrupted reply is recorded as far as heard)
        _flush_every_packet()
        recorder = RecorderIO(agent_session=session)
        session.input.audio = recorder.record_input(session.input.audio)
        session.output.audio = recorder.record_output(session.output.audio)
        await recorder.start(output_path=path)
        recording._recorder = recorder
        log.info("recording.started", recording_id=rec_id, max_bytes=max_bytes)
        return recording

    @property
    def stopped(self) -> bool:
        return self._closing is not None

    async def watch_size(self) -> None:
        """Cut the recording before the cap (a background task of the call)."""
        while not self.stopped:
            await asyncio.sleep(CAP_CHECK_SECONDS)
            try:
                size = (await asyncio.to_thread(os.stat, self.path)).st_size
            except OSError:
                continue
            if size >= self.max_bytes - CAP_HEADROOM_BYTES:
                self.cut_at_cap = True
                log.warning(
                    "recording.cut_at_cap",
                    recording_id=self.recording_id,
                    size=size,
                    max_bytes=self.max_bytes,
                )
                await self._close_recorder()
                return

    async def stop(self) -> RecordingToSend | None:
        """Stop recording, then seal the file in the journal: what to upload, or None when the
        journal no longer says it is ours (recovery took it over) or cannot be written."""
        await self._close_recorder()

        def seal() -> RecordingToSend | None:
            size, sha = digest_file(self.path)
            return self.journal.seal_recording(self.recording_id, size=size, sha256=sha)

        try:
            sealed = await asyncio.to_thread(seal)
        except Exception as error:
            # left as it is: recovery seals it from the file once this process is gone
            log.error(
                "recording.seal_failed",
                recording_id=self.recording_id,
                error_type=type(error).__name__,
            )
            return None
        if sealed is not None:
            log.info(
                "recording.sealed",
                recording_id=self.recording_id,
                part=sealed.part,
                size=sealed.size,
                cut_at_cap=self.cut_at_cap,
            )
        return sealed

    async def _close_recorder(self) -> None:
        """Once, whoever asks first (the cap or the call's end); everyone waits for it."""
        if self._closing is None:
            recorder = self._recorder
            # the encoder flushes what it holds and writes the stream's end
            self._closing = asyncio.ensure_future(
                recorder.aclose() if recorder is not None else asyncio.sleep(0)
            )
        await asyncio.shield(self._closing)
