"""Who owns a call row, and when another process may take it over.

Rule: each call row has exactly one owner, a process identified by (host, boot id, pid, start
ticks), holding a lease. Only the owner may refresh, release, deliver-and-delete or dead-letter a
row; any other process takes a row over only through `claim_recoverable` (under BEGIN IMMEDIATE:
a look at the candidates, then one UPDATE), and only when the lease expired or the owner process
is provably gone. So two processes never deliver one transcript at once, and a live call is never
taken over.

Nothing here reads the wall clock to decide ownership: an NTP step of minutes must not make a live
owner look dead or its lease look expired. The owner's start mark is its start in clock ticks since
boot (/proc/<pid>/stat field 22) under the kernel's boot id; the lease is measured on
CLOCK_MONOTONIC (`time.monotonic()`, system-wide since boot on Linux) and is comparable only on the
host and boot that wrote it. A host is the host name plus the pid namespace (a pid means nothing
outside its namespace, and containers may share a host name):
- same host, same boot: expired when `lease_until` is past; the owner is gone when its pid is not
  running with the same start ticks (or is a zombie).
- same host, another boot: the machine rebooted since; the owner is gone, its lease meaningless.
- another host (a volume shared between containers): neither its pid nor its clock can be read
  from here. Every write of the owner bumps `lease_generation`; a claimer records the generation
  with its own monotonic time the first time it sees it (`lease_watch`, per observing host and
  boot) and claims only after a whole lease of its own time without a new generation. The worker
  sweeps again one lease after start-up for exactly this case.
- a row migrated from a version 1 file has no boot id: on this host name its older worker is
  gone; from another, the generation rule applies.
`updated_at` is the wall clock, for display and age only (and the rebuilt transcript's endedAt).
"""

from __future__ import annotations

import os
import socket
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

# The live job refreshes every LEASE_REFRESH_SECONDS; three missed refreshes and the row is fair
# game for recovery even if the owner process still exists (for example a hung event loop).
LEASE_SECONDS = 30.0
LEASE_REFRESH_SECONDS = 10.0

_PROC = Path("/proc")


def current_host() -> str:
    """This host as an owner's identity: the host name plus the pid namespace, because a pid
    means something only inside its namespace (two containers given the same host name must
    not read each other's pids). A process in another namespace counts as another host."""
    try:
        namespace = os.readlink(_PROC / "self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}/{namespace}"


def current_boot_id() -> str:
    """The kernel's id of this boot: a process start in ticks, or a CLOCK_MONOTONIC reading,
    means something only together with it. Off Linux (a developer's laptop) the boot time
    stands in, which a clock step can move: the clock-step guarantee is Linux's."""
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return f"boot-time-{int(psutil.boot_time())}"


def process_start_ticks(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (field 22 of /proc/<pid>/stat): never moved
    by the wall clock. None when no such process runs or it is a zombie (killed, not yet reaped:
    gone all the same). Raises PermissionError when it exists but may not be inspected."""
    if not (_PROC / "self/stat").exists():
        try:  # off Linux: the start time in centiseconds, which a clock step can move
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            return round(process.create_time() * 100)
        except psutil.NoSuchProcess:
            return None
        except psutil.AccessDenied as error:
            raise PermissionError(pid) from error
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: fields resume after the last
    # ')'. The rest starts at field 3 (state), so field 22 is the 20th of them.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


@dataclass(frozen=True, slots=True)
class Owner:
    """A process: its host, the boot it runs in, its pid, and its start in ticks since that
    boot (which tells it apart from a later process that reuses the pid)."""

    host: str
    boot_id: str
    pid: int
    start_ticks: int

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()
        ticks = process_start_ticks(pid)
        if ticks is None:
            raise RuntimeError("journal: cannot read this process's own start ticks")
        return cls(current_host(), current_boot_id(), pid, ticks)


def owner_alive(
    host: str | None,
    boot_id: str | None,
    pid: int | None,
    start_ticks: int | None,
    *,
    here: tuple[str, str] | None = None,
) -> bool:
    """Is the owner process still running? `here` is (host, boot id) of the asking process. A
    process on another host cannot be checked from here, so it counts as alive (only its lease
    can lapse); one of this host under another boot id is gone (the machine rebooted since)."""
    if pid is None:
        return False
    here_host, here_boot = here or (current_host(), current_boot_id())
    if host != here_host:
        return True
    if boot_id != here_boot:
        return False
    try:
        return _local_owner_alive(pid, start_ticks)
    except Exception:
        # When in doubt the owner counts as alive: its lease still lapses.
        return True


def _local_owner_alive(pid: int, start_ticks: int | None) -> bool:
    try:
        ticks = process_start_ticks(pid)
    except PermissionError:
        return True  # it exists and is not ours to inspect: do not steal its row
    # Another start: the pid now belongs to another process.
    return ticks is not None and ticks == start_ticks


class CallHeldElsewhere(Exception):
    """Another live process holds this call's row (it claimed it for recovery): only it may
    deliver it now, so two processes never post one transcript at once."""


class AttemptHeldElsewhere(Exception):
    """Another live process holds a live call of the same session attempt (two jobs dispatched
    into one room): only one job may run a room's call at a time, so the newcomer stands down."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        super().__init__(f"session attempt held by the live call {call_id!r}")


class Ownership:
    """The lease rules of `Journal`, as SQL fragments and checks over a row's owner columns."""

    owner: Owner
    lease_seconds: float
    _here: tuple[str, str]
    _alive_memo: dict[tuple[str | None, str | None, int | None, int | None], bool]

    def _owner_alive_cached(
        self, host: str | None, boot_id: str | None, pid: int | None, start_ticks: int | None
    ) -> bool:
        key = (host, boot_id, pid, start_ticks)
        if key not in self._alive_memo:
            self._alive_memo[key] = owner_alive(*key, here=self._here)
        return self._alive_memo[key]

    def _mine(self) -> dict[str, Any]:
        return {
            "host": self.owner.host,
            "boot": self.owner.boot_id,
            "pid": self.owner.pid,
            "ticks": self.owner.start_ticks,
        }

    _IS_MINE = (
        "owner_host IS :host AND owner_boot_id IS :boot AND owner_pid IS :pid "
        "AND owner_start_ticks IS :ticks"
    )
    _SET_MINE = (
        "owner_host = :host, owner_boot_id = :boot, owner_pid = :pid, owner_start_ticks = :ticks"
    )
    _SET_NOBODY = (
        "owner_host = NULL, owner_boot_id = NULL, owner_pid = NULL, owner_start_ticks = NULL, "
        "lease_until = 0, lease_generation = lease_generation + 1"
    )
    _OWNER_COLUMNS = (
        "owner_host, owner_boot_id, owner_pid, owner_start_ticks, lease_until, lease_generation"
    )

    def _lapsed(
        self,
        conn: sqlite3.Connection,
        call_id: str,
        owner: tuple[Any, ...],
        now: float,
        *,
        watch: bool,
    ) -> bool:
        """May a process other than the row's owner take the row now? `owner` is the row's
        `_OWNER_COLUMNS`. True for a released row, an owner provably gone, or a lease that ran
        out (the module docstring has the rule per host and boot). `watch`: record what this
        process sees of another host's lease (claims do; a mere look does not)."""
        host, boot_id, pid, ticks, lease_until, generation = owner
        if host is None and pid is None:
            return True  # released: free for anyone
        here_host, here_boot = self._here
        if boot_id is None and host == socket.gethostname():
            return True  # a v1 row of this host (migrated): its older worker process is gone
        if host == here_host:
            if boot_id != here_boot:
                return True  # written before this host rebooted: owner and lease are gone
            if lease_until is not None and lease_until < now:
                return True
            return not self._owner_alive_cached(host, boot_id, pid, ticks)
        # Another host: its clock is not ours. A whole lease of our time without a new write.
        key = (call_id, here_host, here_boot)
        seen = conn.execute(
            "SELECT generation, seen_at FROM lease_watch "
            "WHERE call_id = ? AND observer_host = ? AND observer_boot_id = ?",
            key,
        ).fetchone()
        if seen is not None and seen[0] == generation:
            return bool(now - seen[1] >= self.lease_seconds)
        if watch:
            conn.execute(
                "INSERT OR REPLACE INTO lease_watch VALUES (?, ?, ?, ?, ?)",
                (*key, generation, now),
            )
        return False

    def _held_by_other(
        self, conn: sqlite3.Connection, call_id: str, owner: tuple[Any, ...], now: float
    ) -> bool:
        """Does another process hold this row (its owner alive, its lease fresh)?"""
        if tuple(owner[:4]) == tuple(self._mine().values()):
            return False
        return not self._lapsed(conn, call_id, owner, now, watch=False)
