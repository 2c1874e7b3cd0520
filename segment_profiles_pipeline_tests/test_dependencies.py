"""pyproject.toml declares what the package imports, and only that (plus the few run-time-only ones)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions, requires

from segment_profiles_pipeline.settings import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "segment_profiles_pipeline"
RUNTIME_ONLY = {
    "dagster-webserver": "`dg dev` / `dagster dev` serve the UI with it",
    "dagster-graphql": "the webserver's API (and the e2e test's client)",
    "pandas": "snowflake.connector.pandas_tools.write_pandas needs it for Snowflake loads",
}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def declared() -> set[str]:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    return {_name(r) for r in project["dependencies"]}


def imported_tops() -> dict[str, set[str]]:
    """Top-level module imported → the distributions that provide it."""
    tops: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                tops |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops.add(node.module.split(".")[0])
    tops -= set(sys.stdlib_module_names) | {"segment_profiles_pipeline", "__future__"}
    dists = packages_distributions()
    return {top: {d.lower().replace("_", "-") for d in dists.get(top, [top])} for top in tops}


def imported_distributions() -> set[str]:
    return {d for found in imported_tops().values() for d in found}


def test_every_import_is_declared() -> None:
    deps = declared()
    transitive = {_name(r) for d in deps for r in (requires(d) or []) if "extra ==" not in r}
    missing = {top for top, dists in imported_tops().items() if not dists & (deps | transitive)}
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"
    # the ones the package imports itself must be declared directly, not inherited
    assert {"numpy", "starlette", "uvicorn", "croniter", "sqlglot"} <= deps


def test_every_dependency_is_imported_or_a_documented_runtime_need() -> None:
    unused = declared() - imported_distributions() - set(RUNTIME_ONLY)
    assert not unused, f"declared but never imported: {sorted(unused)}"


def test_sqlglot_has_an_upper_bound() -> None:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    (sqlglot,) = [r for r in project["dependencies"] if _name(r) == "sqlglot"]
    assert "<" in sqlglot
