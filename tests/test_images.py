"""Firmware images: recipes build and sign with imgtool; our verifier agrees with `imgtool verify`;
every mutation and every policy check yields its Reason; payloads round-trip; bad recipes say why."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from hil.bench import contract
from hil.bench.config import load_bench
from hil.bench.contract import Reason
from hil.errors import BenchConfigError, ImageBuildError, ImageError
from hil.images import mutate
from hil.images.build import build_all, build_image, load_image, read_manifest
from hil.cli.images import images as images_cli
from hil.images.keys import ensure_dev_keys
from hil.images.mcuboot import (
    TLV_ECDSA_SIG,
    TLV_ED25519,
    TrustedKey,
    image_extent,
    load_trusted_keys,
    parse_image,
    verify_image,
)
from hil.images.payload import FirmwareDescriptor, PayloadError, decode_payload, encode_payload
from hil.images.recipes import Recipe, load_recipe, load_recipes

from bench_ports import private_bench_data, write_bench

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "firmware_images" / "recipes"
IMGTOOL = [sys.executable, "-m", "imgtool.main"]
SLOT = 131072
HW = "BMS-HW-A2"
REQUIRED = ["1.0.0", "1.1.0", "2.0.0", "1.1.0-selftest-fail", "1.1.0-crash-at-boot", "1.1.0-hang", "1.2.0-large",
            "1.3.0-seccnt-2", "1.1.0-timing-overrun", "3.0.0-needs-config-v3"]
ALL = sorted(p.stem for p in RECIPES.glob("*.yaml"))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="module")
def keys(work: Path) -> dict[str, Path]:
    return ensure_dev_keys(work / "keys")


@pytest.fixture(scope="module")
def built(work: Path, keys: dict[str, Path]) -> dict[str, Path]:
    return build_all(RECIPES, work / "keys", work / "build", hardware=HW)


@pytest.fixture(scope="module")
def trusted(keys: dict[str, Path]) -> list[TrustedKey]:
    return load_trusted_keys([keys["dev-ecdsa-p256"], keys["dev-ed25519"]])


@pytest.fixture(scope="module")
def recipes() -> dict[str, Recipe]:
    return load_recipes(RECIPES)


def _imgtool_verify(image: bytes, key: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    path = tmp / f"img-{hashlib.sha256(image).hexdigest()[:12]}.bin"
    path.write_bytes(image)
    return subprocess.run(IMGTOOL + ["verify", "-k", str(key), str(path)], capture_output=True, text=True, timeout=30)


def _reason(data: bytes, trusted: list[TrustedKey], **kw: object) -> Reason:
    with pytest.raises(ImageError) as exc:
        verify_image(data, trusted, **kw)  # type: ignore[arg-type]
    return Reason(exc.value.reason)


# --------------------------------------------------------------------------- builds
def test_required_recipes_exist() -> None:
    missing = set(REQUIRED) - set(ALL)
    assert not missing, f"recipes missing: {sorted(missing)}"


@pytest.mark.parametrize("name", ALL)
def test_recipe_build_passes_imgtool_and_our_verifier(name: str, built: dict[str, Path], recipes: dict[str, Recipe],
                                                      keys: dict[str, Path], trusted: list[TrustedKey],
                                                      tmp_path: Path) -> None:
    recipe = recipes[name]
    data = built[name].read_bytes()
    proc = _imgtool_verify(data, keys[recipe.key], tmp_path)
    assert proc.returncode == 0, f"imgtool verify {name}: {proc.stdout}{proc.stderr}"
    assert f"Image version: {recipe.version}+0" in proc.stdout
    img = verify_image(data, trusted, hardware_id=recipe.hardware_id or HW, slot_size=SLOT)
    assert img.version_str == recipe.version and img.header.version[3] == 0
    assert img.security_counter == recipe.security_counter
    assert img.hardware_id == (recipe.hardware_id or HW)
    assert img.config_compat == recipe.config_compat
    assert img.total_size == len(data) and img.header.img_size == recipe.code_size
    # imgtool puts --custom-tlv values in the protected (hashed, signed) area.
    assert {contract.TLV_HARDWARE_ID, contract.TLV_CONFIG_COMPAT, 0x50} <= img.protected_tlvs.keys()
    assert not {contract.TLV_HARDWARE_ID, contract.TLV_CONFIG_COMPAT, 0x50} & img.tlvs.keys()
    # imgtool's image digest (printed by verify) is the SHA256 TLV we checked.
    assert img.sha256 is not None and img.sha256.hex() in proc.stdout
    assert decode_payload(img.payload) == recipe.for_hardware(HW).descriptor()
    assert (built[name].parent / f"{name}.dumpinfo.txt").read_text().count("SEC_CNT") == 1


def test_both_key_types_are_used(built: dict[str, Path]) -> None:
    assert TLV_ECDSA_SIG in parse_image(built["1.1.0"].read_bytes()).tlvs
    assert TLV_ED25519 in parse_image(built["2.0.0"].read_bytes()).tlvs


def test_manifest_records_every_build(built: dict[str, Path], work: Path) -> None:
    manifest = read_manifest(work / "build")
    assert set(manifest) == set(ALL)
    for name, path in built.items():
        assert manifest[name]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert manifest[name]["command"].startswith("imgtool sign --pad-header -H 0x200 --align 8 -S 0x20000")


def test_build_is_cached_and_redone_on_change(built: dict[str, Path], recipes: dict[str, Recipe], work: Path) -> None:
    out = work / "build"
    path = built["1.0.0"]
    stamp = path.stat().st_mtime_ns
    assert build_image(recipes["1.0.0"], work / "keys", out, hardware=HW) == path
    assert path.stat().st_mtime_ns == stamp, "an unchanged recipe was rebuilt"
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")  # tampered build on disk
    build_image(recipes["1.0.0"], work / "keys", out, hardware=HW)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == read_manifest(out)["1.0.0"]["sha256"]
    changed = recipes["1.0.0"].model_copy(update={"build": "changed"})
    build_image(changed, work / "keys", out, hardware=HW)
    assert decode_payload(parse_image(path.read_bytes()).payload).build == "changed"
    build_image(recipes["1.0.0"], work / "keys", out, hardware=HW)  # leave the module's build as it was


def test_load_image_builds_on_demand_for_a_bench(tmp_path: Path, keys: dict[str, Path]) -> None:
    cfg = load_bench(REPO / "benches" / "sim.yaml")
    images_cfg = cfg.images.model_copy(update={"build_dir": tmp_path / "b", "keys_dir": keys["dev-ed25519"].parent})
    cfg = cfg.model_copy(update={"images": images_cfg})
    data = load_image("1.1.0", cfg)
    assert parse_image(data).version_str == "1.1.0"
    assert load_image(tmp_path / "b" / "1.1.0.bin", cfg) == data
    with pytest.raises(ImageBuildError, match="no recipe 'nope'.*available: .*1.0.0"):
        load_image("nope", cfg)


# --------------------------------------------------------------------------- verifier vs imgtool
@pytest.mark.parametrize("region", ["payload", "header", "protected_tlv"])
def test_flipped_hashed_byte_fails_imgtool_and_ours(region: str, built: dict[str, Path], keys: dict[str, Path],
                                                    trusted: list[TrustedKey], tmp_path: Path) -> None:
    bad = mutate.flip_bit(built["1.1.0"].read_bytes(), region, bit_index=8 * 7 + 3)  # type: ignore[arg-type]
    proc = _imgtool_verify(bad, keys["dev-ecdsa-p256"], tmp_path)
    assert proc.returncode != 0 and "hash" in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr
    assert _reason(bad, trusted) is Reason.HASH_MISMATCH


def test_foreign_key_fails_imgtool_and_ours(built: dict[str, Path], keys: dict[str, Path], tmp_path: Path) -> None:
    data = built["1.1.0"].read_bytes()
    assert _imgtool_verify(data, keys["untrusted-ecdsa-p256"], tmp_path).returncode != 0
    assert _reason(data, load_trusted_keys([keys["untrusted-ecdsa-p256"]])) is Reason.UNKNOWN_KEY


def test_padded_ecdsa_signature_is_accepted(keys: dict[str, Path], trusted: list[TrustedKey], tmp_path: Path) -> None:
    """imgtool --pad-sig pads the DER signature to 72 bytes; MCUboot (and we) strip it by the DER length."""
    raw, out = tmp_path / "fw.raw", tmp_path / "fw.bin"
    raw.write_bytes(encode_payload(FirmwareDescriptor(version="1.1.0", build="x", hardware=HW), 4096))
    subprocess.run(IMGTOOL + ["sign", "--pad-header", "-H", "0x200", "--align", "8", "-S", "0x20000", "-v", "1.1.0",
                              "--pad-sig", "-k", str(keys["dev-ecdsa-p256"]), str(raw), str(out)],
                   check=True, capture_output=True, timeout=30)
    img = verify_image(out.read_bytes(), trusted)
    assert len(img.tlvs[TLV_ECDSA_SIG]) == 72
    assert img.security_counter is None and img.hardware_id is None
    assert _reason(out.read_bytes(), trusted, hardware_id=HW) is Reason.WRONG_HARDWARE  # TLV missing


# --------------------------------------------------------------------------- mutations
MUTATIONS = [
    ("flip-header", lambda d, k: mutate.flip_bit(d, "header"), Reason.HASH_MISMATCH),
    ("flip-payload", lambda d, k: mutate.flip_bit(d, "payload"), Reason.HASH_MISMATCH),
    ("flip-protected", lambda d, k: mutate.flip_bit(d, "protected_tlv"), Reason.HASH_MISMATCH),
    ("flip-tlv", lambda d, k: mutate.flip_bit(d, "tlv"), Reason.HASH_MISMATCH),
    ("flip-signature", lambda d, k: mutate.flip_bit(d, "signature"), Reason.SIGNATURE_INVALID),
    ("flip-signature-deep", lambda d, k: mutate.flip_bit(d, "signature", 8 * 40 + 5), Reason.SIGNATURE_INVALID),
    ("truncate", lambda d, k: mutate.truncate(d, len(d) - 100), Reason.TRUNCATED),
    ("truncate-payload", lambda d, k: mutate.truncate(d, 0x300), Reason.TRUNCATED),
    ("unsigned", lambda d, k: mutate.strip_signature(d), Reason.UNSIGNED),
    ("wrong-key", lambda d, k: mutate.resign(d, k["untrusted-ecdsa-p256"]), Reason.UNKNOWN_KEY),
    ("wrong-hardware", lambda d, k: mutate.set_hardware_id(d, "BMS-HW-B1", k["dev-ecdsa-p256"]), Reason.WRONG_HARDWARE),
    ("oversize", lambda d, k: mutate.oversize(d, SLOT), Reason.OVERSIZE),
    ("bad-magic", lambda d, k: mutate.bad_magic(d), Reason.BAD_MAGIC),
    ("bad-tlv", lambda d, k: mutate.break_tlv_area(d), Reason.BAD_TLV),
]


@pytest.mark.parametrize("base", ["1.1.0", "2.0.0"])
@pytest.mark.parametrize(("mutation", "expected"), [pytest.param(m, r, id=i) for i, m, r in MUTATIONS])
def test_mutation_yields_its_reason(base: str, mutation, expected: Reason, built: dict[str, Path],  # type: ignore[no-untyped-def]
                                    keys: dict[str, Path], trusted: list[TrustedKey]) -> None:
    original = built[base].read_bytes()
    bad = mutation(original, keys)
    assert bad != original
    assert _reason(bad, trusted, hardware_id=HW, slot_size=SLOT) is expected
    assert verify_image(original, trusted, hardware_id=HW, slot_size=SLOT)  # pure: input untouched


def test_resign_with_a_trusted_key_keeps_metadata(built: dict[str, Path], keys: dict[str, Path],
                                                  trusted: list[TrustedKey]) -> None:
    original = verify_image(built["1.3.0-seccnt-2"].read_bytes(), trusted)
    again = verify_image(mutate.resign(built["1.3.0-seccnt-2"].read_bytes(), keys["dev-ed25519"]), trusted)
    assert (again.header.version, again.security_counter, again.hardware_id, again.config_compat, again.payload) == \
           (original.header.version, original.security_counter, original.hardware_id, original.config_compat,
            original.payload)
    assert TLV_ED25519 in again.tlvs


def test_mutation_arguments_are_checked(built: dict[str, Path]) -> None:
    data = built["1.1.0"].read_bytes()
    with pytest.raises(ValueError, match="accepted: header, payload, protected_tlv, tlv, signature"):
        mutate.flip_bit(data, "trailer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outside region"):
        mutate.flip_bit(data, "signature", 10_000)
    with pytest.raises(ValueError, match="must be 0 <= n"):
        mutate.truncate(data, len(data))


# --------------------------------------------------------------------------- policy checks
def test_policy_checks(built: dict[str, Path], trusted: list[TrustedKey]) -> None:
    img = {n: p.read_bytes() for n, p in built.items()}
    assert _reason(img["1.1.0-wrong-hardware"], trusted, hardware_id=HW) is Reason.WRONG_HARDWARE
    # version: older refused, equal (reinstall) and newer allowed, restore path may go back
    assert _reason(img["0.9.0-downgrade"], trusted, current_version=(1, 0, 0)) is Reason.DOWNGRADE_VERSION
    assert _reason(img["1.1.0"], trusted, current_version=(1, 1, 1)) is Reason.DOWNGRADE_VERSION
    verify_image(img["1.0.0"], trusted, current_version=(1, 0, 0))
    verify_image(img["1.1.0"], trusted, current_version=(1, 0, 0))
    verify_image(img["0.9.0-downgrade"], trusted, current_version=(1, 0, 0), allow_downgrade=True)
    # security counter: missing or lower refused, equal or higher allowed
    assert _reason(img["2.0.0"], trusted, min_security_counter=2) is Reason.DOWNGRADE_SECURITY_COUNTER
    verify_image(img["1.3.0-seccnt-2"], trusted, min_security_counter=2)
    # configuration schema
    assert _reason(img["3.0.0-needs-config-v3"], trusted, config_schema=1) is Reason.CONFIG_INCOMPATIBLE
    assert _reason(img["1.1.0"], trusted, config_schema=2) is Reason.CONFIG_INCOMPATIBLE
    verify_image(img["2.0.0"], trusted, config_schema=1)
    verify_image(img["2.0.0"], trusted, config_schema=2)
    # size
    assert _reason(img["1.2.0-large"], trusted, slot_size=64 * 1024) is Reason.OVERSIZE
    verify_image(img["1.2.0-large"], trusted, slot_size=SLOT)


def test_checks_run_in_the_documented_order(built: dict[str, Path], keys: dict[str, Path],
                                            trusted: list[TrustedKey]) -> None:
    wrong_hw = built["1.1.0-wrong-hardware"].read_bytes()
    everything = dict(hardware_id=HW, min_security_counter=5, current_version=(9, 0, 0), config_schema=7)
    assert _reason(wrong_hw, trusted, **everything) is Reason.WRONG_HARDWARE
    assert _reason(built["1.1.0"].read_bytes(), trusted, **everything) is Reason.DOWNGRADE_SECURITY_COUNTER
    assert _reason(built["1.1.0"].read_bytes(), trusted, current_version=(9, 0, 0), config_schema=7) \
        is Reason.DOWNGRADE_VERSION
    unsigned_and_foreign = mutate.strip_signature(mutate.resign(wrong_hw, keys["untrusted-ecdsa-p256"]))
    assert _reason(unsigned_and_foreign, trusted, **everything) is Reason.UNSIGNED
    truncated_oversize = mutate.truncate(mutate.oversize(wrong_hw, SLOT), SLOT)
    assert _reason(truncated_oversize, trusted, slot_size=SLOT) is Reason.TRUNCATED


def test_messages_say_found_and_expected(built: dict[str, Path], trusted: list[TrustedKey]) -> None:
    with pytest.raises(ImageError, match=r"built for hardware ID 'BMS-HW-B1', this board is 'BMS-HW-A2'"):
        verify_image(built["1.1.0-wrong-hardware"].read_bytes(), trusted, hardware_id=HW)
    with pytest.raises(ImageError, match=r"schema 3\.\.3, stored configuration is schema 1"):
        verify_image(built["3.0.0-needs-config-v3"].read_bytes(), trusted, config_schema=1)
    with pytest.raises(ImageError, match=r"found ffffffff, expected"):
        verify_image(b"\xff" * 4096, trusted)


def test_slot_contents_and_extent(built: dict[str, Path], trusted: list[TrustedKey]) -> None:
    data = built["1.1.0"].read_bytes()
    slot = data + b"\xff" * (SLOT - len(data))
    assert image_extent(slot) == len(data)
    assert verify_image(slot, trusted, slot_size=SLOT).total_size == len(data)
    assert verify_image(bytearray(slot), trusted).payload == parse_image(data).payload
    assert image_extent(b"\xff" * SLOT) is None
    assert image_extent(data[: len(data) - 200]) is None
    assert image_extent(b"") is None
    with pytest.raises(ImageError) as exc:
        parse_image(b"")
    assert exc.value.reason == Reason.BAD_MAGIC


def test_unprotected_metadata_is_not_trusted(built: dict[str, Path], trusted: list[TrustedKey]) -> None:
    """A SEC_CNT smuggled into the unsigned TLV area must not be believed."""
    import struct

    data = bytearray(built["1.1.0"].read_bytes())
    img = parse_image(data)
    tlv_off = img.hashed_size
    magic, tot = struct.unpack_from("<HH", data, tlv_off)
    extra = struct.pack("<HHI", 0x50, 4, 99)
    struct.pack_into("<HH", data, tlv_off, magic, tot + len(extra))
    assert _reason(bytes(data) + extra, trusted) is Reason.BAD_TLV


def test_verify_time_for_the_large_image(built: dict[str, Path], trusted: list[TrustedKey],
                                         record_property: pytest.RecordProperty) -> None:
    data = built["1.2.0-large"].read_bytes()
    slot = data + b"\xff" * (SLOT - len(data))
    verify_image(slot, trusted, slot_size=SLOT)
    n = 300
    start = time.perf_counter()
    for _ in range(n):
        verify_image(slot, trusted, hardware_id=HW, slot_size=SLOT)
    per_call_ms = (time.perf_counter() - start) / n * 1e3
    record_property("verify_image_ms_124KiB", round(per_call_ms, 3))
    print(f"\nverify_image on {len(data)}-byte image in a {SLOT}-byte slot: {per_call_ms:.3f} ms per call")
    assert per_call_ms < 5.0, f"verify_image takes {per_call_ms:.2f} ms; the power-fail sweep needs it well under 5 ms"


# --------------------------------------------------------------------------- payload
def test_payload_roundtrip_and_determinism() -> None:
    desc = FirmwareDescriptor(version="2.0.0", build="b7", hardware=HW, soc_algorithm="coulomb_ocv_v2",
                              extra_messages=["BMS_Balancing"], self_test="fail", selftest_code=0x42, config_schema=2,
                              timing={"exec_ms": 2.5, "jitter_ms": 0.2, "overrun_every": 5, "overrun_ms": 30},
                              rxswin="R156-X")
    payload = encode_payload(desc, 8192)
    assert len(payload) == 8192 and payload.startswith(contract.PAYLOAD_MAGIC)
    assert decode_payload(payload) == desc
    assert encode_payload(desc, 8192) == payload
    other = encode_payload(desc.model_copy(update={"version": "2.0.1"}), 8192)
    assert other[-4096:] != payload[-4096:], "filler must depend on the version"
    assert max(payload.count(bytes([b])) for b in range(256)) < 8192 // 64, "filler should look like code"


@pytest.mark.parametrize(("payload", "match"), [
    (b"\x00" * 64, "payload magic"),
    (contract.PAYLOAD_MAGIC + (1000).to_bytes(4, "little") + b"{}", "runs past"),
    (contract.PAYLOAD_MAGIC + (3).to_bytes(4, "little") + b"{x}", "not UTF-8 JSON"),
    (contract.PAYLOAD_MAGIC + (13).to_bytes(4, "little") + b'{"version":1}', "descriptor invalid"),
])
def test_garbage_payload_raises_payload_error(payload: bytes, match: str) -> None:
    with pytest.raises(PayloadError, match=match):
        decode_payload(payload)


def test_descriptor_too_big_for_code_size() -> None:
    with pytest.raises(PayloadError, match="code_size is only 32"):
        encode_payload(FirmwareDescriptor(version="1.0.0", build="b", hardware=HW), 32)


# --------------------------------------------------------------------------- recipes
def _write(tmp_path: Path, name: str, body: dict[str, object] | str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(body if isinstance(body, str) else yaml.safe_dump(body))
    return path


GOOD = {"version": "1.1.0", "build": "b", "code_size": 4096}


@pytest.mark.parametrize(("body", "match"), [
    ({**GOOD, "colour": "red"}, r"colour: unknown key; accepted here: name, description, version"),
    ({**GOOD, "version": "1.1"}, r"version: got '1.1'"),
    ({**GOOD, "self_test": "explode"}, r"self_test: got 'explode'.*'pass', 'fail', 'crash' or 'hang'"),
    ({**GOOD, "timing": {"exec_ms": 1, "jitter": 2}}, r"timing\.jitter: unknown key; accepted here: exec_ms, jitter_ms"),
    ({**GOOD, "config_compat": [1, 1], "config_schema": 2}, r"config_schema 2 must lie within config_compat \[1, 1\]"),
    ({**GOOD, "self_test": "fail"}, r"needs a nonzero selftest_code"),
    ({**GOOD, "name": "other"}, r"name: got 'other' - must equal the file name"),
    ({"build": "b"}, r"version: required field is missing"),
    ("version: [1.1.0\n", r"not valid YAML"),
    ("- 1\n- 2\n", r"must be a mapping"),
])
def test_bad_recipe_names_file_and_field(tmp_path: Path, body: dict[str, object] | str, match: str) -> None:
    path = _write(tmp_path, "9.9.9-bad", body)
    with pytest.raises(ImageBuildError, match=match) as exc:
        load_recipe(path)
    assert str(path) in str(exc.value)


def test_recipe_unknown_key_name(tmp_path: Path, work: Path, keys: dict[str, Path]) -> None:
    recipe = load_recipe(_write(tmp_path, "1.1.0-k", {**GOOD, "key": "prod-hsm"}))
    with pytest.raises(ImageBuildError, match=r"key 'prod-hsm' not found .*available: dev-ecdsa-p256"):
        build_image(recipe, work / "keys", tmp_path / "out", hardware=HW)


# --------------------------------------------------------------------------- keys
def _ensure(keys_dir: str) -> dict[str, str]:
    return {k: Path(v).read_text() for k, v in ensure_dev_keys(Path(keys_dir)).items()}


def test_key_generation_is_race_free(tmp_path: Path) -> None:
    with ProcessPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(_ensure, [str(tmp_path / "k")] * 4))
    assert all(r == results[0] for r in results), "racing processes saw different keys"
    assert set(results[0]) == {"dev-ecdsa-p256", "dev-ed25519", "untrusted-ecdsa-p256"}
    loaded = load_trusted_keys(sorted((tmp_path / "k").glob("*.pem")))
    assert len({k.keyhash for k in loaded}) == 3
    assert {k.kind for k in loaded} == {"ecdsa-p256", "ed25519"}
    assert not list((tmp_path / "k").glob("*.tmp"))


def test_trusted_key_errors(tmp_path: Path) -> None:
    with pytest.raises(BenchConfigError, match="cannot read"):
        load_trusted_keys([tmp_path / "missing.pem"])
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(BenchConfigError, match="junk.pem: not an unencrypted PEM key"):
        load_trusted_keys([tmp_path / "junk.pem"])


# --------------------------------------------------------------------------- CLI
@pytest.fixture()
def bench_file(tmp_path: Path, keys: dict[str, Path], work: Path) -> Path:
    data = private_bench_data("benches/sim.yaml", tmp_path)
    data["sim"]["trusted_keys"] = [str(keys["dev-ecdsa-p256"]), str(keys["dev-ed25519"])]
    data["images"] = {"recipes": str(RECIPES), "build_dir": str(work / "build"), "keys_dir": str(work / "keys")}
    return write_bench(data, tmp_path / "bench.yaml")


def test_cli_verify_reports_reason(bench_file: Path, built: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(images_cli, ["verify", "--bench", str(bench_file), str(built["1.1.0"])])
    assert ok.exit_code == 0 and "OK" in ok.output, ok.output
    bad = tmp_path / "bad.bin"
    bad.write_bytes(mutate.strip_signature(built["1.1.0"].read_bytes()))
    res = runner.invoke(images_cli, ["verify", "--bench", str(bench_file), str(bad)])
    assert res.exit_code == 1 and "UNSIGNED" in res.output, res.output
    res = runner.invoke(images_cli, ["verify", "--bench", str(bench_file), "1.1.0-wrong-hardware"])
    assert res.exit_code == 1 and "WRONG_HARDWARE" in res.output, res.output
    res = runner.invoke(images_cli, ["verify", "--bench", str(bench_file), "--current-version", "2", "1.1.0"])
    assert res.exit_code == 2 and "accepted: MAJOR.MINOR.REVISION" in res.output, res.output


def test_cli_build_sign_info(bench_file: Path, built: dict[str, Path], tmp_path: Path,
                             trusted: list[TrustedKey]) -> None:
    runner = CliRunner()
    res = runner.invoke(images_cli, ["build", "--bench", str(bench_file), "1.0.0", "nope"])
    assert res.exit_code != 0 and "no recipe 'nope'" in res.output and "available:" in res.output, res.output
    raw = tmp_path / "fw.raw"
    raw.write_bytes(encode_payload(FirmwareDescriptor(version="1.4.0", build="cli", hardware=HW), 2048))
    res = runner.invoke(images_cli, ["sign", "--bench", str(bench_file), "-k", "dev-ed25519", "-v", "1.4.0", "-s", "3",
                                     "--config-compat", "1", "2", str(raw), str(tmp_path / "fw.bin")])
    assert res.exit_code == 0, res.output
    img = verify_image((tmp_path / "fw.bin").read_bytes(), trusted, hardware_id=HW, min_security_counter=3)
    assert (img.version_str, img.config_compat) == ("1.4.0", (1, 2))
    res = runner.invoke(images_cli, ["info", str(tmp_path / "fw.bin")])
    assert res.exit_code == 0 and "SEC_CNT" in res.output and "Protected TLV area" in res.output, res.output
    res = runner.invoke(images_cli, ["sign", "--bench", str(bench_file), "-k", "nokey", "-v", "1.4.0", str(raw),
                                     str(tmp_path / "x.bin")])
    assert res.exit_code != 0 and "key 'nokey' not found" in res.output, res.output


def test_manifest_json_is_valid(work: Path, built: dict[str, Path]) -> None:
    json.loads((work / "build" / "manifest.json").read_text())
