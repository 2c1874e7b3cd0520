"""Domains stand side by side: none imports another domain's ``assets`` module.

Shared names (asset keys, the pool, the retry policy, the lenient-load stub) come from
``vocabulary.py``; each domain package exposes ``build_defs``, and ``definitions.py`` only
merges what those return, importing no ``assets`` module itself.
"""

import ast
import importlib
import inspect
from pathlib import Path

import pytest
from dagster import Definitions

from segment_profiles_pipeline.vocabulary import DomainDefs

PACKAGE = Path(__file__).resolve().parents[1] / "segment_profiles_pipeline"


def _assets_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith(".assets")
    ]


def test_no_domain_imports_another_domains_assets_module() -> None:
    crossings = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        domain = relative.parts[0] if len(relative.parts) > 1 else None
        for module in _assets_imports(path):
            target = module.split(".")[1]
            if target != domain:
                crossings.append(f"{relative} imports {module}")
    assert crossings == []


DOMAINS = ["models", "traits", "identity", "predictions", "sync", "profiles_sync", "automation"]


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_domain_package_exposes_build_defs(domain: str) -> None:
    build_defs = importlib.import_module(f"segment_profiles_pipeline.{domain}").build_defs
    assert build_defs.__module__.startswith(f"segment_profiles_pipeline.{domain}.")
    returns = inspect.signature(build_defs, eval_str=True).return_annotation
    assert returns in (Definitions, DomainDefs), (domain, returns)


def test_definitions_merges_the_domains_build_defs() -> None:
    tree = ast.parse((PACKAGE / "definitions.py").read_text())
    called = {
        node.func.value.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "build_defs"
        and isinstance(node.func.value, ast.Name)
    }
    assert called == set(DOMAINS)


def test_the_environment_is_read_only_in_settings() -> None:
    """One module decides the environment (``settings.py``); the test server is not the project."""
    readers = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ("settings.py", "testing"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("environ", "getenv", "environb")
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
            ):
                readers.append(f"{relative}:{node.lineno}")
    assert readers == []
