"""``python -m segment_profiles_pipeline.explore email:ana@example.com``: the profile explorer as a CLI.

The same lookup as the ``profile_explorer`` job (``identity/explorer.py``), for a terminal: the
project's settings pick the warehouse (``WAREHOUSE``, ``DUCKDB_DATABASE``, the ``SNOWFLAKE_*``
variables) and the models folder, and the warehouse is opened read-only. Readable text by
default, ``--json`` for scripts. Exit status 0 when found, 2 when the lookup cannot be answered
(the reason and its fix on stderr), 1 when the warehouse cannot be read.
"""

from __future__ import annotations

import argparse
import sys

from segment_profiles_pipeline.errors import PipelineError
from segment_profiles_pipeline.identity.explorer import (
    DEFAULT_EVENTS,
    MAX_EVENTS,
    ExplorerError,
    explore,
    explorer_sources,
)
from segment_profiles_pipeline.settings import Settings
from segment_profiles_pipeline.warehouse.resources import warehouse_from_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m segment_profiles_pipeline.explore",
        description="Show one profile of the local identity graph: identifiers, traits (source, time), merges, "
        "latest events. See docs/identity.md, Profile explorer.",
    )
    parser.add_argument(
        "lookup", help="<type>:<value>, e.g. email:ana@example.com, user_id:u_0000001, segment_id:use_…"
    )
    parser.add_argument(
        "--events", type=int, default=DEFAULT_EVENTS, help=f"latest events to show (0 to {MAX_EVENTS})"
    )
    parser.add_argument("--json", action="store_true", help="print the profile as JSON")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        identity, event_tables = explorer_sources(settings.models_dir)
        with warehouse_from_settings(settings).read_only_session() as session:
            view = explore(session, identity, event_tables, args.lookup, events=args.events)
    except ExplorerError as exc:
        print(f"error ({exc.code}): {exc}", file=sys.stderr)
        return 2
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.buffer.write(view.json_bytes() + b"\n")
    else:
        print(view.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
