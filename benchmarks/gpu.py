"""The whole throughput table on an accelerator in one go, stored under the device's name.

Runs every benchmark script of this folder one after another (each in its own process, so one
that fails or runs out of memory does not stop the others) with `--out` pointing into
`benchmarks/results/gpu/<device>/`, where `<device>` is `jax.devices()[0].device_kind` made
file-safe (e.g. `nvidia-h200`). Each script's console output goes beside its table
(`<script>.log`), and `index.md` lists what ran: command, exit status, wall time, the device, jax
and the git revision.

    python benchmarks/gpu.py                # everything, the accelerator's batch sizes added
    python benchmarks/gpu.py --quick        # smoke run: tiny sizes, one repeat (runs on CPU too)
    python benchmarks/gpu.py --only bench_train,bench_lbf_env

Without `--quick` it refuses to run on the CPU backend (those figures are the CPU tables of
`benchmarks/results/`). The reference packages `lbforaging` / `rware` are single-threaded Python
on the host; when they are not installed their columns are skipped (`--no-reference`), likewise
jumanji's LBF column. benchmarks/README.md says how to set up a GPU machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

GPU_RESULTS = common.RESULTS / "gpu"


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def plan(quick: bool) -> dict[str, list[str]]:
    """script name -> its arguments (besides --out), full or quick."""
    references = _have("lbforaging"), _have("rware")
    full = {
        # The CPU tables' batch sizes, and the large batches an accelerator is for.
        "bench_lbf_env": ["--batches", "1", "64", "1024", "16384"],
        "bench_rware_env": ["--batches", "1,64,1024,16384"],
        "bench_ridehailing_env": ["--batches", "1", "16", "256", "4096"],
        "bench_medical_env": ["--batches", "1", "4", "16", "64"],
        "bench_train": ["--envs", "lbf-1,ridehailing-1"],
        "bench_medical_train": ["--num-cbgs", "3130,20000", "--memory-limit-gb", "100"],
    }
    quick_args = {
        "bench_lbf_env": ["--batches", "1", "64", "--steps", "20", "--repeats", "1",
                          "--ref-steps", "50", "--scenarios", "lbf-1", "--no-jumanji"],
        "bench_rware_env": ["--batches", "1,64", "--steps", "20", "--repeats", "1",
                            "--ref-steps", "50"],
        "bench_ridehailing_env": ["--quick"],
        "bench_medical_env": ["--batches", "1", "--sizes", "500", "--repeats", "1"],
        "bench_train": ["--envs", "lbf-1", "--methods", "ps", "--iterations", "1",
                        "--repeats", "1", "--env-steps", "20"],
        "bench_medical_train": ["--num-cbgs", "500", "--methods", "ps", "--iterations", "1",
                                "--no-breakdown"],
    }
    chosen = quick_args if quick else full
    if not references[0]:
        chosen["bench_lbf_env"] = [*chosen["bench_lbf_env"], "--no-reference"]
    if not references[1]:
        chosen["bench_rware_env"] = [*chosen["bench_rware_env"], "--no-reference"]
    if not _have("jumanji") and "--no-jumanji" not in chosen["bench_lbf_env"]:
        chosen["bench_lbf_env"] = [*chosen["bench_lbf_env"], "--no-jumanji"]
    return chosen


def device_name() -> tuple[str, str]:
    """(file-safe device kind, platform) of the first device, asked in a child process so this
    one holds no accelerator memory while the benchmarks run."""
    code = "import jax; d = jax.devices()[0]; print(d.device_kind); print(d.platform)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    kind, platform = out.stdout.strip().splitlines()[-2:]
    return re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-") or "unknown", platform


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and one repeat: checks that everything runs")
    parser.add_argument("--only", default="", help="comma-separated scripts (default: all)")
    parser.add_argument("--out-dir", default=None,
                        help="folder for the tables (default benchmarks/results/gpu/<device>/, "
                             "with --quick <that>-quick/)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per script")
    args = parser.parse_args(argv)

    kind, platform = device_name()
    if platform == "cpu" and not args.quick:
        parser.error("the default backend is the CPU: the CPU tables are benchmarks/results/*.md; "
                     "use --quick to check this script on a CPU")
    scripts = plan(args.quick)
    only = [s for s in args.only.split(",") if s]
    unknown = sorted(set(only) - set(scripts))
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}; allowed: {', '.join(scripts)}")
    folder = Path(args.out_dir) if args.out_dir else GPU_RESULTS / (kind + "-quick" * args.quick)
    folder.mkdir(parents=True, exist_ok=True)

    rows, failed = [], 0
    for name, script_args in scripts.items():
        if only and name not in only:
            continue
        out = folder / f"{name}.md"
        cmd = [sys.executable, str(Path(__file__).parent / f"{name}.py"), *script_args,
               "--out", str(out)]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        with open(folder / f"{name}.log", "w") as log:
            try:
                status = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                                        timeout=args.timeout).returncode
            except subprocess.TimeoutExpired:
                status = "timeout"
        seconds = time.perf_counter() - start
        failed += status != 0
        print(f"   exit {status} after {seconds:.0f}s -> {out if status == 0 else log.name}",
              flush=True)
        rows.append(f"| `{name}.py {' '.join(script_args)}` | {status} | {seconds:.0f} "
                    f"| {out.name if out.is_file() else '-'} |")

    index = [
        *common.header_lines(f"Throughput table on {kind}" + (" (quick)" * args.quick),
                             common.command_line("gpu.py", argv), f"{kind} ({platform}), "
                             f"{common.host()}"),
        "",
        "| script and arguments | exit | seconds | table |",
        "|---|---:|---:|---|",
        *rows,
        "",
    ]
    common.write_result(folder / "index.md", "\n".join(index))
    print(f"wrote {folder / 'index.md'}; {failed} script(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
