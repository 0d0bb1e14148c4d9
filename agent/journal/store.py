"""`Journal`: the durable local store of turns and undelivered transcripts, in one object.

Rule: a transcript leaves the journal only when the backend has it (`mark_delivered`) and never
silently: a rejected one stays as a dead letter. Each call row has exactly one owner, a process
identified by (host, boot id, pid, start ticks), holding a lease. Only the owner may refresh,
release, deliver-and-delete or dead-letter a row; any other process takes a row over only through
`claim_recoverable` (under BEGIN IMMEDIATE: a look at the candidates, then one UPDATE), and only
when the lease expired or the owner process is provably gone. So two processes never deliver one
transcript at once, and a live call is never taken over.

Whoever ends up holding a row delivers the best transcript anyone wrote for it (complete over
incomplete, then more turns): an owner that finishes while recovery holds its row leaves its final
transcript in the row, and the holder's `finish_call`, claim and `mark_delivered` compare against
it. Turns leave the journal only with their delivered row (or the orphan sweep).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from agent.journal.earlier import EarlierCalls
from agent.journal.ending import CallEnd
from agent.journal.live import LiveCall
from agent.journal.operator import OperatorQueries
from agent.journal.queries import Queries
from agent.journal.recordings import Recordings
from agent.journal.recovery import Recovery
from agent.journal.schema import JOURNAL_FILENAME


class Journal(LiveCall, CallEnd, Recovery, EarlierCalls, Queries, OperatorQueries, Recordings):
    """One SQLite connection, shared by the threads `asyncio.to_thread` uses, under a lock.
    Open one per process: an SQLite connection must never cross a fork."""

    @classmethod
    def in_dir(cls, data_dir: str | os.PathLike[str], **kwargs: Any) -> Journal:
        return cls(Path(data_dir) / JOURNAL_FILENAME, **kwargs)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
