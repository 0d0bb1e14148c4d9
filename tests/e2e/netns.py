"""The e2e network namespace: WebRTC stacks skip loopback addresses for media, so the e2e layer
runs inside a network namespace of its own with one veth pair carrying a test address.

Inside it there is ``lo`` (127.0.0.1) and ``v0`` (10.213.0.1/24, peer ``v1``) and nothing
else: no route leaves the namespace, so no packet can reach this machine's real interfaces.
Creating it needs root (``unshare --net``) and ``ip`` (iproute2); a veth pair works where a
dummy interface does not (no module).

Use: ``python -m tests.e2e.netns CMD [ARGS...]`` runs CMD in a fresh namespace (as root), e.g.
``python -m tests.e2e.netns python -m pytest -m e2e``. ``tests/e2e/conftest.py`` does the same
for pytest on its own (see there).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Final

TEST_ADDRESS: Final = "10.213.0.1"
TEST_PREFIX: Final = 24
# set (to "1") in the environment of everything started inside the namespace
ENV_FLAG: Final = "TESTS_E2E_NETNS"

SETUP_SCRIPT: Final = (
    "set -e; "
    "ip link set lo up; "
    "ip link add v0 type veth peer name v1; "
    f"ip addr add {TEST_ADDRESS}/{TEST_PREFIX} dev v0; "
    "ip link set v0 up; "
    "ip link set v1 up"
)


def _address_is_local(address: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True


def in_test_netns() -> bool:
    """True inside a namespace made by this module (the flag is set and the address is ours)."""
    return os.environ.get(ENV_FLAG) == "1" and _address_is_local(TEST_ADDRESS)


def netns_unavailable_reason() -> str | None:
    """Why a namespace cannot be created here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "e2e needs Linux network namespaces"
    if os.geteuid() != 0:
        return "e2e needs root to create a network namespace (unshare --net)"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"e2e needs `{tool}` to create its network namespace"
    try:
        probe = subprocess.run(
            ["unshare", "--net", "--", "sh", "-c", SETUP_SCRIPT],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"cannot create a network namespace: {error}"
    if probe.returncode != 0:
        detail = (probe.stderr or probe.stdout).strip().splitlines()
        return f"cannot create a network namespace: {detail[-1] if detail else probe.returncode}"
    return None


def netns_argv(argv: list[str]) -> list[str]:
    """The command line that runs ``argv`` in a fresh, set-up namespace (exec, same pid)."""
    return ["unshare", "--net", "--", "sh", "-c", f'{SETUP_SCRIPT}; exec "$@"', "sh", *argv]


def netns_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: ours) plus the flag that says "inside the test namespace"."""
    result = dict(os.environ if env is None else env)
    result[ENV_FLAG] = "1"
    return result


def current_netns_id(pid: int | str = "self") -> str | None:
    """The kernel's id of a process's network namespace ("net:[4026...]"), None if gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def kill_netns_processes(netns_id: str, *, sig: int = signal.SIGKILL) -> list[int]:
    """Signal every process still living in the namespace ``netns_id`` (a namespace this
    module made, so they are all ours). Returns their pids."""
    if netns_id == current_netns_id():
        raise ValueError("refusing to signal the processes of our own network namespace")
    killed: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        if current_netns_id(entry.name) != netns_id:
            continue
        try:
            os.kill(int(entry.name), sig)
            killed.append(int(entry.name))
        except OSError:
            pass
    return killed


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m tests.e2e.netns CMD [ARGS...]")
    reason = netns_unavailable_reason()
    if reason is not None:
        raise SystemExit(reason)
    full = netns_argv(argv)
    os.execvpe(full[0], full, netns_env())


if __name__ == "__main__":
    main(sys.argv[1:])
