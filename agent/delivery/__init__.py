"""Transcript delivery with nothing lost: journal first, backend second, delete last.

Rule: a transcript is written to the journal (`finish_call`) before the first byte goes to the
backend, and removed only after the backend acknowledged it (a 2xx with a JSON object body or 204,
or 409: it already holds an equal or better one). Every failure keeps it: a rejection (other 4xx)
as a dead letter with the server's reason (capped, no turn text in it), anything else as pending,
released so that a later recovery (worker start, next job, drain) can claim it. That includes a
configuration error (401/403, 3xx, 404, 405: outcome `misconfigured`), which recovery retries
once the key, URL or route is fixed. While a delivery is in flight its process holds the row's
lease, so no other process posts the same transcript. All SQLite work goes through
`asyncio.to_thread`: the worker's main loop also carries the LiveKit connection. Logs carry ids
and counts, never transcript text or secrets.

Modules: post (`deliver`: journal first, post within the deadline, the outcome of each answer),
lease (keeping a row's lease while its call or delivery runs), recovery (`recover_pending` for
every process's leftovers, `backstop` for the shutdown callback), checkpoint (`Checkpointer`: the
transcript so far of a live call, coalesced, never journaled, its own rule).
"""

from agent.delivery.checkpoint import Checkpointer
from agent.delivery.lease import keep_lease
from agent.delivery.post import DeliveryOutcome, deliver
from agent.delivery.recovery import backstop, recover_pending

__all__ = [
    "Checkpointer",
    "DeliveryOutcome",
    "backstop",
    "deliver",
    "keep_lease",
    "recover_pending",
]
