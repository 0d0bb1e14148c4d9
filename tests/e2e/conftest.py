"""The e2e layer's pytest plumbing: the network-namespace relay and the fixtures.

Why a relay: WebRTC media skips loopback, so e2e tests must run inside a network namespace with
a veth test address (``tests/e2e/netns.py``). ``uv run pytest`` (the one test command) starts
outside it, so:

* outside the namespace, every collected test marked ``e2e`` is replaced by a relay item of the
  same node id, moved to the end of the run; ONE inner pytest session on all of them, inside a
  fresh namespace (``unshare --net``, as root), starts in the background as the run begins, so
  the e2e layer (mostly waiting on real-time audio) overlaps the other layers (mostly CPU) on
  the other core; each relay item then waits for it and reports the inner outcome of its test
  (pass, failure text, or skip reason). The inner output is kept in
  ``<basetemp>/e2e-netns.log`` and also streamed to our stdout with ``-s``;
* inside the namespace (``TESTS_E2E_NETNS=1`` and the test address present) the e2e tests run
  as they are, and each report is written as a JSON line for the outer session;
* where a namespace cannot be created (not root, no ``unshare``/``ip``), e2e tests are skipped
  with the reason.

Anything left in the inner namespace when the inner session ends is killed; an outer session
that ends first (``-x``, Ctrl-C) interrupts the inner one. Environment knobs:
``TESTS_E2E_TIMEOUT`` (seconds for the whole inner session), ``TESTS_E2E_OVERLAP=0`` (start the
inner session only when the first relay item runs, after every other test, as before).

Fixtures for e2e tests (each refuses to run outside the namespace):

* ``standin``: a started ``StandIn`` on a free loopback port (stopped at teardown);
* ``processes``: a ``ProcessGroup`` logging under the test's tmp dir; everything in it is killed
  at teardown, before the stand-in stops (``processes.start_worker(env)``,
  ``processes.start_module(module, env, *args)``);
* ``callers``: ``await callers.join(identity, room, agent_name=None) -> Caller`` (connected,
  microphone on); all of them leave at teardown, before the stand-in stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

from tests.e2e.caller import Caller
from tests.e2e.harness import ProcessGroup, free_port
from tests.e2e.netns import (
    current_netns_id,
    in_test_netns,
    kill_netns_processes,
    netns_argv,
    netns_env,
    netns_unavailable_reason,
)
from tests.e2e.standin import StandIn, participant_token

RESULTS_ENV: Final = "TESTS_E2E_RESULTS"
TIMEOUT_ENV: Final = "TESTS_E2E_TIMEOUT"
OVERLAP_ENV: Final = "TESTS_E2E_OVERLAP"
BROWSER_TESTS: Final = "test_browser_e2e.py"
E2E_DIR: Final = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------- relay
@dataclass
class _Outcome:
    failed: list[str] = field(default_factory=list)
    skipped: str | None = None
    passed: bool = False


@dataclass
class _RelayRun:
    nodeids: list[str] = field(default_factory=list)
    outcomes: dict[str, _Outcome] = field(default_factory=dict)
    returncode: int | None = None
    log_path: Path | None = None
    problem: str | None = None
    done: bool = False
    started: bool = False
    thread: threading.Thread | None = None
    inner: subprocess.Popen[bytes] | None = None
    stream: bool = True  # copy the inner output to our stdout


_RELAY_KEY = pytest.StashKey[_RelayRun]()


def _is_e2e(item: pytest.Item) -> bool:
    return item.get_closest_marker("e2e") is not None and E2E_DIR in item.path.parents


class NetnsRelayItem(pytest.Item):
    """Stands for one e2e test outside the namespace: reports its inner outcome."""

    def __init__(self, *, original: pytest.Item, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.original_nodeid = original.nodeid
        self._location = original.reportinfo()
        self.own_markers.extend(original.iter_markers())

    def runtest(self) -> None:
        run = self.config.stash[_RELAY_KEY]
        _start_inner_session(self.session, run)
        assert run.thread is not None
        run.thread.join()
        outcome = run.outcomes.get(self.original_nodeid)
        where = f"(inner log: {run.log_path})"
        if outcome is None:
            if run.problem:
                pytest.fail(f"{run.problem} {where}", pytrace=False)
            if run.returncode == 1 and self.config.option.maxfail == 1:
                pytest.skip("not run: the namespace session stopped at the first failure")
            pytest.fail(
                f"no result from the namespace session (exit {run.returncode}) {where}",
                pytrace=False,
            )
        if outcome.failed:
            pytest.fail("\n".join(outcome.failed) + f"\n{where}", pytrace=False)
        if outcome.skipped is not None:
            pytest.skip(outcome.skipped)
        if not outcome.passed:
            pytest.fail(f"the test never finished in the namespace session {where}", pytrace=False)

    def reportinfo(self) -> tuple[os.PathLike[str] | str, int | None, str]:
        path, line, name = self._location
        return path, line, f"{name} [in netns]"


@pytest.hookimpl(trylast=True)  # after -m/-k deselection
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    e2e = [item for item in items if _is_e2e(item)]
    if in_test_netns():
        results = os.environ.get(RESULTS_ENV)
        if results:  # an inner session: tell the outer one which namespace to sweep
            with open(results, "a") as out:
                out.write(json.dumps({"netns": current_netns_id()}) + "\n")
            # the browser (the most CPU-hungry and timing-sensitive) last: by then the outer
            # session's other layers, which run meanwhile, are usually done
            items[:] = [i for i in items if i.path.name != BROWSER_TESTS] + [
                i for i in items if i.path.name == BROWSER_TESTS
            ]
        return
    if not e2e:
        return
    reason = netns_unavailable_reason()
    if reason is not None:
        for item in e2e:
            item.add_marker(pytest.mark.skip(reason=reason))
        return
    config.stash[_RELAY_KEY] = _RelayRun()
    for index, item in enumerate(items):
        if item in e2e:
            assert item.parent is not None
            items[index] = NetnsRelayItem.from_parent(item.parent, name=item.name, original=item)
    # the relay items wait for the inner session: last, so the other layers run meanwhile
    items[:] = [i for i in items if not isinstance(i, NetnsRelayItem)] + [
        i for i in items if isinstance(i, NetnsRelayItem)
    ]


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    run = session.config.stash.get(_RELAY_KEY, None)
    if run is None or os.environ.get(OVERLAP_ENV, "1") == "0":
        return
    if any(isinstance(item, NetnsRelayItem) for item in session.items):
        run.stream = session.config.option.capture == "no"
        _start_inner_session(session, run)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An outer session that stops early (-x, Ctrl-C) does not leave the inner one running."""
    run = session.config.stash.get(_RELAY_KEY, None)
    if run is None or run.thread is None or not run.thread.is_alive():
        return
    if run.inner is not None and run.inner.poll() is None:
        run.problem = run.problem or "the outer session ended first"
        with contextlib.suppress(ProcessLookupError):
            os.kill(run.inner.pid, signal.SIGINT)  # pytest runs its teardowns on SIGINT
    run.thread.join(60)


def _start_inner_session(session: pytest.Session, run: _RelayRun) -> None:
    """Once: the inner session on the final selection (whatever later hooks deselected), in a
    thread the relay items join."""
    if run.started:
        return
    run.started = True
    # the base temp dir made here, before the thread, so the two never race to create it
    session.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    run.nodeids = [
        item.original_nodeid for item in session.items if isinstance(item, NetnsRelayItem)
    ]
    run.thread = threading.Thread(
        target=_run_inner_session, args=(session.config, run), name="e2e-netns", daemon=True
    )
    run.thread.start()


def _inner_timeout(count: int) -> float:
    configured = os.environ.get(TIMEOUT_ENV)
    if configured:
        return float(configured)
    return float(min(1800, 120 + 180 * count))


def _run_inner_session(config: pytest.Config, run: _RelayRun) -> None:
    """Run the e2e tests once in a fresh namespace and collect their outcomes."""
    run.done = True
    basetemp = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    run.log_path = Path(basetemp) / "e2e-netns.log"
    results = Path(basetemp) / "e2e-netns-results.jsonl"
    argv = [sys.executable, "-m", "pytest", *run.nodeids, f"--basetemp={basetemp}/inner"]
    if config.option.maxfail == 1:
        argv.append("-x")
    if config.option.capture == "no":
        argv.append("-s")
    argv += ["-v"] * max(0, int(config.option.verbose))
    env = netns_env()
    env[RESULTS_ENV] = str(results)
    timeout = _inner_timeout(len(run.nodeids))
    with run.log_path.open("w") as log:
        inner = subprocess.Popen(
            netns_argv(argv),
            cwd=config.rootpath,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        run.inner = inner
        pump = threading.Thread(target=_pump, args=(inner, log, run.stream), daemon=True)
        pump.start()
        try:
            run.returncode = inner.wait(timeout)
        except subprocess.TimeoutExpired:
            run.problem = f"the namespace session timed out after {timeout:.0f}s"
            os.kill(inner.pid, signal.SIGINT)  # pytest runs its teardowns on SIGINT
            try:
                run.returncode = inner.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(inner.pid, signal.SIGKILL)
                run.returncode = inner.wait(10)
        finally:
            pump.join(10)
    netns_id = _read_results(results, run)
    if netns_id and netns_id != current_netns_id():
        leaked = kill_netns_processes(netns_id)
        if leaked:
            print(f"e2e: killed processes left in the test namespace: {leaked}")


def _pump(inner: subprocess.Popen[bytes], log: Any, stream: bool) -> None:
    assert inner.stdout is not None
    for raw in inner.stdout:
        line = raw.decode(errors="replace")
        log.write(line)
        log.flush()
        if stream:
            sys.stdout.write(line)
            sys.stdout.flush()


def _read_results(path: Path, run: _RelayRun) -> str | None:
    netns_id: str | None = None
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        run.problem = run.problem or "the namespace session wrote no results"
        return None
    for line in lines:
        entry = json.loads(line)
        if "netns" in entry:
            netns_id = entry["netns"]
            continue
        outcome = run.outcomes.setdefault(entry["nodeid"], _Outcome())
        if entry["outcome"] == "failed":
            outcome.failed.append(f"[{entry['when']}] {entry['text']}")
        elif entry["outcome"] == "skipped":
            outcome.skipped = entry["text"]
        elif entry["when"] == "call":
            outcome.passed = True
    return netns_id


# inner side: one JSON line per report, for the outer session
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = os.environ.get(RESULTS_ENV)
    if not path or not in_test_netns():
        return
    if report.outcome == "skipped":
        longrepr = report.longrepr
        text = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
    elif report.outcome == "failed":
        sections = "\n".join(f"----- {name} -----\n{body}" for name, body in report.sections)
        text = report.longreprtext + ("\n" + sections if sections else "")
    else:
        text = ""
    entry = {"nodeid": report.nodeid, "when": report.when, "outcome": report.outcome, "text": text}
    with open(path, "a") as results:
        results.write(json.dumps(entry) + "\n")


# ------------------------------------------------------------------------------- fixtures
def _require_netns() -> None:
    if not in_test_netns():
        pytest.skip("e2e fixtures run only inside the test network namespace")


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    _require_netns()
    server = StandIn(port=free_port())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def processes(standin: StandIn, tmp_path: Path) -> Iterator[ProcessGroup]:
    """Depends on ``standin`` so that its processes are killed before the stand-in stops."""
    group = ProcessGroup(tmp_path / "logs")
    try:
        yield group
    finally:
        group.stop_all()
        for proc in group.processes:
            if proc.returncode not in (0, None) and not proc.killed_at_teardown:
                print(f"{proc.name} exit code {proc.returncode}; log: {proc.log_path}")


class Callers:
    """Connects callers to rooms of the stand-in; all leave at teardown."""

    def __init__(self, standin: StandIn) -> None:
        self.standin = standin
        self.callers: list[Caller] = []

    async def join(self, identity: str, room: str, *, agent_name: str | None = None) -> Caller:
        token = participant_token(
            identity, room, api_key=self.standin.api_key, api_secret=self.standin.api_secret
        )
        caller = Caller(self.standin.url, token, agent_name=agent_name)
        self.callers.append(caller)
        await caller.connect()
        return caller

    async def leave_all(self) -> None:
        for caller in self.callers:
            await caller.leave()


@pytest.fixture
async def callers(standin: StandIn) -> AsyncIterator[Callers]:
    group = Callers(standin)
    try:
        yield group
    finally:
        await group.leave_all()
