"""Step 6: what earlier calls left undelivered is delivered later, without anyone asking.

Rule: transcripts first, then recordings (agent.recording). Three places recover: the worker's
main process when it starts (and once more a lease later), each new job in a background task
owned by its call (it never delays the call), and the main process once more after a drain. The
main process's loop also carries the LiveKit connection: there every SQLite and file operation
runs in a thread.
"""

from __future__ import annotations

import asyncio

from agent.backend import Backend, make_backend
from agent.call.state import Call
from agent.config import Settings
from agent.delivery import recover_pending
from agent.journal import LEASE_SECONDS, Journal
from agent.log import get_logger
from agent.recording import recover_recordings

log = get_logger(__name__)


def recover_alongside(call: Call, settings: Settings) -> None:
    """A new job delivers what earlier jobs left, in a task the call owns. The worker starts it
    once the call's own journal row is open (or the call has none): a dead run's row that the
    call adopts (agent.call.resume) is gone by then, never claimed and delivered as `crashed`."""
    assert call.journal is not None and call.backend is not None
    call.spawn(recover_all(call.journal, call.backend, settings), "rec")


async def recover_all(journal: Journal, backend: Backend, settings: Settings) -> None:
    """Transcripts first, then recordings: a recording never delays a transcript."""
    await recover_pending(journal, backend, deadline=settings.delivery_deadline)
    await recover_recordings(journal, backend, deadline=settings.delivery_deadline)


async def startup_recovery(settings: Settings) -> None:
    """At worker start, and once more when the leases of a just-died container's rows have run
    out (a live lease protects a row until then). A container is another host to the journal:
    the first pass notes each of its leases, the second, a lease later, claims those that were
    not refreshed in between (agent.journal.ownership's docstring)."""
    await recover_in_main(settings)
    await asyncio.sleep(LEASE_SECONDS + 1)
    await recover_in_main(settings)


async def recover_in_main(settings: Settings) -> None:
    """Deliver what earlier processes left undelivered. This loop also carries the LiveKit
    connection: every SQLite and file operation runs in a thread."""
    try:
        journal = await asyncio.to_thread(Journal.in_dir, settings.agent_data_dir)
    except Exception as error:
        log.error("recovery.journal_unavailable", error_type=type(error).__name__)
        return
    backend = make_backend(settings)
    try:
        await recover_all(journal, backend, settings)
    finally:
        await backend.aclose()
        await asyncio.to_thread(journal.close)
