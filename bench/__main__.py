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
import traceback
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
from bench.harness import (
    SIZES,
    ScenarioResult,
    Sizes,
    compile_package,
    machine,
    render_markdown,
    write_json,
)

SCENARIOS: dict[str, Callable[[Sizes, Path], ScenarioResult]] = {
    "whole_process": whole_process.run,
    "import_time": import_time.run,
    "first_sync": first_sync.run,
    "change_detection": change_detection.run,
    "computed_traits": computed_traits.run,
    "first_sync_memory": first_sync.run_memory,
    "predictions": predictions.run,
}
"""In the order they run: the timed scenarios first, peak memory and the predictions (no timed
target) last, so a long ``--large`` run's timings come from its start, before anything else on
the machine has had a chance to join in."""
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"
PACKAGE = Path(__file__).resolve().parents[1] / "segment_profiles_pipeline"


def run(sizes: Sizes, names: list[str], workdir: Path, out: Path) -> list[ScenarioResult]:
    """Run the named scenarios in order; returns the results.

    The JSON is rewritten after every scenario, and a scenario that raises is reported (its
    traceback on stderr) while the others still run: a long ``--large`` run that fails in its
    fifth scenario keeps the four measured before it. The run then ends with ``BenchFailed``."""
    info = machine()
    compile_package(PACKAGE)  # untimed: every scenario's fresh processes import it
    results: list[ScenarioResult] = []
    failed: list[str] = []
    for name in names:
        started = time.perf_counter()
        print(f"running {name} ({sizes.name} size)...", file=sys.stderr, flush=True)
        try:
            results.append(SCENARIOS[name](sizes, workdir))
        except Exception:
            traceback.print_exc()
            failed.append(name)
            print(f"  {name} FAILED after {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        else:
            print(f"  done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        write_json(out, results, info, sizes, summary.summary(results, sizes))
    lines = summary.summary(results, sizes)
    print(render_markdown(results, info, sizes))
    print()
    print(summary.render(lines))
    print(f"\nfigures written to {out}", file=sys.stderr)
    if failed:
        raise BenchFailed(f"scenario(s) failed: {', '.join(failed)} (tracebacks above); the others' figures are in {out}")
    return results


class BenchFailed(RuntimeError):
    """At least one scenario raised; the figures of the others were still written."""


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
    try:
        if args.workdir:
            args.workdir.mkdir(parents=True, exist_ok=True)
            run(sizes, names, args.workdir, args.out)
        else:
            with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
                run(sizes, names, Path(workdir), args.out)
    except BenchFailed as exc:
        sys.exit(f"bench: {exc}")


if __name__ == "__main__":
    main()
