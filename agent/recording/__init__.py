"""Recordings for replay: a call whose metadata says `record: true` is recorded (stereo
Ogg/Opus, caller left, agent right) under AGENT_DATA_DIR and uploaded after its transcript.

Rule: only with the platform's consent (`record: true`), never to LiveKit Cloud; journaled
before the first byte is written and kept until the backend acknowledged it, as a transcript
is. Modules: recorder (`CallRecording`: the library's RecorderIO around the session's audio, the
size cap, the file sealed at the call's end), upload (`upload_recording`, `recover_recordings`,
the spool's sweep).
"""

from agent.recording.recorder import (
    SPOOL_DIRNAME,
    CallRecording,
    RecordingUnavailable,
    digest_file,
    spool_dir,
)
from agent.recording.upload import (
    UploadOutcome,
    recover_recordings,
    sweep_spool,
    upload_recording,
)

__all__ = [
    "SPOOL_DIRNAME",
    "CallRecording",
    "RecordingUnavailable",
    "UploadOutcome",
    "digest_file",
    "recover_recordings",
    "spool_dir",
    "sweep_spool",
    "upload_recording",
]
