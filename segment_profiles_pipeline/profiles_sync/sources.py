"""Where each profile trait value came from: the acknowledged-trait log and the explorer's sidecar.

Two state tables in ``_segment_profiles``, owned here (DDL, writes):

- ``profile_trait_log``: every trait value Segment **acknowledged**, one row per (mapping, record,
  acknowledged checksum, trait), appended the first time a run sees it. The sync ledger keeps only
  the *checksum* of what was acknowledged, not the values; a model row whose checksum equals the
  ledger's is exactly the record state Segment answered 200 for, so its mapped values are copied
  here then. The log keeps them after the model row changes again, so an acknowledged value is
  never lost to a later, not yet synced, change.
- ``profile_trait_sources`` (the sidecar the profile explorer reads with
  ``profiles_sync.profile_traits``): one row per (canonical profile, trait, source mapping), the
  latest value that mapping gave the profile for that trait. Rewritten on every run from the log
  and, for mappings whose latest sync was a dry run, from the outbox (what it *would* send),
  with ``dry_run = true``. Columns:

  - ``segment_id``: the canonical profile now (``identity.id_graph.canonical_segment_id``);
  - ``trait``: the trait key as sent in ``traits`` (the column in ``profiles_sync`` tables is
    ``trait_column(trait)``);
  - ``value_json``: the value as JSON text (``"pro"``, ``42``, ``true``, ``null`` when a null was
    sent);
  - ``source``: the mapping name;
  - ``updated_at``: when Segment acknowledged it (the ledger's ``synced_at``), or when the dry run
    planned it (the outbox's ``created_at``);
  - ``dry_run``: true when the value was never sent, only planned by a dry run.

  The profile's trait value is the row with the latest ``updated_at`` (ties: the source name
  that sorts first), which is what ``profiles_sync.profile_traits`` holds.
"""

from __future__ import annotations

from segment_profiles_pipeline.state import STATE_SCHEMA

TRAIT_LOG = f"{STATE_SCHEMA}.profile_trait_log"
TRAIT_SOURCES = f"{STATE_SCHEMA}.profile_trait_sources"

DDL = (
    f"CREATE SCHEMA IF NOT EXISTS {STATE_SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {TRAIT_LOG} (
        mapping VARCHAR NOT NULL,
        record_key VARCHAR NOT NULL,
        checksum VARCHAR NOT NULL,
        user_id VARCHAR,
        anonymous_id VARCHAR,
        trait VARCHAR NOT NULL,
        value_json VARCHAR NOT NULL,
        value_text VARCHAR,
        acknowledged_at TIMESTAMP NOT NULL
    )""",
    f"""CREATE TABLE IF NOT EXISTS {TRAIT_SOURCES} (
        segment_id VARCHAR NOT NULL,
        trait VARCHAR NOT NULL,
        value_json VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        updated_at TIMESTAMP NOT NULL,
        dry_run BOOLEAN NOT NULL
    )""",
)
