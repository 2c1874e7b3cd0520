"""The sync state in the warehouse, like Segment's ``__segment_reverse_etl``.

State lives next to the data, not in Dagster: it survives a lost Dagster instance and anyone
can inspect it with SQL. One module per table of the ``_segment_profiles`` schema, each owning
its DDL, migrations, reads and writes; callers pass typed values, never SQL:

- ``ledger``: what Segment acknowledged per record (checksum, ids, generation, tombstones);
- ``failed_records``: records rejected or not delivered, with a stable ``reason_code``;
- ``sync_history``: one row per mapping, shard and run;
- ``outbox``: the payloads a dry run would have sent (the latest dry run per mapping);
- ``sync_locks``: at most one sync per mapping and shard at a time, on any warehouse;
- ``watermarks``: the high-water mark of a track mapping's ``incremental_column``.

``writer.StateWriter`` groups the writes of one sync; ``schema.ensure_state`` creates and
upgrades the tables. Other domains keep their own state tables in the same schema.
"""

from segment_profiles_pipeline.state.schema import STATE_SCHEMA, ensure_state

__all__ = ["STATE_SCHEMA", "ensure_state"]
