"""Domains stand side by side: none imports another domain's ``assets`` module.

Shared names (asset keys, the pool, the retry policy, the lenient-load stub) come from
``vocabulary.py``; only ``definitions.py`` (which assembles everything) and a package's own
``__init__`` may import an ``assets`` module.
"""

import ast
from pathlib import Path

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
        if relative.name == "definitions.py" and len(relative.parts) == 1:
            continue
        domain = relative.parts[0] if len(relative.parts) > 1 else None
        for module in _assets_imports(path):
            target = module.split(".")[1]
            if target != domain:
                crossings.append(f"{relative} imports {module}")
    assert crossings == []
