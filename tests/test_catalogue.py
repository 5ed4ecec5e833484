"""The image catalogue: roles map to images, derived variants are re-signed, a missing role is named,
and the fault matrix reports a row whose case lacked an image NOT COVERED with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hil.report import records as report
from hil.bench.config import load_bench
from hil.bench.contract import Reason
from hil.errors import BenchConfigError, ImageError
from hil.images.catalogue import MissingImage, derive
from hil.images.keys import ensure_key
from hil.images.mcuboot import load_trusted_keys, parse_image, verify_image
from hil.plugin import MISSING_ROLE_PREFIX, ImageStore

from bench_ports import private_bench_data, write_bench

ROOT = Path(__file__).resolve().parents[1]


def _bench(tmp_path: Path, images: dict) -> Path:
    data = private_bench_data("benches/sim.yaml", tmp_path)
    data["sim"]["trusted_keys"] = [str(ROOT / "firmware_images/keys/dev-ecdsa-p256.pem")]
    data["images"] = {"recipes": str(ROOT / "firmware_images/recipes"), "build_dir": str(tmp_path / "build"),
                      "keys_dir": str(tmp_path / "keys"), **images}
    return write_bench(data, tmp_path / "bench.yaml")


def test_unknown_role_is_named_with_the_accepted_ones(tmp_path):
    with pytest.raises(BenchConfigError, match=r"images.catalogue: .*unknown image role 'upgrade'; accepted: baseline, update"):
        load_bench(_bench(tmp_path, {"catalogue": {"upgrade": "x.bin"}}))


def test_catalogue_bin_paths_resolve_against_the_bench_file(tmp_path):
    cfg = load_bench(_bench(tmp_path, {"catalogue": {"update": "builds/u.bin", "baseline": "1.0.0"}}))
    assert cfg.images.catalogue == {"update": str(tmp_path / "builds/u.bin"), "baseline": "1.0.0"}


def test_missing_role_names_role_and_reason(tmp_path):
    cfg = load_bench(_bench(tmp_path, {"catalogue": {"update": "1.1.0"}}))
    store = ImageStore(cfg)
    with pytest.raises(MissingImage, match=r"'hang' not available: the bench's images.catalogue has no 'hang'"):
        store.get("hang")
    with pytest.raises(MissingImage, match=r"'older_version'.*no images.signing_key"):
        store.get("older_version")  # derivable, but only with the board's key
    with pytest.raises(pytest.skip.Exception, match=MISSING_ROLE_PREFIX + "hang"):
        store["hang"]


def test_derived_variants_are_signed_as_the_role_says(tmp_path):
    key = ensure_key("board-dev", tmp_path / "keys")
    cfg = load_bench(_bench(tmp_path, {"catalogue": {"update": "1.1.0"}, "signing_key": str(key)}))
    update = ImageStore(cfg)["update"]
    # the update is signed with the bench's own development key (images.keys_dir); the board trusts it
    # and the board key, not the unknown one
    trusted = load_trusted_keys([tmp_path / "keys/dev-ecdsa-p256.pem", key])
    higher = derive("higher_security_counter", update, cfg)
    assert parse_image(higher).security_counter == (parse_image(update).security_counter or 0) + 1
    verify_image(higher, trusted)
    older = derive("older_version", update, cfg)
    assert parse_image(older).version_str == "0.0.1"
    verify_image(older, trusted)
    unknown = derive("unknown_key", update, cfg)
    assert parse_image(unknown).payload == parse_image(update).payload
    with pytest.raises(ImageError) as rejected:
        verify_image(unknown, trusted)
    assert rejected.value.reason == Reason.UNKNOWN_KEY  # signed by a key the board does not trust


def test_signing_key_from_the_environment(tmp_path, monkeypatch):
    cfg = load_bench(_bench(tmp_path, {"catalogue": {"update": "1.1.0"}, "signing_key_env": "HIL_TEST_SIGNING_KEY"}))
    monkeypatch.delenv("HIL_TEST_SIGNING_KEY", raising=False)
    with pytest.raises(MissingImage, match="HIL_TEST_SIGNING_KEY is not set"):
        ImageStore(cfg).get("higher_security_counter")
    monkeypatch.setenv("HIL_TEST_SIGNING_KEY", str(ensure_key("board-dev", tmp_path / "keys")))
    assert parse_image(ImageStore(cfg).get("higher_security_counter")).security_counter == 2


def test_prebuilt_bins_are_made_with_the_bench_key(tmp_path):
    cfg = load_bench(_bench(tmp_path, {"catalogue": {"update": "out/1.1.0.bin"}, "prebuild": {"key": "vendor-x"}}))
    data = ImageStore(cfg)["update"]
    assert (tmp_path / "out/1.1.0.bin").is_file()
    verify_image(data, load_trusted_keys([tmp_path / "keys/vendor-x.pem"]))


def test_a_row_with_a_missing_image_is_not_covered_never_pass(tmp_path):
    rec = report.TestRecord
    records = [rec(nodeid="t::a", name="a", outcome="passed", duration_s=1.0, fault_rows=[9]),
               rec(nodeid="t::b", name="b", outcome="skipped", duration_s=0.0, fault_rows=[9],
                   reason=MISSING_ROLE_PREFIX + "hang: the bench's images.catalogue has no 'hang'"),
               rec(nodeid="t::c", name="c", outcome="passed", duration_s=1.0, fault_rows=[5]),
               rec(nodeid="t::d", name="d", outcome="skipped", duration_s=0.0, fault_rows=[5],
                   reason="sim_only: bench x is real")]
    md, js = report.write_fault_matrix(records, tmp_path)
    rows = {r["row"]: r for r in json.loads(js.read_text())["rows"]}
    assert rows[9]["verdict"] == report.NOT_COVERED
    assert rows[9]["not_covered_because"] == [MISSING_ROLE_PREFIX + "hang: the bench's images.catalogue has no 'hang'"]
    assert rows[5]["verdict"] == report.PASS  # a sim-only skip is not a gap of the board
    assert "image role missing: hang" in md.read_text()
