"""The asset graph's shared vocabulary: keys, pool, retry policy and the lenient-load stub.

Why one module: every domain (models, traits, identity, predictions, profile_sync,
profiles_sync, automation) names assets of the others, for deps, schedules and sensors. Taking
those names from here, not from another domain's ``assets`` module, keeps the domains side by
side: each builds its own definitions, and none imports another's asset factories.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dagster import (
    AssetKey,
    AssetsDefinition,
    Backoff,
    Definitions,
    Failure,
    Jitter,
    MetadataValue,
    RetryPolicy,
    StaticPartitionsDefinition,
    asset,
)

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.identity.config import EXTERNAL_ID_TABLE, ID_GRAPH_TABLE, MERGES_TABLE
from segment_profiles_pipeline.project import MappingSpec, ModelProblem, SyncSource, display_path

POOL = "warehouse"
"""Dagster pool of every step that writes the warehouse (DuckDB has one writer per file)."""

WAREHOUSE_RETRY = RetryPolicy(max_retries=3, delay=2, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)
"""Transient warehouse errors (a lock held too long, a dropped Snowflake session) retry the step."""

GRAPH_TABLE_KEYS = {
    table: AssetKey(table.split(".")) for table in (ID_GRAPH_TABLE, EXTERNAL_ID_TABLE, MERGES_TABLE)
}
"""The identity graph's three tables → their assets (one multi-asset writes all three)."""
GRAPH_KEYS = list(GRAPH_TABLE_KEYS.values())
"""What a layer keyed on resolved profiles depends on: all three, as the multi-asset cannot be subset."""


def source_key(schema: str | None, table: str) -> AssetKey:
    """The asset of a source table (an external asset, or another asset's table)."""
    return AssetKey([schema or "main", table])


def sync_asset_key(mapping_name: str) -> AssetKey:
    """The profile_sync asset of a mapping."""
    return AssetKey(["profile_sync", mapping_name])


KeyHook = Callable[[AssetKey, MappingSpec | None], AssetKey]
"""A translator's ``get_asset_key``: the default key of a generated asset (and, for a sync asset,
its mapping) → the key the asset gets."""


class AssetKeys:
    """The keys of one build's generated assets: each default key (the functions above) passed
    through the translator's ``get_asset_key`` once, remembered, and used by every builder, for
    the asset itself and wherever another asset, check, job, schedule or sensor names it.

    Keys are decided before anything is built, so deps, check specs, selections and run requests
    are built with the final keys; nothing is remapped afterwards. Two generated assets given the
    same key fail the load here, naming both. Only generated assets go through it: a key another
    project's asset has (``upstream.yml``, a dbt model) is already final (``source_asset``).
    Warehouse state never depends on it: it is keyed by mapping name."""

    def __init__(self, hook: KeyHook | None = None, *, owner: str = "translator") -> None:
        self._hook = hook
        self._owner = owner  # named in the collision error
        self._keys: dict[AssetKey, AssetKey] = {}
        self._defaults: dict[AssetKey, AssetKey] = {}

    def __call__(self, default: AssetKey, mapping: MappingSpec | None = None) -> AssetKey:
        if self._hook is None:
            return default
        known = self._keys.get(default)
        if known is not None:
            return known
        key = self._hook(default, mapping)
        if not isinstance(key, AssetKey):
            raise ConfigError(
                f"{self._owner}.get_asset_key returned {key!r} for {default.to_user_string()}, not an AssetKey.",
                field="translator",
                fix="return dagster.AssetKey([...]) (e.g. default.with_prefix('segment')).",
            )
        other = self._defaults.get(key)
        if other is not None:
            raise ConfigError(
                f"{self._owner}.get_asset_key gives two generated assets the key {key.to_user_string()}: "
                f"{other.to_user_string()} and {default.to_user_string()}.",
                field="translator",
                fix="return a different key for each default key (e.g. keep the default's path under a prefix).",
            )
        self._keys[default], self._defaults[key] = key, default
        return key

    def source(self, schema: str | None, table: str) -> AssetKey:
        return self(source_key(schema, table))

    def sync(self, spec: MappingSpec) -> AssetKey:
        return self(sync_asset_key(spec.mapping.name), spec)

    def source_asset(self, source: SyncSource) -> AssetKey:
        """The asset a mapping reads: a generated one (a model, the traits, the predictions) through
        the translator; another project's (``upstream.yml``) as written there."""
        key = AssetKey(list(source.asset_key))
        return key if source.external else self(key)

    @property
    def graph_tables(self) -> dict[str, AssetKey]:
        """``GRAPH_TABLE_KEYS``, translated."""
        return {table: self(key) for table, key in GRAPH_TABLE_KEYS.items()}

    @property
    def graph(self) -> list[AssetKey]:
        """``GRAPH_KEYS``, translated."""
        return [self(key) for key in GRAPH_KEYS]


DEFAULT_KEYS = AssetKeys()
"""The project's own keys, unchanged (builders' default, e.g. in tests)."""


def shard_partitions(shards: int) -> StaticPartitionsDefinition | None:
    """A sharded mapping's partitions (``shard_0`` …); none for one shard."""
    return StaticPartitionsDefinition([f"shard_{i}" for i in range(shards)]) if shards > 1 else None


def mapping_test_job_name(mapping_name: str) -> str:
    """The Test Mapping job of a mapping (``sync/test_mapping.py``)."""
    return f"{mapping_name}_test_mapping"


@dataclass(frozen=True)
class DomainDefs:
    """What a domain that feeds others adds (traits, predictions): its own ``Definitions``, plus
    the sync mappings it declares (the sync and automation domains build them) and the event
    tables it reads (the models domain declares them as sources, the source sensor watches
    them). A broken file in a lenient load: a stub asset in ``defs``, nothing else."""

    defs: Definitions = field(default_factory=Definitions)
    mappings: list[MappingSpec] = field(default_factory=list)
    tables: list[tuple[str, str]] = field(default_factory=list)


def build_stubs(
    problems: Sequence[ModelProblem], taken: set[AssetKey], keys: AssetKeys
) -> list[AssetsDefinition]:
    """One stub per broken model file (and per mapping its YAML still names) where no good asset
    is, under the keys the translator gives them (a broken mapping has no spec: ``mapping`` is None)."""
    stubs = []
    for problem in problems:
        key = keys(AssetKey(problem.name))
        if key in taken:  # e.g. a second file for a model name that loaded elsewhere
            key = keys(AssetKey(f"{problem.name}__does_not_load"))
        wanted = [(key, "models")] + [
            (keys(sync_asset_key(name)), "profile_sync") for name in problem.mapping_names
        ]
        for stub_key, stub_group in wanted:
            if stub_key not in taken:
                taken.add(stub_key)
                stubs.append(build_broken_asset(stub_key, problem, stub_group))
    return stubs


def build_broken_asset(key: AssetKey, problem: ModelProblem, group: str) -> AssetsDefinition:
    """What a file (or one of its mappings) that failed to load looks like in a lenient load.

    It keeps its place in the graph, says what is wrong in its description and metadata, and a
    materialization fails with the load error, so the mistake is visible where the user looks,
    while every other model, mapping, schedule and sensor keeps working."""
    where = display_path(problem.path)

    @asset(
        key=key,
        group_name=group,
        description=f"**Does not load** ({where}): {problem.error}\n\nFix the file; the deployment picks it up "
        "on the next code location reload. `dagster definitions validate` fails until then.",
        metadata={"load_error": MetadataValue.text(str(problem.error)), "file": MetadataValue.path(where)},
    )
    def broken() -> None:
        raise Failure(description=f"{where} does not load: {problem.error}", allow_retries=False)

    return broken
