""".gitignore covers every board's built images and generated keys, wherever its bench file puts them - not
just vendor B's folder (issue 19)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hil.bench.config import BenchConfig, load_bench
from hil.images.catalogue import catalogue_of

ROOT = Path(__file__).resolve().parents[1]
BENCHES = sorted((ROOT / "benches").glob("*.yaml")) + sorted((ROOT / "benches/examples").glob("*.yaml"))


def generated_files(cfg: BenchConfig) -> list[Path]:
    """Every file a run on this bench may write into the repository: builds, build records, keys, packages,
    the catalogue's prebuilt images, the prebuild key, the virtual flash."""
    images = cfg.images
    out = [images.build_dir / "1.1.0.bin", images.build_dir / "1.1.0.dumpinfo.txt", images.build_dir / "manifest.json",
           images.build_dir / ".build.lock", images.build_dir / "packages/winter-north.prf",
           images.keys_dir / "dev-ecdsa-p256.pem", images.keys_dir / "untrusted-ecdsa-p256.pem",
           images.keys_dir / ".keygen.lock"]
    for entry in (Path(v) for v in catalogue_of(cfg).values() if v.endswith(".bin")):
        # a prebuilt image is built where the catalogue puts it, with its build record beside it
        out += [entry, entry.with_suffix(".dumpinfo.txt"), entry.parent / "manifest.json", entry.parent / ".build.lock"]
    if images.prebuild is not None:
        key = Path(images.prebuild.key)
        out.append(key if key.is_absolute() else images.keys_dir / f"{key}.pem")
    if images.signing_key is not None:
        out.append(images.signing_key)
    if cfg.sim is not None:
        out.append(cfg.sim.flash_file)
    return [p for p in out if ROOT in p.resolve().parents]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
@pytest.mark.parametrize("bench", BENCHES, ids=[b.stem for b in BENCHES])
def test_every_generated_file_of_a_bench_is_ignored(bench):
    paths = [str(p.resolve().relative_to(ROOT)) for p in generated_files(load_bench(bench))]
    assert paths, f"{bench.name}: no generated file inside the repository to check"
    proc = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, input="\n".join(paths) + "\n",
                          capture_output=True, text=True, timeout=60, check=False)
    ignored = set(proc.stdout.split())
    assert not set(paths) - ignored, f"{bench.name}: generated but not ignored: {sorted(set(paths) - ignored)}"


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_a_new_boards_files_are_ignored_wherever_its_bench_puts_them():
    """A board nobody listed in .gitignore: its prebuilt images beside its bench file, its own keys folder."""
    paths = ["firmware_images/newboard/1.1.0.bin", "benches/newboard/images/1.0.0.bin", "benches/newboard/keys/release.pem",
             "benches/newboard/build/manifest.json", "benches/newboard/build/1.1.0.dumpinfo.txt",
             "benches/newboard/images/1.1.0.hex", "benches/newboard/images/1.1.0.s19",
             "benches/newboard/build/packages/summer.prf", "benches/newboard/images/manifest.json",
             "benches/newboard/images/1.0.0.dumpinfo.txt", "benches/newboard/images/.build.lock"]
    proc = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, input="\n".join(paths) + "\n",
                          capture_output=True, text=True, timeout=60, check=False)
    assert not set(paths) - set(proc.stdout.split()), sorted(set(paths) - set(proc.stdout.split()))
