"""The project as a Dagster Component: ``SegmentProfiles``, configured in a ``defs.yaml``.

A user with a ``dg`` project of their own drops this into ``defs/`` instead of running the
standalone project::

    dg scaffold defs segment_profiles_pipeline.SegmentProfiles segment_profiles
    dg check yaml && dg check defs

It builds exactly what ``definitions.py`` builds (through ``build_definitions``): only where the
settings come from differs. The standalone project reads them from the environment; the
component reads them from its YAML, with secrets still only as the *names* of environment
variables (``write_key_env``, ``snowflake_env``) that reach the resources as ``EnvVar``.
Paths of the models folder are relative to the component's folder (``defs/<name>/``), the DuckDB
file relative to the project root, so a data file never lands inside the code.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

from dagster import (
    AssetSpec,
    Component,
    ComponentLoadContext,
    Definitions,
    EnvVar,
    Model,
    Resolvable,
    Scaffolder,
)
from dagster import scaffold_component as write_defs_yaml
from dagster.components.scaffold.scaffold import ScaffoldRequest, scaffold_with
from pydantic import Field

from segment_profiles_pipeline.definitions import Resources, build_definitions
from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.project import MappingSpec
from segment_profiles_pipeline.segment.spec import resolve_endpoint
from segment_profiles_pipeline.settings import Settings, is_set, strict_from_env
from segment_profiles_pipeline.sync.resources import SegmentDestination
from segment_profiles_pipeline.translator import SegmentProfilesTranslator
from segment_profiles_pipeline.vocabulary import AssetKeys
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline.warehouse.snowflake import SnowflakeEnv, SnowflakeWarehouse, snowflake_from_env


class DuckDBConfig(Model):
    database: str = Field(
        default="data/warehouse.duckdb", description="DuckDB file; a relative path is under the project root."
    )
    connection_config: dict[str, Any] = Field(
        default_factory=dict, description="DuckDB settings for every connection, e.g. {threads: 2}."
    )


class DestinationConfig(Model):
    region: Literal["north_america", "europe"] = Field(
        default="north_america",
        description="Region of the Segment workspace: picks the Tracking API endpoint.",
    )
    endpoint: str | None = Field(
        default=None,
        description="Explicit Tracking API base URL (overrides the region); https, or http on loopback.",
    )
    write_key_env: str = Field(
        default="SEGMENT_WRITE_KEY",
        description="Environment variable with the source's write key. Unset: every sync is a dry run.",
    )


class TranslationRule(Model):
    """Owners, tags or another group for the generated assets of one default group, in YAML."""

    group: str = Field(
        description="Default group the rule applies to: sources, models, profile_sync, computed_traits, "
        "identity, predictions, profiles_sync…, or `*` for every asset."
    )
    group_name: str | None = Field(default=None, description="Move the assets to this group.")
    owners: list[str] | None = Field(default=None, description="Replace the owners (emails or `team:name`).")
    tags: dict[str, str] = Field(default_factory=dict, description="Tags added to the assets.")


class RulesTranslator(SegmentProfilesTranslator):
    """``translation:`` rules of the YAML, applied after the ``translator:`` class (or the default)."""

    def __init__(self, base: SegmentProfilesTranslator, rules: list[TranslationRule]):
        self.base = base
        self.rules = rules

    def asset_keys(self) -> AssetKeys:
        """Rules never change keys: the ``translator:`` class decides them (and its errors name it)."""
        return self.base.asset_keys()

    def get_asset_spec(self, default: AssetSpec, mapping: MappingSpec | None) -> AssetSpec:
        spec = self.base.get_asset_spec(default, mapping)
        for rule in self.rules:
            if rule.group in ("*", default.group_name):
                spec = spec.replace_attributes(
                    group_name=rule.group_name or spec.group_name,
                    owners=spec.owners if rule.owners is None else rule.owners,
                    tags={**spec.tags, **rule.tags},
                )
        return spec


class SegmentProfilesScaffolder(Scaffolder):
    """``dg scaffold defs``: a ``defs.yaml`` (embedded DuckDB with sample data, dry runs) and a first
    model with an identify mapping, so ``dg launch --assets "*"`` shows the whole flow at once."""

    def scaffold(self, request: ScaffoldRequest) -> None:
        write_defs_yaml(request, {"models": "models", "warehouse": "duckdb", "sample_data": True})
        models = Path(request.target_path) / "models"
        models.mkdir(exist_ok=True)
        (models / "users.sql").write_text(
            "-- One row per user: the records the users_identify mapping sends as Identify calls.\n"
            "SELECT user_id, email, first_name, last_name, plan, updated_at\nFROM app.users\n"
        )
        (models / "users.yml").write_text(
            "primary_key: user_id\n"
            "mappings:\n"
            "  - name: users_identify\n"
            "    action: identify\n"
            "    user_id: user_id\n"
            "    traits: {email: email, first_name: first_name, last_name: last_name, plan: plan}\n"
            "    timestamp: updated_at\n"
            "    schedule: {interval: 1h}\n"
        )


@scaffold_with(SegmentProfilesScaffolder)
class SegmentProfiles(Component, Model, Resolvable):
    """Warehouse models to live Segment profiles: models, computed traits, identity, predictions and
    one sync asset per mapping, with their schedules and sensors, as the standalone project."""

    models: str = Field(
        default="models",
        description="Folder of SQL models and their YAML (computed_traits.yml, predictions.yml, identity.yml "
        "in it too); relative to this component's folder.",
    )
    warehouse: Literal["duckdb", "snowflake"] = "duckdb"
    duckdb: DuckDBConfig = Field(default_factory=DuckDBConfig)
    snowflake_env: SnowflakeEnv = Field(
        default_factory=SnowflakeEnv,
        description="Which environment variables hold the Snowflake connection (their values are never in YAML).",
    )
    sample_data: bool | None = Field(
        default=None,
        description="Create missing sample source tables (default: on for duckdb, off for snowflake).",
    )
    sample_users: int = Field(default=5000, ge=1, description="Users in the generated sample data.")
    destination: DestinationConfig = Field(default_factory=DestinationConfig)
    production: bool = Field(
        default=False, description="Refuse to load without a write key, instead of dry-running every sync."
    )
    translator: str | None = Field(
        default=None,
        description="Dotted path of a SegmentProfilesTranslator subclass (keys, groups, owners, tags, freshness), "
        "e.g. my_project.segment.CrmTranslator.",
    )

    translation: list[TranslationRule] = Field(
        default_factory=list, description="Owners, tags and groups by default group, without Python."
    )

    def load_translator(self, where: Path) -> SegmentProfilesTranslator:
        base = self._translator_class(where)
        return RulesTranslator(base, self.translation) if self.translation else base

    def _translator_class(self, where: Path) -> SegmentProfilesTranslator:
        if self.translator is None:
            return SegmentProfilesTranslator()
        module, _, name = self.translator.rpartition(".")
        try:
            found = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(
                f"cannot import '{self.translator}': {exc}.",
                file=str(where),
                field="translator",
                fix="give the dotted path of a class importable in this project, e.g. my_project.segment.MyTranslator.",
            ) from None
        if not (isinstance(found, type) and issubclass(found, SegmentProfilesTranslator)):
            raise ConfigError(
                f"'{self.translator}' is not a subclass of SegmentProfilesTranslator.",
                file=str(where),
                field="translator",
                fix="subclass segment_profiles_pipeline.translator.SegmentProfilesTranslator.",
            )
        return found()

    def settings(self, context: ComponentLoadContext) -> Settings:
        database = Path(self.duckdb.database)
        return Settings(
            warehouse=self.warehouse,
            duckdb_database=database if database.is_absolute() else context.project_root / database,
            sample_data=self.warehouse == "duckdb" if self.sample_data is None else self.sample_data,
            sample_users=self.sample_users,
            models_dir=context.path / self.models,
            production=self.production,
        )

    def resources(self, settings: Settings, where: Path) -> Resources:
        """The warehouse and destination as this YAML configures them; secrets as ``EnvVar``."""
        if self.warehouse == "snowflake":
            warehouse: DuckDBWarehouse | SnowflakeWarehouse = snowflake_from_env(
                self.snowflake_env, where=f"{where} sets warehouse: snowflake"
            )
        else:
            warehouse = DuckDBWarehouse(
                database=str(settings.duckdb_database), connection_config=self.duckdb.connection_config
            )
        key = self.destination.write_key_env
        if self.production and not is_set(key):
            raise ConfigError(
                f"production: true, but the environment variable {key} is not set: every sync would be a "
                "dry run that sends nothing to Segment.",
                file=str(where),
                field="destination.write_key_env",
                fix=f"export {key} with the Segment source's write key, or set production: false.",
            )
        resolve_endpoint(self.destination.region, self.destination.endpoint)  # a bad URL fails the load
        segment = SegmentDestination(
            write_key=EnvVar(key) if is_set(key) else None,
            region=self.destination.region,
            endpoint=self.destination.endpoint,
        )
        return Resources(warehouse, segment)

    def build_defs(self, context: ComponentLoadContext) -> Definitions:
        settings = self.settings(context)
        where = context.path / "defs.yaml"
        return build_definitions(
            settings,
            strict=strict_from_env(),
            resources=self.resources(settings, where),
            translator=self.load_translator(where),
        )
