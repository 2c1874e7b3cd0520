"""Bad project files fail the load with a message naming the file and field, and how to fix it."""

from pathlib import Path

import pytest
from dagster import AssetKey

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.project import MappingSpec, SyncSource, collect_mappings, load_project
from segment_profiles_pipeline_tests.conftest import write

USERS_SQL = "SELECT user_id, email FROM app.users"


def test_shipped_models_load() -> None:
    project = load_project(Path(__file__).parents[2] / "models")
    assert {"users", "account_memberships"} <= set(project.models)
    assert project.models["users"].upstream == (("app", "users"),)
    assert {m.mapping.name for m in project.mappings} >= {"users_identify", "account_memberships_group"}


def test_unknown_key_names_file_and_field(models_dir: Path) -> None:
    write(models_dir, {"users.sql": USERS_SQL, "users.yml": "primary_key: user_id\nprimay_key: x\n"})
    with pytest.raises(ConfigError) as err:
        load_project(models_dir)
    assert "users.yml" in str(err.value)
    assert "field 'primay_key': unknown key" in str(err.value)


def test_missing_primary_key(models_dir: Path) -> None:
    write(models_dir, {"users.sql": USERS_SQL, "users.yml": "description: no key here\n"})
    with pytest.raises(ConfigError, match=r"users\.yml.*field 'primary_key': required key is missing"):
        load_project(models_dir)


def test_mapping_field_errors_name_the_path(models_dir: Path) -> None:
    write(
        models_dir,
        {
            "users.sql": USERS_SQL,
            "users.yml": """
                primary_key: user_id
                mappings:
                  - name: accounts
                    action: group
                    user_id: user_id
            """,
        },
    )
    with pytest.raises(ConfigError, match=r"field 'mappings\[0\]': a `group` mapping needs `group_id`"):
        load_project(models_dir)


def test_mapping_needs_an_identity(models_dir: Path) -> None:
    write(
        models_dir,
        {
            "users.sql": USERS_SQL,
            "users.yml": "primary_key: user_id\nmappings:\n  - {name: m, action: identify}\n",
        },
    )
    with pytest.raises(ConfigError, match="set `user_id` and/or `anonymous_id`"):
        load_project(models_dir)


def test_two_models_with_the_same_name(models_dir: Path) -> None:
    write(
        models_dir,
        {
            "users.sql": USERS_SQL,
            "users.yml": "primary_key: user_id\n",
            "crm/users.sql": USERS_SQL,
            "crm/users.yml": "primary_key: user_id\n",
        },
    )
    with pytest.raises(ConfigError, match="two models are named 'users'") as err:
        load_project(models_dir)
    assert "rename one of the files" in str(err.value)


def test_duplicate_mapping_names_across_models(models_dir: Path) -> None:
    mapping = "primary_key: user_id\nmappings:\n  - {name: same, action: identify, user_id: user_id}\n"
    write(models_dir, {"a.sql": USERS_SQL, "a.yml": mapping, "b.sql": USERS_SQL, "b.yml": mapping})
    with pytest.raises(ConfigError) as err:
        load_project(models_dir)
    assert str(err.value).startswith(
        f"{models_dir / 'b.yml'} (field 'mappings.name'): mapping name 'same' is used "
    )
    assert f"both in {models_dir / 'a.yml'} and in {models_dir / 'b.yml'}" in str(err.value)
    assert "Fix: rename one of the two mappings" in str(err.value)


TWO_NAMED_SAME = """
    primary_key: user_id
    mappings:
      - {name: same, action: identify, user_id: user_id}
      - {name: same, action: identify, user_id: user_id, traits: {email: email}}
"""


def test_duplicate_mapping_names_within_one_model(models_dir: Path) -> None:
    write(models_dir, {"a.sql": USERS_SQL, "a.yml": TWO_NAMED_SAME})
    with pytest.raises(ConfigError) as err:
        load_project(models_dir)
    text = str(err.value)
    assert f"{models_dir / 'a.yml'} (field 'mappings.name'): mapping name 'same' is used twice in" in text
    assert "rename one of the two mappings" in text


def test_duplicate_mapping_names_within_upstream_yml(models_dir: Path) -> None:
    entry = "  - {{table: crm.{0}, asset_key: crm/{0}, primary_key: id, mappings: [{{name: same, action: identify, user_id: id}}]}}\n"
    write(models_dir, {"upstream.yml": "tables:\n" + entry.format("a") + entry.format("b")})
    with pytest.raises(ConfigError) as err:
        load_project(models_dir)
    upstream = models_dir / "upstream.yml"
    assert str(err.value).startswith(
        f"{upstream} (field 'tables.mappings.name'): mapping name 'same' is used twice in {upstream}"
    )


def test_collect_mappings_checks_the_names_it_adds(models_dir: Path) -> None:
    """The traits' mappings join the models' here: a name given twice is a clear error, not
    Dagster's duplicate asset key naming neither file."""
    mapping = "primary_key: user_id\nmappings:\n  - {name: same, action: identify, user_id: user_id}\n"
    write(models_dir, {"a.sql": USERS_SQL, "a.yml": mapping})
    project = load_project(models_dir)
    traits = MappingSpec(
        SyncSource("computed_traits", ("computed_traits",), "t", "k", "traits.yml"),
        project.mappings[0].mapping,
    )
    assert collect_mappings(project, []) == project.mappings
    with pytest.raises(
        ConfigError,
        match=r"^traits\.yml \(field 'mappings\.name'\): mapping name 'same' is used both in .*a\.yml and in traits\.yml",
    ):
        collect_mappings(project, [traits])


def test_a_traits_mapping_named_like_a_model_mapping(sample_models: Path, settings_for, build) -> None:
    """Strict: a load error naming both files. Lenient: the traits file (the second user of the
    name) becomes a stub and the model's mapping keeps its sync asset."""
    users = sample_models / "users.yml"
    users.write_text(users.read_text().replace("name: users_identify", "name: computed_traits_identify"))
    with pytest.raises(ConfigError) as err:
        build(settings_for(sample_models, sample_data=False))
    traits = sample_models / "computed_traits.yml"
    assert str(err.value).startswith(
        f"{traits} (field 'mappings.name'): mapping name 'computed_traits_identify'"
    )
    assert f"both in {users} and in {traits}" in str(err.value)

    graph = build(settings_for(sample_models, sample_data=False), strict=False).resolve_asset_graph()
    stub = graph.get(AssetKey("computed_traits")).to_asset_spec()
    assert stub.description is not None and stub.description.startswith("**Does not load**")
    assert "mapping name 'computed_traits_identify' is used both in" in stub.description
    sync = graph.get(AssetKey(["profile_sync", "computed_traits_identify"]))
    assert sync.parent_keys == {AssetKey("users")}  # the model's mapping, not the traits'


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT FROM WHERE", "does not parse"),
        ("SELECT 1 AS a; SELECT 2 AS b", "found 2 statements"),
        ("DELETE FROM app.users", "must be a SELECT"),
        ("", "the file is empty"),
    ],
)
def test_bad_sql_is_a_load_error_naming_the_file(models_dir: Path, sql: str, message: str) -> None:
    write(models_dir, {"users.sql": sql or "\n", "users.yml": "primary_key: user_id\n"})
    with pytest.raises(ConfigError, match=message) as err:
        load_project(models_dir)
    assert "users.sql" in str(err.value)


def test_sql_without_yaml_and_yaml_without_sql(models_dir: Path) -> None:
    write(models_dir, {"users.sql": USERS_SQL})
    with pytest.raises(ConfigError, match=r"users\.sql: the model has no YAML companion.*users\.yml"):
        load_project(models_dir)
    (models_dir / "users.sql").unlink()
    write(models_dir, {"userz.yml": "primary_key: user_id\n"})
    with pytest.raises(ConfigError, match=r"userz\.yml: this YAML file has no SQL model"):
        load_project(models_dir)


def test_bad_yaml_syntax(models_dir: Path) -> None:
    write(models_dir, {"users.sql": USERS_SQL, "users.yml": "primary_key: [unclosed\n"})
    with pytest.raises(ConfigError, match=r"users\.yml: the YAML does not parse"):
        load_project(models_dir)


@pytest.mark.parametrize("stem", ["users\n", "my users", "1users", "users-v2", "usérs"])
def test_model_file_names_must_be_plain_identifiers(models_dir: Path, stem: str) -> None:
    write(models_dir, {f"{stem}.sql": USERS_SQL, f"{stem}.yml": "primary_key: user_id\n"})
    with pytest.raises(ConfigError, match="is not a valid model name") as err:
        load_project(models_dir)
    assert repr(stem) in str(err.value)  # the name is shown quoted, so a trailing newline is visible


def test_primary_key_missing_from_an_explicit_select_list_is_a_load_error(models_dir: Path) -> None:
    write(
        models_dir, {"users.sql": "SELECT email, plan FROM app.users", "users.yml": "primary_key: user_id\n"}
    )
    with pytest.raises(ConfigError) as err:
        load_project(models_dir)
    text = str(err.value)
    assert text.startswith(
        f"{models_dir / 'users.yml'} (field 'primary_key'): column 'user_id' is not selected"
    )
    assert "users.sql, which returns: email, plan" in text


@pytest.mark.parametrize(
    ("mapping", "field"),
    [
        ("user_id: id", "user_id"),
        ("user_id: user_id\n    traits: {mail: e_mail}", "traits.mail"),
        ("user_id: user_id\n    timestamp: changed_at", "timestamp"),
    ],
)
def test_mapped_column_missing_from_an_explicit_select_list_is_a_load_error(
    models_dir: Path, mapping: str, field: str
) -> None:
    yml = f"primary_key: user_id\nmappings:\n  - name: users_identify\n    action: identify\n    {mapping}\n"
    write(models_dir, {"users.sql": "SELECT user_id, email AS e FROM app.users", "users.yml": yml})
    with pytest.raises(ConfigError) as err:
        load_project(models_dir)
    text = str(err.value)
    assert f"users.yml (mapping 'users_identify', field '{field}')" in text
    assert "which has: user_id, e" in text


def test_star_queries_are_left_to_the_run(models_dir: Path) -> None:
    write(
        models_dir,
        {
            "users.sql": "SELECT u.*, 1 AS one FROM app.users AS u",
            "users.yml": "primary_key: whatever\nmappings:\n  - {name: m, action: identify, user_id: nope}\n",
        },
    )
    assert [m.mapping.name for m in load_project(models_dir).mappings] == ["m"]


def test_lenient_load_keeps_good_models_and_reports_each_broken_file(models_dir: Path) -> None:
    good = "primary_key: user_id\nmappings:\n  - {name: good_identify, action: identify, user_id: user_id}\n"
    bad_yaml = "primary_key: [unclosed\n"
    bad_sql_mappings = (
        "primary_key: user_id\nmappings:\n  - {name: broken_identify, action: identify, user_id: user_id}\n"
    )
    write(
        models_dir,
        {
            "good.sql": USERS_SQL,
            "good.yml": good,
            "bad_yaml.sql": USERS_SQL,
            "bad_yaml.yml": bad_yaml,
            "bad_sql.sql": "SELECT FROM WHERE",
            "bad_sql.yml": bad_sql_mappings,
            "orphan.yml": "primary_key: x\n",
        },
    )
    with pytest.raises(ConfigError):
        load_project(models_dir)  # strict is the default
    project = load_project(models_dir, strict=False)
    assert list(project.models) == ["good"]
    assert [m.mapping.name for m in project.mappings] == ["good_identify"]
    problems = {p.name: p for p in project.problems}
    assert set(problems) == {"bad_yaml", "bad_sql", "orphan"}
    assert "does not parse" in str(problems["bad_sql"].error)
    assert problems["bad_sql"].mapping_names == ("broken_identify",)  # its YAML still names them
    assert problems["bad_yaml"].mapping_names == ()
    assert "no SQL model next to it" in str(problems["orphan"].error)


def test_lenient_load_drops_the_second_user_of_a_mapping_name(models_dir: Path) -> None:
    mapping = "primary_key: user_id\nmappings:\n  - {name: same, action: identify, user_id: user_id}\n"
    write(models_dir, {"a.sql": USERS_SQL, "a.yml": mapping, "b.sql": USERS_SQL, "b.yml": mapping})
    project = load_project(models_dir, strict=False)
    assert list(project.models) == ["a"]
    assert [p.name for p in project.problems] == ["b"]
    assert "mapping name 'same' is used both in" in str(project.problems[0].error)


def test_lenient_load_drops_a_model_naming_two_mappings_alike(models_dir: Path) -> None:
    good = "primary_key: user_id\nmappings:\n  - {name: good_identify, action: identify, user_id: user_id}\n"
    write(models_dir, {"a.sql": USERS_SQL, "a.yml": TWO_NAMED_SAME, "b.sql": USERS_SQL, "b.yml": good})
    project = load_project(models_dir, strict=False)
    assert list(project.models) == ["b"]
    assert [m.mapping.name for m in project.mappings] == ["good_identify"]
    assert [(p.name, p.mapping_names) for p in project.problems] == [("a", ("same", "same"))]
