"""The ``profile_readback`` check: read acknowledged records back through Segment's Profile API.

It answers Segment's FAQ *"successful syncs but no changes on profiles"*: the Tracking API answers
200 for anything, even calls sent to another region's endpoint that never reach this workspace, so
only reading the profiles back proves the traits landed. On each identify sync asset, after a
sync, it:

1. samples the ``sample_size`` (default 20) most recently acknowledged records of the mapping whose
   model row is **unchanged since** (its checksum equals the ledger's, computed by the plan's own
   ``checksum_sql``): for those, the payload built from the row now is exactly what Segment
   acknowledged, so no copy of sent values is needed. One SQL statement, read-only session;
2. reads each profile's traits (``user_id:<userId>``, else ``anonymous_id:<anonymousId>``), only the
   traits the record sent (``include``), paced under the Profile API's 100 requests/s;
3. compares trait by trait and reports every mismatch with the record key and trait. A trait sent as
   ``null`` matches a missing trait (Segment may drop nulls); extra traits on the profile are
   ignored (other sources write them too).

Verdicts: all match → pass; some profiles missing or different → WARN (Segment may still be
processing the latest calls, or another source overwrote a trait); every sampled profile missing
or different, or the token refused → ERROR, with the likely cause (wrong region or space). Without
``SEGMENT_SPACE_ID`` and ``SEGMENT_PROFILE_API_TOKEN`` the check passes as *not configured*: it is
optional, and its absence is no failure.
"""

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    ConfigurableResource,
    EnvVar,
    MetadataValue,
    ResourceParam,
    TableColumn,
    TableRecord,
    TableSchema,
    asset_check,
)
from pydantic import Field

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.project import MappingSpec
from segment_profiles_pipeline.segment.profile_api import (
    AUTH_REFUSED,
    MAX_REQUESTS_PER_SECOND,
    ProfileApiClient,
    ProfileApiError,
    resolve_profile_api_base,
)
from segment_profiles_pipeline.settings import env
from segment_profiles_pipeline.state.ledger import LEDGER
from segment_profiles_pipeline.sync.engine import mapped_columns
from segment_profiles_pipeline.sync.payloads import PayloadBuilder
from segment_profiles_pipeline.sync.plan import PlanSpec, checksum_sql
from segment_profiles_pipeline.sync.resources import SegmentDestination
from segment_profiles_pipeline.vocabulary import DEFAULT_KEYS, AssetKeys
from segment_profiles_pipeline.warehouse.base import Warehouse, WarehouseSession, ident, literal

READBACK = "profile_readback"
DEFAULT_SAMPLE = 20
MISMATCH_ROWS = 20
"""Mismatches listed in the check's metadata (the event log keeps it forever); the counts are exact."""
NO_PROFILE = "(no profile)"
MISSING = "(missing)"
_MISMATCH_SCHEMA = TableSchema(
    columns=[
        TableColumn(n, "string")
        for n in ("record_key", "external_id", "trait", "acknowledged", "profile_api")
    ]
)


class ProfileApiResource(ConfigurableResource):
    """Where and how to read profiles back. Unset ``space_id`` or ``access_token``: not configured."""

    space_id: str | None = Field(default=None, description="The Unify space id (Unify > Unify settings).")
    access_token: str | None = Field(default=None, description="The space's Profile API access token.")
    region: str = Field(default="north_america", description="north_america or europe.")
    endpoint: str | None = Field(
        default=None, description="Explicit Profile API base URL (overrides region)."
    )
    sample_size: int = Field(
        default=DEFAULT_SAMPLE, ge=1, le=1000, description="Records read back per mapping."
    )
    max_requests_per_second: float = Field(default=MAX_REQUESTS_PER_SECOND, gt=0, le=MAX_REQUESTS_PER_SECOND)

    @property
    def configured(self) -> bool:
        return bool(self.space_id and self.access_token)

    @property
    def base_url(self) -> str:
        return resolve_profile_api_base(self.region, self.endpoint)

    @contextmanager
    def client(self) -> Iterator[ProfileApiClient]:
        assert self.space_id and self.access_token, "check `configured` first"
        with ProfileApiClient(
            self.base_url,
            self.space_id,
            self.access_token,
            max_requests_per_second=self.max_requests_per_second,
        ) as client:
            yield client


def profile_api_from_env() -> ProfileApiResource:
    """Space, region, endpoint and sample size are plain settings (checked now); the token stays an EnvVar."""
    endpoint = env("SEGMENT_PROFILE_API_ENDPOINT")
    region = env("SEGMENT_REGION") or "north_america"
    resolve_profile_api_base(region, endpoint)
    sample = env("SEGMENT_READBACK_SAMPLE") or str(DEFAULT_SAMPLE)
    if not sample.isdigit() or not 1 <= int(sample) <= 1000:
        raise ConfigError(
            f"'{sample}' is not a whole number from 1 to 1000.", field="SEGMENT_READBACK_SAMPLE"
        )
    return ProfileApiResource(
        space_id=env("SEGMENT_SPACE_ID"),
        access_token=EnvVar("SEGMENT_PROFILE_API_TOKEN") if env("SEGMENT_PROFILE_API_TOKEN") else None,
        region=region,
        endpoint=endpoint,
        sample_size=int(sample),
    )


@dataclass(frozen=True)
class Acknowledged:
    """One sampled record: its key, the profile to read, and the traits Segment acknowledged."""

    record_key: str
    external_id: str
    traits: dict[str, Any]


@dataclass(frozen=True)
class Mismatch:
    record_key: str
    external_id: str
    trait: str
    acknowledged: str
    profile_api: str

    def text(self) -> str:
        if self.trait == "":
            return f"record '{self.record_key}' ({self.external_id}): Segment has no such profile"
        return (
            f"record '{self.record_key}' ({self.external_id}) trait '{self.trait}': acknowledged "
            f"{self.acknowledged}, Profile API {self.profile_api}"
        )


@dataclass
class Comparison:
    sampled: int = 0
    not_found: int = 0
    differing: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def matched(self) -> int:
        return self.sampled - self.not_found - self.differing


def sample_acknowledged(session: WarehouseSession, spec: MappingSpec, n: int) -> list[Acknowledged]:
    """The ``n`` most recently acknowledged records whose model row is unchanged since (newest first)."""
    schema, table = spec.source.table.split(".")
    column_types = dict(session.columns(schema, table))
    if not column_types or not session.table_exists(*LEDGER.split(".")):
        return []
    mapped = mapped_columns(spec, list(column_types))
    plan = PlanSpec(
        spec.mapping,
        spec.source.table,
        spec.source.primary_key,
        mapped,
        column_types=tuple((c, column_types[c]) for c in mapped),
    )
    pk = ident(spec.source.primary_key)
    rows = session.query(
        f"SELECT m.*, l.record_key AS __key FROM (SELECT *, {checksum_sql(plan)} AS __checksum "
        f"FROM {ident(spec.source.table)}) AS m JOIN {LEDGER} AS l ON l.mapping = {literal(spec.mapping.name)} "
        f"AND l.live AND l.delivered AND l.record_key = CAST(m.{pk} AS VARCHAR) AND l.checksum = m.__checksum "
        f"ORDER BY l.synced_at DESC, l.record_key LIMIT {int(n)}"
    ).dicts()
    builder = PayloadBuilder.for_mapping(spec.mapping, column_types)
    now = dt.datetime.now(dt.UTC)
    sampled = []
    for row in rows:
        message = builder.build(row, "readback", now)  # only the traits are compared
        kind, value = (
            ("user_id", message["userId"])
            if "userId" in message
            else ("anonymous_id", message["anonymousId"])
        )
        sampled.append(Acknowledged(row["__key"], f"{kind}:{value}", message["traits"]))
    return sampled


def compare(records: list[Acknowledged], client: ProfileApiClient) -> Comparison:
    """Read each sampled profile back and compare it trait by trait with what was acknowledged."""
    result = Comparison(sampled=len(records))
    for record in records:
        actual = client.traits(record.external_id, include=sorted(record.traits))
        if actual is None:
            result.not_found += 1
            result.mismatches.append(Mismatch(record.record_key, record.external_id, "", "", NO_PROFILE))
            continue
        wrong = [
            Mismatch(
                record.record_key,
                record.external_id,
                trait,
                _json(expected),
                _json(actual[trait]) if trait in actual else MISSING,
            )
            for trait, expected in record.traits.items()
            if _differs(expected, actual, trait)
        ]
        result.differing += bool(wrong)
        result.mismatches += wrong
    return result


def _differs(expected: Any, actual: dict[str, Any], trait: str) -> bool:
    """A trait differs when its value is not the acknowledged one; a null sent may be absent."""
    if trait not in actual:
        return expected is not None
    return actual[trait] != expected


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def verdict(
    comparison: Comparison, mapping: str, base_url: str, space_id: str, tracking_endpoint: str
) -> AssetCheckResult:
    """Pass, WARN or ERROR with the mismatches and, when everything is off, the likely cause."""
    c = comparison
    where = f"space '{space_id}' at {base_url}"
    region_hint = (
        f"The likely cause is a wrong region or space: syncs go to the Tracking API at {tracking_endpoint} and "
        f"profiles are read from {base_url}; both must be the workspace's region (SEGMENT_REGION=europe for an "
        "EU workspace), and SEGMENT_SPACE_ID must be the Unify space of the sources the mapping sends to. "
        "Right after a first sync Segment may still be processing: if so, the next check passes."
    )
    parts = [
        f"{c.matched} of {c.sampled} sampled profiles of '{mapping}' match what Segment acknowledged ({where})."
    ]
    if c.not_found:
        parts.append(f"{c.not_found} not found in the space.")
    if c.differing:
        parts.append(f"{c.differing} differ, first: {next(m for m in c.mismatches if m.trait).text()}.")
    everything_off = c.sampled > 0 and c.matched == 0
    if everything_off:
        parts.append(region_hint)
    elif c.not_found or c.differing:
        parts.append(
            "Segment may still be processing the latest calls, or another source changed these traits since."
        )
    records = [
        TableRecord(
            {
                "record_key": m.record_key,
                "external_id": m.external_id,
                "trait": m.trait,
                "acknowledged": m.acknowledged,
                "profile_api": m.profile_api,
            }
        )
        for m in c.mismatches[:MISMATCH_ROWS]
    ]
    return AssetCheckResult(
        check_name=READBACK,
        passed=not c.not_found and not c.differing,
        severity=AssetCheckSeverity.ERROR if everything_off else AssetCheckSeverity.WARN,
        description=" ".join(parts),
        metadata={
            "sampled": c.sampled,
            "matched": c.matched,
            "not_found": c.not_found,
            "differing": c.differing,
            "mismatches": MetadataValue.table(records, schema=_MISMATCH_SCHEMA),
            "profile_api": base_url,
            "space_id": space_id,
        },
    )


def build_readback_check(spec: MappingSpec, keys: AssetKeys = DEFAULT_KEYS) -> AssetChecksDefinition:
    """The ``profile_readback`` check of one identify mapping's sync asset."""
    name = spec.mapping.name

    @asset_check(
        asset=keys.sync(spec),
        name=READBACK,
        description="Reads recently acknowledged records back through Segment's Profile API and compares their "
        "traits (needs SEGMENT_SPACE_ID and SEGMENT_PROFILE_API_TOKEN; skipped otherwise).",
    )
    def profile_readback(
        context: AssetCheckExecutionContext,
        warehouse: ResourceParam[Warehouse],
        profile_api: ProfileApiResource,
        segment: SegmentDestination,
    ) -> AssetCheckResult:
        result = run_readback(warehouse, spec, profile_api, segment.endpoint_url)
        context.log.info(f"{READBACK} of '{name}': {result.description}")
        return result

    return profile_readback


def run_readback(
    warehouse: Warehouse, spec: MappingSpec, profile_api: ProfileApiResource, tracking_endpoint: str
) -> AssetCheckResult:
    if not profile_api.configured:
        return AssetCheckResult(
            check_name=READBACK,
            passed=True,
            description="not configured: set SEGMENT_SPACE_ID and SEGMENT_PROFILE_API_TOKEN to read acknowledged "
            "traits back through Segment's Profile API (skipped; not a failure).",
            metadata={"configured": False},
        )
    with warehouse.read_only_session() as session:
        records = sample_acknowledged(session, spec, profile_api.sample_size)
    base, space = profile_api.base_url, str(profile_api.space_id)
    if not records:
        return AssetCheckResult(
            check_name=READBACK,
            passed=True,
            description=f"nothing to read back: no record of '{spec.mapping.name}' is acknowledged and unchanged "
            "since (dry runs acknowledge nothing).",
            metadata={"sampled": 0},
        )
    try:
        with profile_api.client() as client:
            comparison = compare(records, client)
    except ProfileApiError as exc:
        fix = (
            f" Check that SEGMENT_PROFILE_API_TOKEN is an access token of space '{space}' (Unify > Unify settings > "
            f"API access) and that the region is the workspace's ({base})."
            if exc.code == AUTH_REFUSED
            else ""
        )
        return AssetCheckResult(
            check_name=READBACK,
            passed=False,
            severity=AssetCheckSeverity.ERROR,
            description=f"could not read profiles back: {exc}{fix}",
            metadata={"code": exc.code, "profile_api": base, "space_id": space},
        )
    return verdict(comparison, spec.mapping.name, base, space, tracking_endpoint)
