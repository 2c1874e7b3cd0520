"""``python -m bench [--large]``: run every scenario, print a markdown table, write the JSON.

Default sizes finish in a few minutes on 2 cores; ``--large`` runs the sizes the targets are set
for (1M-record sync, 10M-record plan, 10M events,
1M profiles / 20M events for the predictions; the whole process stays at its 100k users). After
the per-scenario table comes issue 13's target table, filled from the same run (``bench.summary``).
Figures land in ``bench/results/latest.json`` (gitignored), with the machine they were measured on.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import (
    change_detection,
    computed_traits,
    first_sync,
    import_time,
    predictions,
    summary,
    whole_process,
)
from bench.harness import SIZES, ScenarioResult, Sizes, machine, render_markdown, write_json

SCENARIOS: dict[str, Callable[[Sizes, Path], ScenarioResult]] = {
    "whole_process": whole_process.run,
    "import_time": import_time.run,
    "first_sync": first_sync.run,
    "first_sync_memory": first_sync.run_memory,
    "change_detection": change_detection.run,
    "computed_traits": computed_traits.run,
    "predictions": predictions.run,
}
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"


def run(sizes: Sizes, names: list[str], workdir: Path, out: Path) -> list[ScenarioResult]:
    """Run the named scenarios in order, then write the JSON file; returns the results."""
    info = machine()
    results: list[ScenarioResult] = []
    for name in names:
        started = time.perf_counter()
        print(f"running {name} ({sizes.name} size)...", file=sys.stderr, flush=True)
        results.append(SCENARIOS[name](sizes, workdir))
        print(f"  done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    lines = summary.summary(results, sizes)
    write_json(out, results, info, sizes, lines)
    print(render_markdown(results, info, sizes))
    print()
    print(summary.render(lines))
    print(f"\nfigures written to {out}", file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--large", action="store_true", help="1M-record sync, 10M-record plan, 10M events (takes longer)"
    )
    parser.add_argument(
        "--size", choices=sorted(SIZES), help="explicit size (tiny: a smoke run of the harness)"
    )
    parser.add_argument(
        "--only", nargs="+", choices=sorted(SCENARIOS), default=list(SCENARIOS), help="scenarios to run"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file (default {DEFAULT_OUT})")
    parser.add_argument(
        "--workdir", type=Path, help="where the DuckDB files go (default: a temporary folder, removed after)"
    )
    args = parser.parse_args(argv)
    if args.large and args.size:
        parser.error("use either --large or --size")
    sizes = SIZES[args.size or ("large" if args.large else "default")]
    names = [name for name in SCENARIOS if name in args.only]
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        run(sizes, names, args.workdir, args.out)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
            run(sizes, names, Path(workdir), args.out)


if __name__ == "__main__":
    main()
