"""The framework's import graph: hil/sim is the board, not the tester, and no module imports one that
imports it back (an import cycle is design debt: the two modules are one concept or a seam is missing)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: What the virtual board may import from the framework: the bench description it is configured by
#: (the contract, the DUT profile and its frame layouts, the bench YAML, seed-to-key), the image format (its bootloader
#: verifies images), the configuration package format (its board verifies packages like images), the
#: framework's base errors, the bus factory (python-can) and the ISO-TP link on it (can-isotp).
ALLOWED = ("hil.bench.contract", "hil.bench.dut_profile", "hil.bench.frames", "hil.bench.config", "hil.bench.seedkeys",
           "hil.bench.validation", "hil.images", "hil.config_packages.package", "hil.errors", "hil.drivers.canbus",
           "hil.drivers.isotp_link",
           "hil.sim")


def _framework_imports(path: Path, package: str = "hil.sim") -> list[tuple[int, str]]:
    """(line, module) of every framework import in `path`: at module level, in functions, under TYPE_CHECKING."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
            elif node.module:
                found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return [(line, name) for line, name in found if name == "hil" or name.startswith("hil.")]


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / "hil").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _module_of(name: str, modules: dict[str, Path]) -> str | None:
    """The module an imported name lives in: `hil.a.b.Name` -> `hil.a.b` (the longest known prefix)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in modules:
            return ".".join(parts[:i])
    return None


def import_graph() -> dict[str, set[str]]:
    """Module -> the framework modules it imports (every import statement, wherever it stands)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = {_module_of(n, modules) for _, n in _framework_imports(path, package)}
        graph[name] = {d for d in deps if d and d != name and not name.startswith(d + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_sim_imports_only_contract_profile_and_image_format():
    bad = []
    for path in sorted((ROOT / "hil" / "sim").rglob("*.py")):
        for line, name in _framework_imports(path):
            if not any(name == a or name.startswith(a + ".") for a in ALLOWED):
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {name}")
    assert not bad, "hil/sim reaches into the tester:\n" + "\n".join(bad) + f"\nallowed: {', '.join(ALLOWED)}"


def test_the_rule_catches_a_driver_import(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("from hil.drivers.uds import UdsClient\nfrom hil.dut import flasher\nimport hil.plugin\n")
    names = [n for _, n in _framework_imports(f)]
    assert names == ["hil.drivers.uds.UdsClient", "hil.dut.flasher", "hil.plugin"]
    assert not any(any(n == a or n.startswith(a + ".") for a in ALLOWED) for n in names)


def test_no_module_imports_one_that_imports_it_back():
    found = cycles(import_graph())
    assert not found, "import cycles (every import counts, also inside functions and under TYPE_CHECKING):\n" + \
        "\n".join(" <-> ".join(c) for c in found)


def test_the_cycle_rule_catches_a_cycle_through_a_function_level_import():
    graph = {"hil.a": {"hil.b"}, "hil.b": {"hil.c"}, "hil.c": {"hil.a"}, "hil.d": {"hil.a"}}
    assert cycles(graph) == [["hil.a", "hil.b", "hil.c"]]
    assert cycles({"hil.a": {"hil.b"}, "hil.b": set()}) == []


def test_the_top_level_holds_packages_and_a_handful_of_modules():
    modules = sorted(p.name for p in (ROOT / "hil").glob("*.py"))
    assert modules == ["__init__.py", "__main__.py", "errors.py"], modules
    plugin = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "hil" / "plugin").glob("*.py")}
    assert max(plugin.values()) <= 400, f"a plugin file over 400 lines: {plugin}"
