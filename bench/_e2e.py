"""What the benchmarks on the e2e stack share (`bench_capacity_deployed.py`, `bench_hangup.py`,
`bench_voice_heard.py`): running inside the test network namespace, and reporting and tearing
down the stack.

The stack itself is the e2e layer's (tests/e2e/README.md): the stand-in, the stubs, the worker
and the callers come from `tests/e2e`, never from copies here.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from tests.e2e.harness import ProcessGroup
from tests.e2e.netns import in_test_netns, netns_argv, netns_env, netns_unavailable_reason
from tests.e2e.standin import StandIn


def run_in_test_netns(script: str, argv: list[str]) -> None:
    """WebRTC media skips loopback (tests/e2e/netns.py): outside the test network namespace, run
    `script` again inside a fresh one (`unshare --net`; exec, so the same pid) and never return;
    where none can be made (not root, no `unshare` or `ip`), exit 1 with
    "<script>: not run: <reason>", writing nothing. Inside it, return."""
    if in_test_netns():
        return
    reason = netns_unavailable_reason()
    if reason is not None:
        raise SystemExit(f"{Path(script).stem}: not run: {reason}")
    full = netns_argv([sys.executable, str(Path(script).resolve()), *argv])
    os.execvpe(full[0], full, netns_env())


def stopped(error: BaseException, processes: ProcessGroup) -> str:
    """A benchmark reports what it got and why it stopped: the error (returned, and printed on
    stderr with the tail of every process's log)."""
    problem = f"{type(error).__name__}: {error}"
    print(f"stopped: {problem}", file=sys.stderr)
    for proc in processes.processes:
        print(f"--- {proc.name} log tail ---\n{proc.log_tail(30)}", file=sys.stderr)
    return problem


async def stop_stack(
    processes: ProcessGroup, standin: StandIn, work: Path, *, keep_logs: bool
) -> None:
    """Every process killed before the stand-in stops (a vanished /agent makes a worker retry),
    then the work directory removed unless its logs are to be kept."""
    processes.stop_all()
    await standin.stop()
    if keep_logs:
        print(f"logs kept in {work / 'logs'}")
    else:
        shutil.rmtree(work, ignore_errors=True)
