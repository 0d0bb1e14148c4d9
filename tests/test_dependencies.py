"""Every package agent/ imports is declared in pyproject's [project] dependencies (the image
installs those and nothing else): an import that arrives only through another package breaks
the day that package stops bringing it. Which distribution provides a module is read from the
installed files, not from a hand-kept map."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = set()
    for requirement in project["dependencies"]:
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        assert match is not None, requirement
        names.add(normalized(match.group(0)))
    return names


def imported_modules(root: Path = ROOT / "agent") -> set[str]:
    """Every absolute import of a module outside the standard library and agent/ (for `from a
    import b`, also `a.b`, in case b is a module of its own distribution)."""
    found: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {
        name
        for name in found
        if name.split(".")[0] not in sys.stdlib_module_names and name.split(".")[0] != "agent"
    }


def providers(modules: set[str]) -> dict[str, str]:
    """module -> the installed distribution whose files hold it."""
    owner: dict[Path, str] = {}
    for distribution in metadata.distributions():
        for file in distribution.files or []:
            owner[Path(str(distribution.locate_file(file))).resolve()] = normalized(
                distribution.metadata["Name"]
            )
    found: dict[str, str] = {}
    for module in modules:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None  # `from a import b` where b is a name, not a module
        if spec is None or spec.origin is None:
            continue
        provider = owner.get(Path(spec.origin).resolve())
        assert provider is not None, f"{module}: from no installed distribution"
        found[module] = provider
    return found


def test_every_package_agent_imports_is_a_declared_dependency() -> None:
    used = providers(imported_modules())
    missing = {module: dist for module, dist in used.items() if dist not in declared()}
    assert missing == {}
    # the check sees what it must: the SDK, the plugins, and an import only livekit-agents brings
    assert {"livekit-agents", "livekit-plugins-silero", "opentelemetry-api"} <= set(used.values())


def test_the_check_catches_an_undeclared_import(tmp_path: Path) -> None:
    (tmp_path / "uses_jsonschema.py").write_text("import jsonschema\n")  # the dev group's
    used = providers(imported_modules(tmp_path))
    assert used == {"jsonschema": "jsonschema"} and "jsonschema" not in declared()
