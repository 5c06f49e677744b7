"""Import rules that keep the layers apart (STYLE.md guideline 4)."""

from __future__ import annotations

import ast
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    """Return every module a file imports, with `from a import b` also giving `a.b`."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def test_the_gpconnect_library_never_imports_django() -> None:
    files = sorted((BASE_DIR / "gpconnect").rglob("*.py"))
    assert files, "expected the gpconnect library to have modules"
    offenders = {
        str(path.relative_to(BASE_DIR)): sorted(
            m for m in imported_modules(path) if is_within(m, "django")
        )
        for path in files
    }
    assert {path: mods for path, mods in offenders.items() if mods} == {}


def test_views_reach_gp_connect_only_through_services() -> None:
    modules = imported_modules(BASE_DIR / "viewer" / "views.py")
    forbidden = [m for m in modules if is_within(m, "httpx") or is_within(m, "gpconnect.client")]
    assert forbidden == []
