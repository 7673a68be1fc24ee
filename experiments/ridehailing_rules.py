"""The ride-hailing rule baselines against the paper's Table 7.

Runs Greedy, Nearest and Random on both cities, on the paper's exact order streams (replay: one day;
Random over `--episodes` shuffles, which is Nearest with an arbitrary order of the orders of one cell
and step) and on fresh Poisson days from the λ tables, and writes
`experiments/results/ridehailing_rules.{json,md}`.

    python experiments/ridehailing_rules.py --episodes 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import jax

from dyps_jax.checkpoint import write_atomic
from dyps_jax.evaluate import evaluate_rule

RESULTS = Path(__file__).parent / "results"
PAPER = {  # Table 7: (GMV, ORR)
    ("ridehailing-1", "greedy"): (220770, 0.37), ("ridehailing-1", "nearest"): (162590, 0.37),
    ("ridehailing-2", "greedy"): (539450, 0.23), ("ridehailing-2", "nearest"): (345180, 0.24),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100)
    args = parser.parse_args()
    results = []
    for env in ("ridehailing-1", "ridehailing-2"):
        for demand in ("replay", "poisson"):
            for rule in ("greedy", "nearest", "random"):
                # Greedy and Nearest are deterministic on the replayed day.
                episodes = 1 if demand == "replay" and rule != "random" else args.episodes
                results.append(evaluate_rule(env, rule, seed=0, episodes=episodes, demand=demand))
                print(json.dumps(results[-1]), flush=True)

    RESULTS.mkdir(exist_ok=True)
    write_atomic(RESULTS / "ridehailing_rules.json", json.dumps(results, indent=1) + "\n")
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    lines = [
        "# Ride-hailing rule baselines",
        "",
        f"Command: `python experiments/ridehailing_rules.py --episodes {args.episodes}`  ",
        f"Date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, device {jax.devices()[0].device_kind}, "
        f"jax {jax.__version__}, git {rev}. GMV in raw price units per day, ORR = served / "
        "generated; mean ± std over episodes (replay: the paper's recorded day, so only Random "
        "varies; poisson: fresh days from the paper's λ tables).",
        "",
        "| scenario | demand | rule | episodes | GMV | ORR | paper Table 7 |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in results:
        paper = PAPER.get((r["env"], r["policy"])) if r["demand"] == "replay" else None
        ref = f"{paper[0]:,} / {paper[1]}" if paper else ""
        lines.append(f"| {r['env']} | {r['demand']} | {r['policy']} | {r['episodes']} | "
                     f"{r['gmv']:,.1f} ± {r['gmv_std']:,.1f} | {r['orr']:.4f} ± {r['orr_std']:.4f}"
                     f" | {ref} |")
    write_atomic(RESULTS / "ridehailing_rules.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
