"""Every environment variable the project reads, in one place, with its default.

The README's configuration table mirrors ``ENVIRONMENT`` below; keep them together.
Secrets are *not* read here: they reach resources as ``dagster.EnvVar`` so Dagster never
stores their values (see ``warehouse.resources`` and ``sync.resources``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

ENVIRONMENT: dict[str, tuple[str | None, str]] = {
    "WAREHOUSE": ("duckdb", "`duckdb` (embedded, default) or `snowflake`."),
    "DUCKDB_DATABASE": ("data/warehouse.duckdb", "DuckDB file (relative paths are under the project root)."),
    "SAMPLE_DATA": (
        "1 on duckdb, 0 on snowflake",
        "Create the sample source tables when missing (never overwrites).",
    ),
    "SAMPLE_USERS": (
        "5000",
        "Users in the generated sample data (accounts = users/10, ~20 events per user).",
    ),
    "SEGMENT_PROFILES_MODELS_DIR": ("models", "Folder with the SQL models and their YAML companions."),
    "SEGMENT_WRITE_KEY": (None, "Segment source write key. Unset: every sync is a dry run (outbox table)."),
    "SEGMENT_PROFILES_DEPLOYMENT": (
        "development",
        "`development` or `production`. In production a missing `SEGMENT_WRITE_KEY` fails the load "
        "instead of turning every sync into a dry run.",
    ),
    "SEGMENT_REGION": ("north_america", "`north_america` or `europe`: picks the Tracking API endpoint."),
    "SEGMENT_ENDPOINT": (
        None,
        "Explicit Tracking API base URL (e.g. `http://127.0.0.1:8080`); overrides the region.",
    ),
    "SEGMENT_SPACE_ID": (None, "Unify space id: with the token below, enables the `profile_readback` check."),
    "SEGMENT_PROFILE_API_TOKEN": (None, "Profile API access token of that space (a secret: `EnvVar`)."),
    "SEGMENT_PROFILE_API_ENDPOINT": (
        None,
        "Explicit Profile API base URL (e.g. the test server's); overrides the region.",
    ),
    "SEGMENT_READBACK_SAMPLE": ("20", "Acknowledged records read back per identify mapping (1 to 1000)."),
    "ALERT_WEBHOOK_URL": (None, "Slack-compatible incoming webhook for sync alerts."),
    "SNOWFLAKE_ACCOUNT": (None, "Snowflake account identifier (WAREHOUSE=snowflake)."),
    "SNOWFLAKE_USER": (None, "Snowflake user."),
    "SNOWFLAKE_PASSWORD": (None, "Snowflake password (or use SNOWFLAKE_PRIVATE_KEY)."),
    "SNOWFLAKE_PRIVATE_KEY": (None, "PEM private key for key-pair auth (instead of the password)."),
    "SNOWFLAKE_DATABASE": (None, "Snowflake database holding sources, models and state."),
    "SNOWFLAKE_WAREHOUSE": (None, "Snowflake virtual warehouse."),
    "SNOWFLAKE_ROLE": (None, "Snowflake role (optional)."),
}


DEPLOYMENTS = ("development", "production")


def env(name: str) -> str | None:
    """Value of a documented variable; empty strings count as unset."""
    if name not in ENVIRONMENT:
        raise KeyError(f"{name} is not a documented setting; add it to settings.ENVIRONMENT")
    value = os.environ.get(name, "").strip()
    return value or None


def is_set(name: str) -> bool:
    """Whether a variable a user named (a ``SegmentProfiles`` component's ``*_env`` fields) is set.

    Those names are the user's, not documented settings; their values are secrets, so only
    whether they are set is read here (the resources get them as ``EnvVar``)."""
    return bool(os.environ.get(name, "").strip())


VALIDATION_CLI = "DAGSTER_IS_DEFS_VALIDATION_CLI"
"""Set to ``1`` by ``dagster definitions validate`` / ``dg check defs`` themselves (Dagster ≥ 1.10):
Dagster's variable, not a setting a user documents, so it is not in ``ENVIRONMENT``."""


def strict_from_env() -> bool:
    """Whether this load should fail on the first broken file (only under the validate command)."""
    return os.environ.get(VALIDATION_CLI) == "1"


def env_flag(name: str, default: bool) -> bool:
    value = env(name)
    if value is None:
        return default
    return value.lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """The non-secret settings, resolved once when definitions load."""

    warehouse: str
    duckdb_database: Path
    sample_data: bool
    sample_users: int
    models_dir: Path
    production: bool = False
    """``SEGMENT_PROFILES_DEPLOYMENT=production``: refuse to load without a write key."""

    @classmethod
    def from_env(cls) -> Settings:
        from segment_profiles_pipeline.errors import ConfigError

        warehouse = (env("WAREHOUSE") or "duckdb").lower()
        if warehouse not in {"duckdb", "snowflake"}:
            raise ConfigError(
                f"unknown warehouse '{warehouse}'.",
                field="WAREHOUSE",
                fix="set WAREHOUSE=duckdb or WAREHOUSE=snowflake.",
            )
        db = Path(env("DUCKDB_DATABASE") or "data/warehouse.duckdb")
        models_dir = Path(env("SEGMENT_PROFILES_MODELS_DIR") or "models")
        users = env("SAMPLE_USERS") or "5000"
        if not users.isdigit() or int(users) < 1:
            raise ConfigError(f"'{users}' is not a positive whole number.", field="SAMPLE_USERS")
        deployment = (env("SEGMENT_PROFILES_DEPLOYMENT") or "development").lower()
        if deployment not in DEPLOYMENTS:
            raise ConfigError(
                f"unknown deployment '{deployment}'.",
                field="SEGMENT_PROFILES_DEPLOYMENT",
                fix="set it to production or development (the default), or unset it.",
            )
        return cls(
            production=deployment == "production",
            warehouse=warehouse,
            duckdb_database=db if db.is_absolute() else PROJECT_ROOT / db,
            sample_data=env_flag("SAMPLE_DATA", default=warehouse == "duckdb"),
            sample_users=int(users),
            models_dir=models_dir if models_dir.is_absolute() else PROJECT_ROOT / models_dir,
        )
