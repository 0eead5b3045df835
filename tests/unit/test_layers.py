"""The package's layers, checked from its imports (read with ast, nothing is imported or run).

Every ``import`` of every module under ``anymal_lit/`` counts, also those inside functions (a lazy import is still
a dependency), and a module's dependencies count through the modules it imports: the model library must stay
importable without Lightning, so ``anymal_lit.collectives`` (which it uses) must not reach Lightning either.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "anymal_lit"

LIGHTNING = ("lightning", "pytorch_lightning", "lightning_fabric")
ABOVE_THE_LIBRARY = tuple(
    f"anymal_lit.{name}"
    for name in (
        "data",
        "stages",
        "callbacks",
        "toyworld",
        "cli",
        "lightning_cli",
        "commands",
        "inference",
        "strategies",
        "demo",
    )
)
RULES = {
    # layer -> what it must not reach, directly or through the anymal_lit modules it imports
    "anymal_lit.encoders": LIGHTNING + ABOVE_THE_LIBRARY,
    "anymal_lit.projectors": LIGHTNING + ABOVE_THE_LIBRARY,
    "anymal_lit.models": LIGHTNING + ABOVE_THE_LIBRARY,
    "anymal_lit.losses": LIGHTNING + ABOVE_THE_LIBRARY,
    "anymal_lit.metrics": ("anymal_lit.stages",),
}
TOY_WORLD = "anymal_lit.toyworld"
TOY_WORLD_USERS = (
    "anymal_lit.demo",  # the demo builds the toy world and reports on it
    "anymal_lit.commands",  # `anymal-lit toyworld` / `tiny-lm` / `demo`
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@cache
def imports(module: str) -> tuple[tuple[str, int], ...]:
    """``(imported name, line)`` of every import in ``module``; ``from a import b`` gives both ``a`` and ``a.b``
    (``b`` may be a submodule)."""
    path = modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.append((base, node.lineno))
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return tuple(found)


def local_modules(name: str) -> list[str]:
    """The anymal_lit modules importing ``name`` runs: it and every package above it, but for ``anymal_lit`` itself
    (every import runs it; :func:`test_the_package_root_imports_only_the_model_library` checks it on its own)."""
    parts = name.split(".")
    return [m for m in (".".join(parts[:i]) for i in range(2, len(parts) + 1)) if m in modules()]


def chains(start: str, layer: str, forbidden: tuple[str, ...]) -> list[str]:
    """Every forbidden import reachable from ``start``: ``file:line imports name``, with the imports that lead there
    from ``start`` when the import is outside ``layer`` (the layer's own modules are checked on their own)."""
    found, seen, todo = [], {start}, [(start, [])]
    while todo:
        module, path = todo.pop()
        where = modules()[module].relative_to(PACKAGE.parent)
        for name, line in imports(module):
            if any(within(name, f) for f in forbidden):
                if any(hit.startswith(f"{where}:{line} ") for hit in found):
                    continue  # `from a import b`: one line, one report
                found.append(f"{where}:{line} imports {name}" + (f" (via {' -> '.join(path)})" if path else ""))
                continue
            for local in local_modules(name):
                if local not in seen and not within(local, layer):
                    seen.add(local)
                    todo.append((local, [*path, f"{where}:{line}"]))
    return sorted(set(found))


def violations() -> list[str]:
    found = []
    for module in modules():
        for layer, forbidden in RULES.items():
            if within(module, layer):
                found += chains(module, layer, forbidden)
    return sorted(set(found))


def toy_world_imports() -> list[str]:
    found = []
    for module, path in modules().items():
        if within(module, TOY_WORLD) or any(within(module, user) for user in TOY_WORLD_USERS):
            continue
        for name, line in imports(module):
            if within(name, TOY_WORLD) and not any(
                hit.startswith(f"{path.relative_to(PACKAGE.parent)}:{line} ") for hit in found
            ):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    return sorted(set(found))


def test_walker_sees_imports_inside_functions_and_relative_ones():
    assert "anymal_lit.inference" in {name for name, _ in imports("anymal_lit")}  # the lazy one in __getattr__
    assert len(modules()) > 50 and all(imports(m) is not None for m in modules())


def test_the_model_library_and_the_metrics_import_nothing_above_them():
    found = violations()
    assert not found, "forbidden imports:\n" + "\n".join(found)


def test_the_package_root_imports_only_the_model_library():
    """``import anymal_lit.<anything>`` runs ``anymal_lit/__init__.py``: at module level (its lazy imports inside
    functions run on first use only) it may import only the model library."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in top if isinstance(n, ast.ImportFrom) and n.module]
    library = ("anymal_lit.encoders", "anymal_lit.projectors", "anymal_lit.models", "anymal_lit.losses")
    assert [n for n in names if n.startswith("anymal_lit") and not any(within(n, m) for m in library)] == []
    assert [n for n in names if any(within(n, f) for f in LIGHTNING)] == []


def test_only_the_demo_and_its_commands_import_the_toy_world():
    found = toy_world_imports()
    assert not found, "toy-world imports outside anymal_lit/toyworld:\n" + "\n".join(found)
