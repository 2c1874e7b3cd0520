"""The shared YAML reader and pydantic-error formatter: every config file's errors read alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from segment_profiles_pipeline import yaml_config
from segment_profiles_pipeline.config import ModelConfig, UpstreamConfig
from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.identity.config import load_identity
from segment_profiles_pipeline.predictions.config import PredictionsFile
from segment_profiles_pipeline.traits.config import TraitsFile
from segment_profiles_pipeline.yaml_config import load_yaml, read_yaml, validate

IDENTIFY = "  - {name: m, action: identify, user_id: id"


def error(model: type, data: object) -> str:
    with pytest.raises(ConfigError) as err:
        validate(model, data, "models/users.yml")
    return str(err.value)


def model_error(mapping_tail: str) -> str:
    """The error of a users.yml whose one identify mapping ends with ``mapping_tail``."""
    return error(ModelConfig, yaml.safe_load(f"primary_key: id\nmappings:\n{IDENTIFY}{mapping_tail}}}\n"))


def read_error(path: Path, text: str) -> str:
    """The error of reading ``text`` written to ``path``."""
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    return str(err.value)


def test_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        read_yaml(tmp_path / "users.yml")
    assert (
        str(err.value)
        == f"{tmp_path / 'users.yml'}: the file does not exist. Fix: create it, or check the path."
    )


def test_files_are_parsed_by_libyaml_and_only_a_refused_one_again_by_pyyaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PyYAML's own parser is ~20x slower than libyaml's: it only re-reads a file libyaml refused,
    for its messages (the tests below pin them)."""
    pure: list[str] = []

    class CountingPure(yaml_config._PureLoader):
        def __init__(self, stream: str) -> None:
            pure.append(stream)
            super().__init__(stream)

    monkeypatch.setattr(yaml_config, "_PureLoader", CountingPure)
    good, bad = tmp_path / "good.yml", tmp_path / "bad.yml"
    good.write_text("primary_key: id\nmappings: [{name: m}]\n")
    assert read_yaml(good) == {"primary_key": "id", "mappings": [{"name": "m"}]}
    assert pure == []
    assert "does not parse at line 2, column 6" in read_error(bad, "traits: [a, b\nother: 1\n")
    assert pure == ["traits: [a, b\nother: 1\n"]


def test_a_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "users.yml"
    text = read_error(path, "primary_key: id\nmappings:\n  - name: m\n   action: identify\n")
    assert text.startswith(f"{path}: the YAML does not parse at line 4, column 4: ")
    assert "Fix: check the indentation" in text


def test_an_unclosed_bracket_names_where_it_opened(tmp_path: Path) -> None:
    path = tmp_path / "computed_traits.yml"
    assert read_error(path, "traits: [a, b\nother: 1\n").startswith(
        f"{path}: the YAML does not parse at line 2, column 6: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence at line 1, column 9)."
    )


def test_a_key_written_twice_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    # PyYAML alone keeps the last value: the first `traits` would silently vanish
    path = tmp_path / "users.yml"
    text = "primary_key: id\nmappings:\n  - name: m\n    traits: {a: a}\n    action: identify\n    traits: {b: b}\n"
    assert read_error(path, text) == (
        f"{path}: key 'traits' is written twice in one mapping (lines 4 and 6). "
        "Fix: keep one of them (YAML would silently use the last one)."
    )


def test_merge_keys_and_equal_keys_in_different_mappings_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "users.yml"
    path.write_text(
        "base: &b {action: identify, user_id: id}\n"
        "mappings:\n  - {<<: *b, name: one}\n  - {<<: *b, name: two, user_id: other}\n"
    )
    data = read_yaml(path)
    assert data["mappings"] == [
        {"action": "identify", "user_id": "id", "name": "one"},
        {"action": "identify", "user_id": "other", "name": "two"},
    ]


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "a list"), ("just text\n", "'just text'")])
def test_the_top_level_must_be_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "users.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_yaml(path, ModelConfig)
    assert str(err.value).startswith(
        f"{path}: expected a mapping of keys to values at the top level, got {kind}. Fix: "
    )


def test_an_empty_file_is_an_empty_mapping(tmp_path: Path) -> None:
    (tmp_path / "identity.yml").write_text("# nothing yet\n")
    assert load_identity(tmp_path).config.identifiers == []


def test_a_misspelt_key_gets_a_suggestion() -> None:
    assert model_error(", retry: {max_sync: 3}").endswith(
        "field 'mappings[0].retry.max_sync': unknown key; did you mean 'max_syncs'?"
    )


def test_an_unknown_key_with_no_close_match_lists_the_allowed_keys() -> None:
    text = error(UpstreamConfig, {"tables": [{"table": "crm.c", "dbt_model": "c", "zzz": 1}]})
    assert text.endswith(
        "field 'tables[0].zzz': unknown key; the keys allowed here are: "
        "asset_key, dbt_model, description, mappings, primary_key, table"
    )


def test_a_literal_names_the_value_and_the_likely_one() -> None:
    text = error(
        ModelConfig, yaml.safe_load("primary_key: id\nmappings:\n  - {name: m, action: identfy, user_id: id}")
    )
    assert text.endswith(
        "field 'mappings[0].action': Input should be 'identify', 'group', 'track' or 'subscription'; "
        "got 'identfy' (did you mean 'identify'?)"
    )


def test_a_guess_is_made_only_when_one_choice_is_clearly_closest() -> None:
    # 'likelihood_to_buy' is about as close to '..._churn' as to '..._purchase': no guess
    text = error(PredictionsFile, {"predictions": [{"type": "likelihood_to_buy"}]})
    assert text.endswith(
        "field 'predictions[0].type': Input should be 'likelihood_to_churn', 'likelihood_to_purchase', "
        "'custom_goal' or 'predicted_ltv'; got 'likelihood_to_buy'"
    )
    # 'sms_subscription_status' is close too, but clearly less so
    assert model_error(", email_subscription_statu: s").endswith(
        "field 'mappings[0].email_subscription_statu': unknown key; did you mean 'email_subscription_status'?"
    )


def test_a_pattern_is_said_in_words_with_the_value() -> None:
    assert model_error(", traits: {email: e mail}").endswith(
        "field 'mappings[0].traits.email': 'e mail' is not a column name: letters, digits and underscores, "
        "not starting with a digit"
    )


def test_a_union_reports_only_the_member_the_value_was_meant_for() -> None:
    # `traits.email` takes a column or {column, nulls}: a mapping is meant for the second
    text = model_error(", traits: {email: {colum: e}}")
    assert "\n  - field 'mappings[0].traits.email.column': required key is missing" in text
    assert "\n  - field 'mappings[0].traits.email.colum': unknown key; did you mean 'column'?" in text
    assert "valid string" not in text and "constrained-str" not in text and "TraitField" not in text


def test_a_type_error_inside_the_meant_member_is_kept() -> None:
    text = model_error(", traits: {email: {column: 5}}")
    assert text.endswith("field 'mappings[0].traits.email.column': expected a string, got 5")


def test_a_value_no_member_takes_lists_the_kinds() -> None:
    assert model_error(", traits: {email: [a]}").endswith(
        "field 'mappings[0].traits.email': expected a string or a mapping (key: value), got a list"
    )


def test_a_key_that_is_not_a_plain_name_is_quoted_in_the_path() -> None:
    assert model_error(", traits: {'e mail': [a]}").endswith(
        "field 'mappings[0].traits['e mail']': expected a string or a mapping (key: value), got a list"
    )


def test_several_problems_are_one_error_one_line_each() -> None:
    text = error(ModelConfig, {"primay_key": "id"})
    assert text == (
        "models/users.yml: invalid configuration:\n"
        "  - field 'primary_key': required key is missing\n"
        "  - field 'primay_key': unknown key; did you mean 'primary_key'?"
    )


def test_errors_inside_a_trait_use_the_same_format_under_its_name() -> None:
    trait = {"name": "Clicks", "type": "event_counter", "event": "E"}
    condition = {"property": "p", "operatr": "equals", "value": "x"}
    text = error(TraitsFile, {"traits": [{**trait, "conditions": [condition]}]})
    assert text == (
        "models/users.yml: invalid configuration: field 'traits[0]': trait 'Clicks': "
        "conditions.and[0].operator: required key is missing; "
        "conditions.and[0].operatr: unknown key; did you mean 'operator'?"
    )
