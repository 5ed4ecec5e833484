"""hil/sim is the board, not the tester: it imports only what the contract, the profile, the image
format and the bench description define, never the tester's drivers, flasher, checks or plugin."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: What the virtual board may import from the framework: the contract and the DUT profile (the
#: board's meanings and numbers), the image format (its bootloader verifies images), the bench
#: description it is configured by, the framework's base errors, the bus factory (python-can) and the
#: configuration package format (its board verifies packages like images).
ALLOWED = ("hil.contract", "hil.profile", "hil.images", "hil.config", "hil.errors", "hil.canbus", "hil.sim",
           "hil.seedkeys", "hil.profiles.package")


def _framework_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import inside hil.sim
                found.append((node.lineno, "hil.sim." + (node.module or "")))
            elif node.module == "hil":
                found += [(node.lineno, f"hil.{a.name}") for a in node.names]
            elif node.module:
                found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name == "hil" or name.startswith("hil.")]


def test_sim_imports_only_contract_profile_and_image_format():
    bad = []
    for path in sorted((ROOT / "hil" / "sim").rglob("*.py")):
        for line, name in _framework_imports(path):
            if not any(name == a or name.startswith(a + ".") for a in ALLOWED):
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {name}")
    assert not bad, "hil/sim reaches into the tester:\n" + "\n".join(bad) + f"\nallowed: {', '.join(ALLOWED)}"


def test_the_rule_catches_a_driver_import(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("from hil.drivers.uds import UdsClient\nfrom hil import flasher\nimport hil.plugin\n")
    names = [n for _, n in _framework_imports(f)]
    assert names == ["hil.drivers.uds", "hil.flasher", "hil.plugin"]
    assert not any(any(n == a or n.startswith(a + ".") for a in ALLOWED) for n in names)
