"""The Segment destination resource: endpoint, write key (an ``EnvVar``), delivery tuning.

Without a write key every sync is a dry run: this is what the Quickstart does, so a new user
sees exactly what would be sent before anything is. A production deployment
(``SEGMENT_PROFILES_DEPLOYMENT=production``) must not fall into that silently, so there a missing
key fails the load instead.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.segment.client import SegmentClient
from segment_profiles_pipeline.segment.spec import resolve_endpoint
from segment_profiles_pipeline.settings import env
from segment_profiles_pipeline.sync.delivery import OUTBOX, Live, Outbox


class SegmentDestination(ConfigurableResource):
    write_key: str | None = Field(default=None, description="Source write key; None = dry run.")
    region: str = Field(default="north_america", description="north_america or europe.")
    endpoint: str | None = Field(
        default=None, description="Explicit Tracking API base URL (overrides region)."
    )
    max_in_flight: int = Field(default=4, ge=1, le=64, description="Concurrent HTTP requests.")
    max_requests_per_second: float = Field(
        default=500.0, gt=0, description="Below Segment's ~1,000 req/s guidance."
    )
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=6, ge=0)

    @property
    def endpoint_url(self) -> str:
        return resolve_endpoint(self.region, self.endpoint)

    def is_dry_run(self, force_dry_run: bool = False) -> bool:
        """Whether a sync through this destination sends nothing (no key, or asked to)."""
        return force_dry_run or not self.write_key

    @contextmanager
    def delivery(self, force_dry_run: bool = False) -> Iterator[Live | Outbox]:
        """Where a sync's messages go: live to the destination, or the outbox for a dry run."""
        if self.is_dry_run(force_dry_run):
            yield OUTBOX
            return
        with self.client() as client:
            yield Live(client)

    @contextmanager
    def client(self) -> Iterator[SegmentClient]:
        """An HTTP client for the destination (Test Mapping sends through it directly)."""
        if not self.write_key:
            raise ConfigError(
                "not set: there is no destination to send to.",
                field="SEGMENT_WRITE_KEY",
                fix="set the Segment source's write key.",
            )
        with SegmentClient(
            self.endpoint_url,
            self.write_key,
            max_in_flight=self.max_in_flight,
            max_requests_per_second=self.max_requests_per_second,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
        ) as client:
            yield client


def segment_from_env(*, production: bool = False) -> SegmentDestination:
    """Region and endpoint are plain settings (validated now); the write key stays an EnvVar."""
    if production and not env("SEGMENT_WRITE_KEY"):
        raise ConfigError(
            "not set, and SEGMENT_PROFILES_DEPLOYMENT=production: every sync would be a dry run that sends "
            "nothing to Segment.",
            field="SEGMENT_WRITE_KEY",
            fix="set the Segment source's write key, or unset SEGMENT_PROFILES_DEPLOYMENT outside production.",
        )
    region = env("SEGMENT_REGION") or "north_america"
    endpoint = env("SEGMENT_ENDPOINT")
    resolve_endpoint(region, endpoint)  # fail at load time on a bad region or a non-loopback http URL
    return SegmentDestination(
        write_key=EnvVar("SEGMENT_WRITE_KEY") if env("SEGMENT_WRITE_KEY") else None,
        region=region,
        endpoint=endpoint,
    )
