"""The turn-latency plot for docs/performance.md, drawn from bench_turn_overhead's JSON: every
turn of this project's agent beside the bare starter session (points, box, median).

    uv run python bench/plot.py [--input bench/results/bench_turn_overhead.json]
                                [--output docs/turn_latency.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

from bench._common import REPO_ROOT, RESULTS_DIR

DEFAULT_INPUT = RESULTS_DIR / "bench_turn_overhead.json"
DEFAULT_OUTPUT = REPO_ROOT / "docs" / "turn_latency.png"
ARMS = (("ours", "this project's agent"), ("bare", "bare starter AgentSession"))
COLORS = {"ours": "#1f77b4", "bare": "#7f7f7f"}


def plot_turn_latency(result: dict[str, Any], output: Path) -> None:
    samples = [result["arms"][arm]["samples_ms"] for arm, _ in ARMS]
    fig, ax = plt.subplots(figsize=(7.0, 4.2), dpi=120)
    positions = np.arange(1, len(ARMS) + 1)
    ax.boxplot(
        samples,
        positions=positions,
        widths=0.45,
        showfliers=False,
        medianprops={"color": "black", "linewidth": 1.5},
    )
    rng = np.random.default_rng(3)
    for position, (arm, _), values in zip(positions, ARMS, samples, strict=True):
        jitter = rng.uniform(-0.12, 0.12, len(values))
        ax.scatter(
            position + jitter, values, s=22, alpha=0.75, color=COLORS[arm], zorder=3, label=None
        )
        if values:
            median = float(np.median(values))
            ax.annotate(
                f"median {median:.1f} ms",
                (position + 0.27, median),
                va="center",
                fontsize=9,
            )
    labels = [f"{label}\n(n={len(v)})" for (_, label), v in zip(ARMS, samples, strict=True)]
    ax.set_xticks(positions, labels)
    ax.set_xlim(0.4, len(ARMS) + 0.9)
    ax.set_ylabel("end of user speech -> first agent audio frame (ms)")
    comparison = result.get("comparison") or {}
    machine = result.get("machine", {})
    title = "Turn latency, zero-latency providers, VAD turn detection (min_delay 0.5 s)"
    subtitle = (
        f"ours/bare = {comparison.get('ratio', float('nan')):.3f}, "
        f"difference {comparison.get('diff_ms', float('nan')):+.1f} ms; "
        f"{machine.get('cpus', '?')} CPUs, {str(machine.get('date_utc', ''))[:10]}"
    )
    ax.set_title(f"{title}\n{subtitle}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.text(
        0.01,
        0.01,
        "Each point is one turn. Both arms include the same 0.5 s endpointing delay; "
        "the y axis is zoomed, it does not start at 0.",
        fontsize=8,
        color="#555555",
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output)
    plt.close(fig)
    print(f"wrote {output}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    plot_turn_latency(json.loads(args.input.read_text()), args.output)


if __name__ == "__main__":
    main()
