"""Run every benchmark one after the other (each in its own process, so none inherits another's
warm caches or threads), collect their JSON into one file and redraw the turn-latency plot.

    uv run python bench/run_all.py [--out-dir bench/results] [--smoke] [--no-plot]

Writes <out-dir>/<bench>.json for each bench run and <out-dir>/all.json with the latest JSON of
every bench found there (`ran_now` lists the ones just run; `--only` selects a subset); the plot
goes to docs/turn_latency.png (not in --smoke mode, unless --plot-output says where).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import REPO_ROOT, RESULTS_DIR, machine_info, write_result

BENCHES = (
    "bench_cold_start",
    "bench_turn_overhead",
    "bench_capacity",
    "bench_journal",
    "bench_voice_latency",
    "bench_turn_taking",
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--smoke", action="store_true", help="tiny input for every bench")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--plot-output", type=Path, default=None)
    parser.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset")
    args = parser.parse_args(argv)
    selected = [name for name in args.only.split(",") if name]
    unknown = sorted(set(selected) - set(BENCHES))
    if unknown:
        parser.error(f"unknown benches: {', '.join(unknown)}")

    collected: dict[str, Any] = {"machine": machine_info(), "smoke": args.smoke, "benches": {}}
    failed: list[str] = []
    for name in selected:
        out = args.out_dir / f"{name}.json"
        command = [sys.executable, str(REPO_ROOT / "bench" / f"{name}.py"), "--json", str(out)]
        if args.smoke:
            command.append("--smoke")
        print(f"== {name}", flush=True)
        started = time.monotonic()
        code = subprocess.call(command, cwd=REPO_ROOT)
        print(f"== {name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code != 0 or not out.exists():
            failed.append(name)
            continue
        collected["benches"][name] = json.loads(out.read_text())

    # benches not run this time keep their latest figures in all.json, marked as such
    for name in BENCHES:
        previous = args.out_dir / f"{name}.json"
        if name not in collected["benches"] and name not in failed and previous.exists():
            collected["benches"][name] = json.loads(previous.read_text())
    collected["ran_now"] = [name for name in selected if name not in failed]
    write_result(args.out_dir / "all.json", collected)
    plot_output = args.plot_output or (None if args.smoke else REPO_ROOT / "docs/turn_latency.png")
    turn = args.out_dir / "bench_turn_overhead.json"
    if not args.no_plot and plot_output is not None and turn.exists():
        subprocess.check_call(
            [
                sys.executable,
                str(REPO_ROOT / "bench" / "plot.py"),
                "--input",
                str(turn),
                "--output",
                str(plot_output),
            ],
            cwd=REPO_ROOT,
        )
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
