"""docs/porting.md is executed (issue 19): its `sh test` blocks are run, in order, in a fresh copy of the
repository, and port the example board ACME BMS-7 - 29-bit ids, its own DBC, its own seed-to-key module
beside the bench file, its own hardware number - from its supplier's files to its first green update case.
The document cannot drift from the code: a command that stops working fails here.

Also: the guide's role table is `hil/images/roles.py`'s, its `hil doctor` table is `hil/cli/doctor.py`'s,
and the supplier's PDX it imports is what tests/acme_supplier.py makes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs/porting.md"
#: The info string that marks a block for this test (a plain ```sh block is shown, not run).
MARK = "sh test"
BLOCK_TIMEOUT_S = 900


def guide_blocks(text: str) -> list[str]:
    """The shell blocks of the guide marked for the test, in document order."""
    return [m.group(1) for m in re.finditer(r"^```" + re.escape(MARK) + r"\n(.*?)^```\s*$", text, re.M | re.S)]


def _repository_files() -> list[Path]:
    """The repository as a user has it: tracked and new files, nothing ignored (no venv, builds, keys, flash)."""
    if shutil.which("git") and (ROOT / ".git").exists():
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True, timeout=60).stdout
        return [Path(p.decode()) for p in out.split(b"\0") if p and (ROOT / p.decode()).is_file()]
    skip = {".git", ".venv", "node_modules", ".hil", "reports", "build", "keys", "__pycache__"}
    return [p.relative_to(ROOT) for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


def _git(copy: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@localhost"}
    return subprocess.run(["git", *args], cwd=copy, env=env, capture_output=True, text=True, check=True,
                          timeout=120).stdout


def test_the_guide_has_the_blocks_of_a_whole_port():
    blocks = guide_blocks(GUIDE.read_text())
    joined = "\n".join(blocks)
    for step in ("hil profile import", "--extra", "cat > benches/acme/bench.yaml", "hil doctor --bench",
                 "pytest testcases/test_update.py -k test_update_succeeds_and_is_confirmed"):
        assert step in joined, f"docs/porting.md has no `{MARK}` block with {step!r}"


def test_the_guides_role_table_is_roles_py():
    from hil.images.roles import ROLES

    text = GUIDE.read_text()
    section = text[text.index("## 5. The image catalogue"):text.index("## 6.")]
    listed = re.findall(r"^\| `([a-z_]+)` \|", section, re.M)
    assert listed == list(ROLES), f"docs/porting.md role table {listed} != hil/images/roles.py {list(ROLES)}"


def test_the_guides_doctor_table_is_doctors():
    source = (ROOT / "hil/cli/doctor.py").read_text()
    checks = [re.split(r"[ {]0x|\{", name)[0].strip() for name in re.findall(r'_run\(f?"([^"]+)"', source)]
    text = GUIDE.read_text()
    section = text[text.index("## 8. What `hil doctor` checks"):text.index("## 9.")]
    listed = re.findall(r"^\| `([^`]+)` \|", section, re.M)
    assert sorted(set(checks)) == sorted(listed), f"hil doctor checks {checks}, docs/porting.md lists {listed}"


def test_the_supplier_pdx_is_the_one_the_example_makes(tmp_path):
    import odxtools

    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import acme_supplier
    finally:
        sys.path.remove(str(ROOT / "tests"))
    shipped = acme_supplier.PDX
    again = acme_supplier.write(tmp_path / "acme-bms.pdx")
    written_by = zipfile.ZipFile(shipped).read("acme_bms.odx-d").decode()
    if f"odxtools {odxtools.__version__} " in written_by:
        assert again.read_bytes() == shipped.read_bytes(), "docs/porting/acme/acme-bms.pdx is stale: " \
                                                           ".venv/bin/python tests/acme_supplier.py"
    from hil.odx.importer import diagnostic_part, import_odx

    mapping = {"FLASH_LAYOUT": "RDBI_FlashMap", "ACTIVATE_UPDATE": "RC_SwitchToNewSoftware"}
    assert diagnostic_part(import_odx(shipped, mapping=mapping).profile) == \
        diagnostic_part(acme_supplier.acme_profile())


@pytest.mark.integration
def test_the_guide_ports_a_new_board_to_its_first_green_update_case(tmp_path):
    """Every `sh test` block of docs/porting.md, run as written in a copy of the repository."""
    copy = tmp_path / "repo"
    for rel in _repository_files():
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, copy / rel)
    versioned = shutil.which("git") is not None
    if versioned:
        _git(copy, "init", "-q")
        _git(copy, "add", "-A")
        _git(copy, "commit", "-qm", "the repository as cloned")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HIL_LOCK_DIR"] = str(tmp_path / "locks")
    env["COLUMNS"] = "200"  # hil doctor's table unwrapped
    outputs = []
    for i, block in enumerate(guide_blocks(GUIDE.read_text()), 1):
        try:
            proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=copy, env=env, capture_output=True,
                                  text=True, timeout=BLOCK_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"docs/porting.md block {i} did not finish in {BLOCK_TIMEOUT_S} s:\n{block}\n"
                        f"output so far:\n{exc.stdout!r}\n{exc.stderr!r}")
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, (f"docs/porting.md block {i} exited {proc.returncode}:\n{block}\n--- last output:\n"
                                      + "\n".join(output.splitlines()[-40:]))
        outputs.append(output)
    first_import, second_import, _, doctor, first_case = outputs
    assert "to fill in (12):" in first_import and "dids.FLASH_LAYOUT" in first_import
    assert "IOControl_CoolingFan" in first_import, "the supplier's own services are listed as not mapped"
    assert "profile acme-bms loads" in second_import
    assert "bench healthy" in doctor and "unlocked with acme_seedkey:key_from_seed" in doctor
    assert re.search(r"\b1 passed\b", first_case), first_case[-2000:]
    profile = (copy / "benches/acme/acme-bms.yaml").read_text()
    assert "phys_request_id: 0x18DA40F1" in profile and "extended_ids: true" in profile
    if versioned:  # what the port leaves to commit: its text files, no image, key, build record or flash
        left = sorted(line[3:] for line in _git(copy, "status", "--porcelain", "--untracked-files=all").splitlines())
        assert left == ["benches/acme/acme-bms.dbc", "benches/acme/acme-bms.extra.yaml", "benches/acme/acme-bms.yaml",
                        "benches/acme/acme_seedkey.py", "benches/acme/bench.yaml"], left
