"""identity.yml errors name the file and field; without the file, Segment's defaults apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.identity.config import IdentityFile, load_identity, rules_from


def test_no_file_means_segments_defaults(tmp_path: Path) -> None:
    assert load_identity(tmp_path).rules == rules_from(IdentityFile())
    assert [(t.type, t.priority, t.limit) for t in load_identity(tmp_path).rules.types] == [
        ("user_id", 1, 1),
        ("email", 2, 5),
        ("anonymous_id", 3, 5),
    ]


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("identifiers: [{type: Email}]", "identifiers[0].type", "must be lower-case"),
        ("identifiers: [{type: phone, limit: 0}]", "identifiers[0].limit", "greater than or equal to 1"),
        ("blocked_values: ['(']", "blocked_values", "not a regular expression"),
        (
            "identifiers: [{type: a, priority: 4}, {type: b, priority: 4}]",
            "",
            "two identifier types share a priority",
        ),
        ("sources: {event: [flex.x]}", "sources.event", "unknown key"),
    ],
)
def test_errors_name_file_and_field(tmp_path: Path, text: str, field: str, message: str) -> None:
    (tmp_path / "identity.yml").write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_identity(tmp_path)
    assert str(tmp_path / "identity.yml") in str(exc.value)
    # a problem of the whole file names no field
    assert (f"field '{field}': " if field else "invalid configuration: ") in str(exc.value)
    assert message in str(exc.value)


def test_the_model_loader_leaves_identity_yml_to_the_identity_domain(tmp_path) -> None:
    """identity.yml has no SQL next to it and is not a model companion: it must not fail the load."""
    from segment_profiles_pipeline.project import load_project

    models = tmp_path / "models"
    models.mkdir()
    (models / "people.sql").write_text("SELECT 1 AS id")
    (models / "people.yml").write_text("primary_key: id\n")
    (models / "identity.yml").write_text("identifiers: {}\n")
    assert set(load_project(models).models) == {"people"}
