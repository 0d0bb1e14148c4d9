"""A call row's lease, kept fresh while its call or its delivery runs.

Rule: while a process works on a row it refreshes the row's lease every third of a lease
(`agent.journal.ownership`), off the event loop; when it stops (done, cancelled) it hands the row
back rather than leave it leased until the process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from agent.journal import LEASE_REFRESH_SECONDS, LEASE_SECONDS, Journal
from agent.log import get_logger

log = get_logger(__name__)


async def keep_lease(journal: Journal, call_id: str, *, interval: float | None = None) -> None:
    """Refresh this process's lease on a call every `interval` seconds (default: a third of the
    lease, 10 s for the 30 s lease) until cancelled; the live job runs it for the whole call.
    Returns when the row is no longer ours."""
    if interval is None:
        interval = journal.lease_seconds * LEASE_REFRESH_SECONDS / LEASE_SECONDS
    while True:
        await asyncio.sleep(interval)
        try:
            held = await asyncio.to_thread(journal.refresh_lease, call_id)
        except Exception as error:  # a busy or full disk must not end the call
            log.warning("journal.lease_refresh_failed", call_id=call_id, error=repr(error))
            continue
        if not held:
            # Not ours any more. Delivered, dead-lettered or released by our own delivery is the
            # normal end of a call; taken over by another process means our lease ran out.
            try:
                holder = await asyncio.to_thread(journal.holder, call_id)
            except Exception:
                holder = None
            if holder is not None and holder != journal.owner:
                log.warning("journal.lease_lost", call_id=call_id, claimed_by_pid=holder.pid)
            else:
                log.debug("journal.lease_ended", call_id=call_id)
            return


@contextlib.asynccontextmanager
async def holding_lease(journal: Journal, call_id: str) -> AsyncIterator[None]:
    # A delivery may outlast one lease (deadline 30 s, lease 30 s): keep it fresh meanwhile.
    keeper = asyncio.create_task(keep_lease(journal, call_id), name=f"lease:{call_id}")
    try:
        yield
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper


async def release_shielded(journal: Journal, call_id: str) -> None:
    # Used when cancelled mid-delivery (session_end_timeout, shutdown): hand the row back now
    # rather than leave it leased until this process dies; shielded so the release completes.
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.shield(asyncio.to_thread(journal.release, call_id))
