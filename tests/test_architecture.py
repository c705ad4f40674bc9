"""The house rules of the package, checked on its source: layers, no cycles, no private imports, small modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pavi_parcel"
#: From the bottom up: a package may import its own modules and those of lower layers only.
LAYERS = [
    {"exceptions"},
    {"io", "settings", "metrics"},
    {"spaces"},
    {"stores", "model"},
    {"atlas"},
    {"bids"},
    {"ingest"},
    {"fingerprints"},
    {"inference"},
    {"export", "simulate"},
    {"connectome"},
    {"validation"},
    {"workflows"},
    {"cli"},
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}
MAX_LINES = 420
FACE = "pavi_parcel"  # the package's __init__: its lazy face may reach any layer


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    return {_module_name(p): (p, ast.parse(p.read_text())) for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, tree: ast.Module) -> list[tuple[str, list[str], bool, int]]:
    """(imported module, names, function-local?, line) for every import of the package."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    top_level = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            if base == FACE or base.startswith(FACE + "."):
                out.append((base, [a.name for a in node.names], id(node) not in top_level, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(FACE + "."):
                    out.append((alias.name, [], id(node) not in top_level, node.lineno))
    return out


def _target_module(base: str, names: list[str], modules: dict) -> list[str]:
    """The modules an import statement loads: ``from pkg import mod`` names modules too."""
    found = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
    return found or [base]


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


MODULES = _modules()


def test_every_package_is_in_a_layer():
    stages = {_stage(m) for m in MODULES if _stage(m) and _stage(m) not in ("conf",)}
    assert stages <= set(LAYER_OF), f"packages without a layer: {stages - set(LAYER_OF)}"


def test_imports_never_go_up_a_layer():
    wrong = []
    for name, (path, tree) in MODULES.items():
        if name == FACE:
            continue
        own = _stage(name)
        for base, names, _, line in _imports(name, path, tree):
            for target in _target_module(base, names, MODULES):
                other = _stage(target)
                if other is None or other == own:
                    continue
                if LAYER_OF[other] >= LAYER_OF[own]:
                    wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({own}) imports {target} ({other})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_modules():
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, (path, tree) in MODULES.items():
        own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        for base, names, _, _ in _imports(name, path, tree):
            for target in _target_module(base, names, MODULES):
                parts = target.split(".")
                # importing a module of another package runs that package's __init__ first
                chain = {".".join(parts[:i]) for i in range(2, len(parts) + 1)} - own_packages
                graph[name].update(t for t in chain if t in MODULES and t != name)
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_modules_of_the_package_are_imported_at_the_top():
    local = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {base}"
             for name, (path, tree) in MODULES.items() if name != FACE
             for base, _, is_local, line in _imports(name, path, tree) if is_local]
    assert not local, "function-local imports of the package (keep those for heavy third-party libraries):\n" + \
        "\n".join(local)


def test_no_private_name_is_imported_across_modules():
    private = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {n} from {base}"
               for name, (path, tree) in MODULES.items()
               for base, names, _, line in _imports(name, path, tree)
               for n in names if n.startswith("_") and n != "__version__" and base != name]
    assert not private, "\n".join(private)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name):
    path = MODULES[name][0]
    n_lines = len(path.read_text().splitlines())
    assert n_lines <= MAX_LINES, f"{path.relative_to(PACKAGE.parent)} has {n_lines} lines"


def test_every_package_names_its_public_functions():
    for name, (path, tree) in MODULES.items():
        if path.name == "__init__.py" and name != FACE and _stage(name) != "conf":
            names = [n for n in tree.body if isinstance(n, ast.Assign)
                     and any(getattr(t, "id", None) == "__all__" for t in n.targets)]
            assert names or name == "pavi_parcel.model", f"{path} has no __all__"
