"""Recordings to the backend: one sealed part at a time, journal first, file deleted last.

Rule: the transcript's rules (agent.delivery.post), applied to a file: only the row's owner
uploads it; an acknowledged upload (2xx with an acknowledgement, or 409) turns the row into a
tombstone and only then is the file deleted; another 4xx keeps row and file as a dead letter
(`python -m agent journal retry` sends it again); anything else releases the row for a later
recovery. A recording never delays a transcript: callers deliver transcripts first. Logs carry
ids, sizes and counts, never audio.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from agent import metrics
from agent.backend import (
    Backend,
    BackendMisconfigured,
    BackendRejected,
    BackendResponseInvalid,
    BackendUnavailable,
)
from agent.delivery.post import METRIC_OUTCOMES, OutcomeStatus, clip
from agent.delivery.recovery import in_turn
from agent.journal import LEASE_REFRESH_SECONDS, Journal, RecordingToSend
from agent.log import get_logger
from agent.recording.recorder import digest_file, spool_dir

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class UploadOutcome:
    recording_id: str
    status: OutcomeStatus
    attempts: int
    detail: str = ""


def _read_sealed(journal: Journal, item: RecordingToSend) -> tuple[RecordingToSend | None, bytes]:
    """The file's bytes, sealing first a row claimed from a process that died mid-call (its
    file as that process left it). (None, b"") when the row is not ours any more."""
    if item.previous_state == "recording" or item.sha256 is None:
        size, sha = digest_file(item.path)
        sealed = journal.seal_recording(item.recording_id, size=size, sha256=sha)
        if sealed is None:
            return None, b""
        item = sealed
    body = item.path.read_bytes()
    return item, body


async def upload_recording(
    journal: Journal, backend: Backend, item: RecordingToSend, *, deadline: float
) -> UploadOutcome:
    """Upload one recording this process owns within `deadline` seconds. Never raises but
    CancelledError: the outcome says what happened, the journal keeps what was not delivered."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    rec_id = item.recording_id
    fields: dict[str, object] = {
        "recording_id": rec_id,
        "session_id": item.session_id,
        "part": item.part,
    }
    try:
        sealed, body = await asyncio.to_thread(_read_sealed, journal, item)
    except FileNotFoundError:
        # nothing left to send (a spool wiped by hand): kept as a dead letter, said loudly
        await _journal_step(journal.mark_recording_dead, rec_id, "file missing")
        log.error("recording.file_missing", **fields)
        return UploadOutcome(rec_id, "rejected", 0, "file missing")
    except Exception as error:
        await _release(journal, rec_id)
        log.error("recording.read_failed", error_type=type(error).__name__, **fields)
        return UploadOutcome(rec_id, "deferred", 0, type(error).__name__)
    if sealed is None:
        return UploadOutcome(rec_id, "deferred", 0, "held by another process")
    if not body:
        # killed before the encoder's first write (its first 2.5 s): nothing was recorded,
        # and an empty body would only be refused for ever
        if await _journal_step(journal.drop_empty_recording, rec_id):
            await asyncio.to_thread(sealed.path.unlink, missing_ok=True)
        log.warning("recording.empty", **fields)
        return UploadOutcome(rec_id, "delivered", 0, "empty: nothing was recorded")
    if sealed.sha256 is not None and sealed.size != len(body):
        # the file changed after it was sealed: not what the journal promised
        await _journal_step(journal.mark_recording_dead, rec_id, "file changed after sealing")
        log.error("recording.file_changed", sealed_size=sealed.size, size=len(body), **fields)
        return UploadOutcome(rec_id, "rejected", 0, "file changed after sealing")
    attempts = await asyncio.to_thread(journal.begin_recording_attempt, rec_id)
    fields |= {"size": len(body), "attempts": attempts}
    try:
        remaining = deadline - (loop.time() - started)
        if remaining <= 0:
            raise TimeoutError
        async with asyncio.timeout(remaining), _holding_lease(journal, rec_id):
            receipt = await backend.put_recording(
                sealed.session_id,
                sealed.attempt_number,
                sealed.part,
                body,
                deadline=remaining,
            )
    except asyncio.CancelledError:
        await _release(journal, rec_id)
        raise
    except BackendRejected as error:
        reason = clip(f"{error.status}: {error.reason}")
        await _journal_step(journal.mark_recording_dead, rec_id, reason)
        log.error("recording.rejected", status=error.status, reason=reason, **fields)
        return _counted(UploadOutcome(rec_id, "rejected", attempts, reason))
    except BackendMisconfigured as error:
        await _release(journal, rec_id)
        log.warning("recording.misconfigured", status=error.status, cause=error.cause, **fields)
        detail = clip(f"{error.status}: {error.cause}")
        return _counted(UploadOutcome(rec_id, "misconfigured", attempts, detail))
    except (BackendUnavailable, BackendResponseInvalid, TimeoutError) as error:
        await _release(journal, rec_id)
        cause = "timeout" if isinstance(error, TimeoutError) else type(error).__name__
        log.warning("recording.deferred", cause=cause, error=clip(str(error)), **fields)
        return _counted(UploadOutcome(rec_id, "deferred", attempts, cause))
    except Exception as error:
        await _release(journal, rec_id)
        log.exception("recording.upload_failed", error_type=type(error).__name__, **fields)
        return _counted(UploadOutcome(rec_id, "deferred", attempts, type(error).__name__))
    if await _journal_step(journal.mark_recording_delivered, rec_id):
        # only once the journal says delivered: a crash before this leaves the file for the
        # spool's sweep, never a row without its file
        await asyncio.to_thread(sealed.path.unlink, missing_ok=True)
    log.info(
        "recording.delivered",
        status=receipt.status,
        http_attempts=receipt.attempts,
        elapsed_ms=round((loop.time() - started) * 1000, 1),
        **fields,
    )
    return _counted(UploadOutcome(rec_id, receipt.status, attempts))


@contextlib.asynccontextmanager
async def _holding_lease(journal: Journal, rec_id: str) -> AsyncIterator[None]:
    """Keep the row's lease while a long upload runs, so no other process claims it."""

    async def refresh() -> None:
        while True:
            await asyncio.sleep(LEASE_REFRESH_SECONDS)
            with contextlib.suppress(Exception):  # a missed refresh only shortens the lease
                await asyncio.to_thread(journal.refresh_recording_lease, rec_id)

    task = asyncio.create_task(refresh(), name="recording.lease")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _counted(outcome: UploadOutcome) -> UploadOutcome:
    counted = METRIC_OUTCOMES[outcome.status]
    retried = counted == "delivered" and outcome.attempts > 1
    metrics.recording_upload("retried" if retried else counted)
    return outcome


async def _journal_step(operation: Callable[..., object], *args: object) -> bool:
    """Bookkeeping after the upload: a journal failure (disk full) must not raise; the row
    stays as it was and a later recovery gets a 409 for it."""
    try:
        result = await asyncio.to_thread(operation, *args)
    except Exception as error:
        log.error(
            "journal.write_failed",
            operation=getattr(operation, "__name__", "?"),
            error_type=type(error).__name__,
        )
        return False
    return bool(result)


async def _release(journal: Journal, rec_id: str) -> None:
    # as agent.delivery.lease.release_shielded: a cancelled upload still gives its row back
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(_journal_step(journal.release_recording, rec_id))


def sweep_spool(journal: Journal) -> int:
    """Delete spool files no row stands for (their upload was acknowledged just before a
    crash). Safe while calls record: a row is written before its file, and the directory is
    listed before the rows are read."""
    directory = spool_dir(journal.path.parent)
    try:
        files = [p for p in directory.iterdir() if p.suffix == ".ogg"]
    except FileNotFoundError:
        return 0
    kept = journal.recording_paths()
    removed = 0
    for path in files:
        if path not in kept:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


async def recover_recordings(
    journal: Journal, backend: Backend, *, deadline: float
) -> list[UploadOutcome]:
    """Upload every recording another process left (dead mid-call, or deferred), after the
    transcripts (callers run this after `recover_pending`). On the first deferred or
    misconfigured outcome the rest are released untouched, as for transcripts."""

    def housekeeping() -> tuple[int, int, list[RecordingToSend]]:
        pruned = journal.prune_delivered_recordings()
        swept = sweep_spool(journal)
        return pruned, swept, journal.claim_recordings()

    pruned, swept, claimed = await asyncio.to_thread(housekeeping)
    if swept:
        log.info("recording.spool_swept", count=swept)
    if not claimed:
        log.debug("recording.nothing_to_recover", tombstones_pruned=pruned)
        return []
    log.info("recording.claimed", count=len(claimed))

    async def send(item: RecordingToSend) -> UploadOutcome:
        return await upload_recording(journal, backend, item, deadline=deadline)

    async def release(item: RecordingToSend) -> None:
        await _release(journal, item.recording_id)

    outcomes, remaining = await in_turn(claimed, send, release)
    counts = Counter(outcome.status for outcome in outcomes)
    log.info(
        "recording.recovered",
        claimed=len(claimed),
        delivered=counts["delivered"] + counts["already_delivered"],
        deferred=counts["deferred"] + counts["misconfigured"],
        rejected=counts["rejected"],
        not_attempted=remaining,
    )
    return outcomes
