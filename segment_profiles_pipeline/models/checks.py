"""Primary-key checks for model tables: not null and unique.

They *warn* and never block: a null or duplicated key makes only those rows invalid for the
sync (which rejects and reports them), while every other profile keeps updating.
"""

from __future__ import annotations

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey, MetadataValue

from segment_profiles_pipeline.warehouse.base import WarehouseSession, ident

NOT_NULL = "primary_key_not_null"
UNIQUE = "primary_key_unique"
SAMPLE = 10


def check_specs(key: AssetKey, primary_key: str) -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec(NOT_NULL, asset=key, description=f"`{primary_key}` is never null."),
        AssetCheckSpec(UNIQUE, asset=key, description=f"`{primary_key}` identifies one row."),
    ]


def primary_key_checks(
    session: WarehouseSession, key: AssetKey, table: str, primary_key: str
) -> list[AssetCheckResult]:
    pk = ident(primary_key)
    nulls = int(session.query(f"SELECT count(*) FROM {table} WHERE {pk} IS NULL").scalar() or 0)
    dupes = session.query(
        f"SELECT CAST({pk} AS VARCHAR) AS k, count(*) AS n FROM {table} WHERE {pk} IS NOT NULL "
        f"GROUP BY {pk} HAVING count(*) > 1 ORDER BY n DESC, k LIMIT {SAMPLE}"
    )
    dupe_keys = int(
        session.query(
            f"SELECT count(*) FROM (SELECT {pk} FROM {table} WHERE {pk} IS NOT NULL GROUP BY {pk} HAVING count(*) > 1) d"
        ).scalar()
        or 0
    )
    return [
        AssetCheckResult(
            asset_key=key,
            check_name=NOT_NULL,
            passed=nulls == 0,
            severity=AssetCheckSeverity.WARN,
            description=None
            if nulls == 0
            else f"{nulls} row(s) have a null `{primary_key}`; the sync rejects them.",
            metadata={"null_rows": MetadataValue.int(nulls)},
        ),
        AssetCheckResult(
            asset_key=key,
            check_name=UNIQUE,
            passed=dupe_keys == 0,
            severity=AssetCheckSeverity.WARN,
            description=None
            if dupe_keys == 0
            else f"{dupe_keys} `{primary_key}` value(s) appear more than once; the sync rejects those rows.",
            metadata={
                "duplicated_keys": MetadataValue.int(dupe_keys),
                "sample_duplicates": MetadataValue.json({str(k): int(n) for k, n in dupes.rows}),
            },
        ),
    ]
