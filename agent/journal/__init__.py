"""The durable local store of turns and undelivered transcripts (SQLite in AGENT_DATA_DIR).

Rule: a transcript leaves the journal only when the backend has it (`mark_delivered`) and never
silently: a rejected one stays as a dead letter. Each call row has exactly one owner holding a
lease (`ownership`); whoever ends up holding a row delivers the best transcript anyone wrote for
it (`store`). Modules:
- schema: the file's tables, version, migration and WAL setup
- ownership: who owns a row (host, boot id, pid, start ticks) and when a lease has lapsed
- base: the connections, the single lock and transactions, checkpoints
- payloads: journaled rows <-> transcripts, and which transcript is best
- live: a call being journaled (open, append turns, refresh the lease)
- ending: the end of a call (final transcript, delivery bookkeeping, dead letters)
- recovery: claiming rows whose owner is gone or whose lease lapsed
- earlier: the call a re-dispatched job continues (by session and attempt, any call id)
- queries, operator: reads for the worker and for `python -m agent journal`
- recordings: a recorded call's file, journaled before it exists, until the backend holds it
- store: `Journal`, all of the above in one object
"""

from agent.journal.earlier import EarlierCall
from agent.journal.live import APPENDS_PER_FORCED_CHECKPOINT
from agent.journal.operator import JournalRow, RecordingRow
from agent.journal.ownership import (
    LEASE_REFRESH_SECONDS,
    LEASE_SECONDS,
    AttemptHeldElsewhere,
    CallHeldElsewhere,
    Owner,
)
from agent.journal.payloads import RowUnreadable
from agent.journal.recordings import RecordingToSend
from agent.journal.recovery import ClaimedCall
from agent.journal.schema import JOURNAL_FILENAME, CallState, RecordingState
from agent.journal.store import Journal

__all__ = [
    "APPENDS_PER_FORCED_CHECKPOINT",
    "JOURNAL_FILENAME",
    "LEASE_REFRESH_SECONDS",
    "LEASE_SECONDS",
    "AttemptHeldElsewhere",
    "CallHeldElsewhere",
    "CallState",
    "ClaimedCall",
    "EarlierCall",
    "Journal",
    "JournalRow",
    "Owner",
    "RecordingRow",
    "RecordingState",
    "RecordingToSend",
    "RowUnreadable",
]
