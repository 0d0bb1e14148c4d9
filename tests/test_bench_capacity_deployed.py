"""bench/bench_capacity_deployed.py's account of repeated windows (`--repeat`): each level's
median, range and quietest window per arm, and the two arms' cost window by window; its `--pin`
checks and the thread pinning; its `--worker-python` checks and what it records of an
interpreter. The windows and the figures expected of them are written here by hand; no stack
runs (the e2e smoke runs the bench itself: tests/e2e/test_bench_capacity_deployed_e2e.py)."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.bench_capacity_deployed import (
    arms_of,
    interpreter,
    main,
    paired,
    pin_threads,
    summary_of,
    thread_wakeups,
)
from tests.e2e.harness import REPO_ROOT


def window(n: int, index: int, cost: float, *, pss: float = 90.0) -> dict[str, Any]:
    return {
        "n": n,
        "window": index,
        "cpu_s_per_call_s": cost,
        "pss_mb_max": pss,
        "reply_latency_median_ms": 1100.0 + index,
        "harness_cores": 0.4 + index / 10,
    }


def test_summary_gives_each_levels_median_range_and_quietest_window() -> None:
    levels = [
        window(1, 0, 0.14),
        window(1, 1, 0.10),
        window(1, 2, 0.12),
        window(2, 0, 0.11, pss=82.0),
        window(2, 1, 0.09, pss=80.0),
    ]

    summary = summary_of(levels)

    assert summary["by_level"]["1"] == {
        "windows": 3,
        "cpu_s_per_call_s_median": 0.12,
        "cpu_s_per_call_s_min": 0.10,
        "cpu_s_per_call_s_max": 0.14,
        "calls_per_core_median": 8.3,
        "calls_per_core_quietest": 10.0,
        "harness_cores_median": 0.5,
        "pss_mb_max": 90.0,
        "reply_latency_median_ms": 1101.0,
    }
    two = summary["by_level"]["2"]
    assert (two["windows"], two["cpu_s_per_call_s_median"]) == (2, 0.10)
    assert (two["calls_per_core_median"], two["calls_per_core_quietest"]) == (10.0, 11.1)
    assert two["pss_mb_max"] == 82.0
    # the headline figures are N = 1's median window, PSS the largest seen anywhere
    assert summary["calls_per_core_n1"] == 8.3
    assert summary["cpu_s_per_call_s_n1"] == 0.12
    assert summary["pss_mb_max"] == 90.0


def test_summary_of_one_window_per_level_is_that_window() -> None:
    summary = summary_of([window(1, 0, 0.1043)])

    assert summary["calls_per_core_n1"] == 9.6
    assert summary["by_level"]["1"]["cpu_s_per_call_s_min"] == 0.1043
    assert summary["by_level"]["1"]["cpu_s_per_call_s_max"] == 0.1043


def test_paired_divides_each_window_by_the_other_arms_window_of_the_same_round() -> None:
    first = [window(1, 0, 0.10), window(1, 1, 0.12), window(2, 0, 0.10)]
    second = [window(1, 1, 0.09), window(1, 0, 0.11), window(2, 0, 0.08)]

    pairs = paired(first, second)

    assert pairs["1"] == {"ratios": [1.1, 0.75], "ratio_median": 0.925}
    assert pairs["2"] == {"ratios": [0.8], "ratio_median": 0.8}


def test_repeat_below_one_is_refused_with_the_value_named(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--repeat", "0"])

    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--repeat" in err
    assert "got 0" in err


def test_pin_baseline_without_a_baseline_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--pin", "baseline"])

    assert exit_.value.code == 2
    assert "--pin baseline" in capsys.readouterr().err


def test_pin_with_one_cpu_allowed_is_refused_with_the_count_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})

    with pytest.raises(SystemExit) as exit_:
        main(["--pin", "all"])

    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--pin" in err
    assert "may use 1 CPU" in err


def test_pin_threads_moves_every_thread_of_a_process(tmp_path: Path) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("needs two CPUs")
    # a child with a second thread, so that more than the main thread must move
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import threading, time; threading.Thread(target=time.sleep, args=(30,)).start(); "
            "time.sleep(30)",
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while len(os.listdir(f"/proc/{child.pid}/task")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        threads = os.listdir(f"/proc/{child.pid}/task")
        assert len(threads) >= 2

        moved = pin_threads([child.pid], {allowed[0]})

        assert moved == len(threads)
        assert all(os.sched_getaffinity(int(tid)) == {allowed[0]} for tid in threads)
    finally:
        child.kill()
        child.wait()


def test_baseline_python_without_a_baseline_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--baseline-python", sys.executable])

    assert exit_.value.code == 2
    assert "--baseline-python" in capsys.readouterr().err


def test_worker_python_that_cannot_run_is_refused_with_the_path_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "venv" / "bin" / "python"

    with pytest.raises(SystemExit) as exit_:
        main(["--worker-python", str(missing)])

    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--worker-python" in err
    assert str(missing) in err


def test_interpreter_facts_are_those_of_the_interpreter_asked() -> None:
    facts = interpreter(sys.executable)

    assert facts["executable"] == sys.executable
    assert facts["version"] == platform.python_version()
    # ldd, not the interpreter's own maps, says whether the executable needs libpython
    linked = subprocess.run(
        ["ldd", os.path.realpath(sys.executable)], capture_output=True, text=True, check=True
    ).stdout
    assert facts["libpython_shared"] == ("libpython" in linked)


def options(**given: Any) -> argparse.Namespace:
    """The bench's parsed options, as its parser leaves them when none of these is given."""
    defaults: dict[str, Any] = {
        "baseline": None,
        "baseline_env": {},
        "baseline_python": None,
        "record": False,
        "record_arms": False,
        "worker_python": None,
    }
    return argparse.Namespace(**{**defaults, **given})


def test_workers_run_on_this_interpreter_unless_another_is_named(tmp_path: Path) -> None:
    plain = arms_of(options(baseline="HEAD"), tmp_path)
    named = arms_of(options(baseline="HEAD", worker_python="/opt/venv/bin/python"), tmp_path)

    assert [(arm.name, arm.python) for arm in plain] == [
        ("baseline", sys.executable),
        ("shipped", sys.executable),
    ]
    assert [(arm.name, arm.python) for arm in named] == [
        ("baseline", "/opt/venv/bin/python"),
        ("shipped", "/opt/venv/bin/python"),
    ]


def test_baseline_python_moves_only_the_baseline_arm(tmp_path: Path) -> None:
    arms = arms_of(
        options(
            baseline="HEAD",
            worker_python="/opt/optimized/bin/python",
            baseline_python="/opt/pyenv/bin/python",
        ),
        tmp_path,
    )

    assert [(arm.name, arm.source, arm.python) for arm in arms] == [
        ("baseline", tmp_path, "/opt/pyenv/bin/python"),
        ("shipped", REPO_ROOT, "/opt/optimized/bin/python"),
    ]


def test_thread_wakeups_count_each_time_a_thread_blocked_and_woke() -> None:
    # a child whose second thread sleeps 200 times (each sleep blocks, then wakes), then waits
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import threading, time\n"
            "def naps():\n"
            "    for _ in range(200):\n"
            "        time.sleep(0.001)\n"
            "    print('done', flush=True)\n"
            "    time.sleep(30)\n"  # alive: an ended thread's count leaves /proc with it
            "threading.Thread(target=naps).start()\n"
            "time.sleep(30)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "done"

        woke = thread_wakeups(child.pid)

        # every thread of a Python process is named after the interpreter until renamed
        assert sum(woke.values()) >= 200, woke
    finally:
        child.kill()
        child.wait()
