"""Benchmarks with side-by-side baselines: ``python -m bench`` (or ``make bench``).

Each scenario measures this project and, in the same run, the script a user would otherwise
write (segment-analytics-python, a pandas diff, pandas groupby traits), so the figures compare
like with like on the same machine. Benchmarks are not tests: nothing here is asserted, except
that the harness itself produces well-formed results (``test_bench_harness.py`` runs every
scenario once at a tiny size so it cannot rot).

Modules: ``harness`` (child processes, the server process, results, the table), ``data``
(generated warehouse tables), one module per scenario (``whole_process``, ``import_time``,
``first_sync``, ``change_detection``, ``computed_traits``, ``predictions``), ``analytics_script``
(the hand-written segment-analytics-python sync, run as a plain script), ``summary`` (issue 13's
target table from the scenarios' rows) and ``__main__`` (the command line).
"""
