"""The mypy configuration does what pyproject.toml says: strict where listed, lenient elsewhere."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

from segment_profiles_pipeline.settings import PROJECT_ROOT

UNTYPED = "def double(x):\n    return x * 2\n\n\ndef use() -> int:\n    return double(2)\n"


def mypy_config() -> dict:
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["mypy"]


def strict_modules() -> list[str]:
    (section,) = [o for o in mypy_config()["overrides"] if o.get("disallow_untyped_defs")]
    return section["module"]


def test_every_strict_module_exists() -> None:
    # a renamed module would silently leave strict checking (mypy only warns when a whole section
    # matches nothing)
    for name in strict_modules():
        package = name.removesuffix(".*")
        assert importlib.util.find_spec(package) is not None, f"{name} in [tool.mypy] is no module"


def test_strict_applies_to_the_listed_modules_only(tmp_path: Path) -> None:
    """An untyped function is an error in the state package and fine in the rest.

    Guards the override's form: `strict = true` in an override section turns strict on for every
    module, which would make the rest fail on every untyped helper."""
    package = tmp_path / "segment_profiles_pipeline"
    (package / "state").mkdir(parents=True)
    for path in (package / "__init__.py", package / "state" / "__init__.py"):
        path.write_text("")
    (package / "state" / "probe.py").write_text(UNTYPED)
    (package / "probe.py").write_text(UNTYPED)
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("mypy")),
            "--config-file",
            str(PROJECT_ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "segment_profiles_pipeline/state/probe.py",
            "segment_profiles_pipeline/probe.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert errors, result.stdout + result.stderr
    assert all(line.startswith("segment_profiles_pipeline/state/probe.py:") for line in errors), errors
    assert any("[no-untyped-def]" in line for line in errors)
    assert any("[no-untyped-call]" in line for line in errors)
