"""Trait column names in the Profiles Sync tables, and the errors that keep two traits apart."""

import pytest

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.profiles_sync.config import trait_column, trait_columns


@pytest.mark.parametrize(
    ("trait", "column"),
    [
        ("plan", "plan"),
        ("Lifetime Value", "lifetime_value"),
        ("lastSeen-At", "lastseen_at"),
        ("2fa", "t_2fa"),
    ],
)
def test_trait_columns_are_lower_snake_case(trait: str, column: str) -> None:
    assert trait_column(trait) == column


def test_two_traits_on_one_column_is_an_error_naming_both() -> None:
    with pytest.raises(ConfigError) as exc:
        trait_columns({"Plan": ["a_identify"], "plan": ["b_identify"]})
    assert "traits 'Plan' and 'plan'" in str(exc.value) and "b_identify" in str(exc.value)
    assert "Fix: rename one of the traits" in str(exc.value)


def test_a_trait_on_a_system_column_is_an_error() -> None:
    with pytest.raises(ConfigError) as exc:
        trait_columns({"merged_to": ["users_identify"]})
    assert "trait 'merged_to' (mapping users_identify)" in str(exc.value)
    assert "system column of profile_traits_updates" in str(exc.value)
