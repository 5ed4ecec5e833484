"""ODX and the DUT profile (issue 19): `hil profile export` writes a PDX odxtools reads back, `hil profile import`
gives back each shipped profile's diagnostic part from it, and on an ODX with services the profile cannot
express it lists them; names that do not match are named with their candidates and settled with --map."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from hil.bench.dut_profile import DutProfile, load_profile
from hil.cli.main import main
from hil.errors import BenchConfigError
from hil.odx.export import OdxBuilder, write_pdx
from hil.odx.importer import DIAGNOSTIC_FIELDS, NOT_IN_ODX, TODO, diagnostic_part, extra_part, import_odx, render
from hil.odx.layouts import Field, check_against_contract

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted((ROOT / "benches/profiles").glob("*.yaml"))
IDS = [p.stem for p in PROFILES]


def _not_diagnostic(profile: DutProfile) -> dict[str, Any]:
    """What ODX does not carry: the --extra a porter writes once."""
    return extra_part(profile)


def test_the_record_layouts_agree_with_the_contract():
    assert check_against_contract() == []


@pytest.mark.parametrize("profile_file", PROFILES, ids=IDS)
def test_import_of_the_export_gives_back_the_diagnostic_part(tmp_path, profile_file):
    profile = load_profile(profile_file)
    pdx = write_pdx(profile, tmp_path / "board.pdx")
    imported = import_odx(pdx, dbc=profile.can.dbc, output=tmp_path / "draft.yaml")
    assert diagnostic_part(imported.profile) == diagnostic_part(profile)
    assert imported.not_mapped == []
    assert all(_not_in_odx(path) for path in imported.todo), imported.todo  # only what ODX has no place for


def _not_in_odx(path: str) -> bool:
    section, _, rest = path.partition(".")
    fields = NOT_IN_ODX.get(section, ())
    return fields is None or rest.split(".")[0] in (fields or ()) or section == "update" and rest == "blocks"


def test_every_profile_field_is_odx_s_or_named_as_not():
    """A new profile field is either carried by ODX (DIAGNOSTIC_FIELDS) or named as what ODX cannot say (NOT_IN_ODX):
    then the draft and the --extra file together give every profile back (the round trip below)."""
    for name, info in DutProfile.model_fields.items():
        if name == "source":
            continue
        assert name in DIAGNOSTIC_FIELDS or name in NOT_IN_ODX, f"profile field {name}: neither ODX's nor NOT_IN_ODX"
        sub = getattr(info.annotation, "model_fields", None)
        if sub is None or name in ("update",):  # update: split by family (odx_update_fields / extra_part)
            continue
        ours, theirs = DIAGNOSTIC_FIELDS.get(name, ()), NOT_IN_ODX.get(name, ())
        for field in sub:
            assert ours is None or theirs is None or field in (ours or ()) + (theirs or ()) or \
                (name, field) == ("can", "dbc"), f"profile field {name}.{field}: neither ODX's nor NOT_IN_ODX"


def _import_of(profile: DutProfile, tmp_path: Path, extra_services: Any = None) -> Any:
    return import_odx(write_pdx(profile, tmp_path / "x.pdx", extra_services))


def test_the_update_family_is_inferred_and_only_its_roles_are_demanded(tmp_path):
    fbl = _import_of(load_profile(ROOT / "benches/profiles/fbl.yaml"), tmp_path)
    said = "\n".join(fbl.mapped)
    assert "update family: flash_bootloader, inferred from routine CHECK_MEMORY (RoutineControl_Start_CheckMemory); " \
           "DID FINGERPRINT (ReadDataByIdentifier_Fingerprint); ERASE_MEMORY with addressAndLengthFormatIdentifier " \
           "0x44, address and size (RoutineControl_Start_EraseMemory)" in said, said
    assert "ACTIVATE_UPDATE" not in fbl.profile["routines"] and "routines.ACTIVATE_UPDATE" not in fbl.todo
    assert "encodings.activation_mode" not in fbl.todo  # no record of this family carries it
    assert fbl.profile["update"]["blocks"] == TODO and "ODX does not describe" in fbl.todo["update.blocks"]
    default = _import_of(DutProfile(), tmp_path)
    assert "update family: mcuboot, inferred from routine ACTIVATE_UPDATE" in "\n".join(default.mapped)
    assert not {"CHECK_MEMORY", "FINGERPRINT"} & (set(default.profile["routines"]) | set(default.profile["dids"]))
    assert not [p for p in default.todo if "CHECK_MEMORY" in p or "FINGERPRINT" in p or p.startswith("update.")]


@pytest.mark.parametrize("alfid, fingerprint", [(0x24, 20), (0x11, 4), (0x44, 64)])
def test_the_flash_bootloaders_erase_format_and_fingerprint_length_round_trip(tmp_path, alfid, fingerprint):
    data = load_profile(ROOT / "benches/profiles/fbl.yaml").model_dump()
    data["update"].update(address_length_format=alfid, fingerprint_length=fingerprint)
    profile = DutProfile.model_validate(data)
    imported = _import_of(profile, tmp_path)
    assert imported.profile["update"]["address_length_format"] == alfid
    assert imported.profile["update"]["fingerprint_length"] == fingerprint
    assert diagnostic_part(imported.profile) == diagnostic_part(profile)


def test_an_odx_with_signs_of_two_families_leaves_the_family_to_fill_in(tmp_path):
    def check_memory_too(b: OdxBuilder) -> None:
        from odxtools.uds import UDSSID as SID, positive_response_id as pos

        b.service("RoutineControl_Start_CheckMemory", "ROUTINE",
                  [b.const("SID_RQ", SID.RoutineControl, 0), b.const("RoutineControlType", 1, 1),
                   b.const("RoutineIdentifier", 0x0202, 2, 16)],
                  [b.const("SID_PR", pos(SID.RoutineControl), 0), b.matching("RoutineControlType", 1, 1)])

    imported = _import_of(DutProfile(), tmp_path, check_memory_too)
    assert imported.profile["update"]["family"] == TODO
    why = imported.todo["update.family"]
    assert "mcuboot: routine ACTIVATE_UPDATE" in why and "flash_bootloader: routine CHECK_MEMORY" in why, why
    assert "accepted: mcuboot, flash_bootloader" in why


def test_an_odx_without_a_sign_of_its_family_keeps_the_default_to_check(tmp_path):
    def no_erase_no_activation(b: OdxBuilder) -> None:
        b.services[:] = [s for s in b.services if s.short_name not in ("RoutineControl_Start_EraseMemory",
                                                                        "RoutineControl_Start_ActivateUpdate")]

    imported = _import_of(DutProfile(), tmp_path, no_erase_no_activation)
    assert imported.profile["update"]["family"] == "mcuboot"
    assert "nothing in the ODX tells the update family" in imported.check["update.family"]
    assert "routines.ERASE_MEMORY" in imported.todo and "routines.CHECK_MEMORY" not in imported.todo


def test_an_erase_record_of_neither_family_is_listed(tmp_path):
    def two_byte_erase_record(b: OdxBuilder) -> None:
        from odxtools.nameditemlist import NamedItemList

        u16 = b.dop(Field("u16", "uint", 16), DutProfile())
        for request in b.requests:
            if request.short_name == "RQ_RoutineControl_Start_EraseMemory":
                request.parameters = NamedItemList([*request.parameters, b.value("Bank", u16, 4)])

    imported = _import_of(DutProfile(), tmp_path, two_byte_erase_record)
    assert any(m.startswith("routines.ERASE_MEMORY (RoutineControl_Start_EraseMemory): the option record has Bank at "
                            "byte 4 (2 byte(s)); the framework sends none (mcuboot) or addressAndLengthFormatIdentifier")
               for m in imported.not_mapped), imported.not_mapped


@pytest.mark.parametrize("profile_file", PROFILES, ids=IDS)
def test_the_draft_with_what_odx_cannot_say_is_the_profile(tmp_path, profile_file):
    """The draft YAML, with the porter's --extra, loads as the very profile that was exported."""
    profile = load_profile(profile_file)
    pdx = write_pdx(profile, tmp_path / "board.pdx")
    out = tmp_path / "profiles/board.yaml"
    imported = import_odx(pdx, dbc=profile.can.dbc, output=out, extra=_not_diagnostic(profile))
    assert imported.complete(), imported.todo
    out.parent.mkdir()
    out.write_text(render(imported))
    again = load_profile(out)
    assert again.model_dump(exclude={"source"}) == profile.model_dump(exclude={"source"})


@pytest.mark.parametrize("profile_file", PROFILES, ids=IDS)
def test_the_shipped_pdx_is_the_profiles(tmp_path, profile_file):
    """benches/profiles/<name>.pdx (what a board ships for a tester) says what its profile says, byte for byte."""
    shipped = profile_file.with_suffix(".pdx")
    profile = load_profile(profile_file)
    assert diagnostic_part(import_odx(shipped, dbc=profile.can.dbc).profile) == diagnostic_part(profile)
    import zipfile

    import odxtools

    written_by = zipfile.ZipFile(shipped).read(f"{profile.name.replace('-', '_')}.odx-d").decode()
    if f"odxtools {odxtools.__version__} " in written_by:  # another odxtools may write other (equivalent) XML
        assert write_pdx(profile, tmp_path / "again.pdx").read_bytes() == shipped.read_bytes(), \
            f"{shipped.name} is stale: hil profile export {profile_file.relative_to(ROOT)}"


def test_29_bit_identifiers_round_trip(tmp_path):
    data = load_profile(ROOT / "benches/profiles/vendor-b.yaml").model_dump()
    data["uds"].update(phys_request_id=0x18DA42F1, phys_response_id=0x18DAF142, functional_request_id=0x18DB33F1,
                       extended_ids=True, padding=None)
    profile = DutProfile.model_validate(data)
    imported = import_odx(write_pdx(profile, tmp_path / "x.pdx"))
    assert diagnostic_part(imported.profile)["uds"] == diagnostic_part(profile)["uds"]


# ------------------------------------------------------------------------------ a vendor's ODX
def _vendor_services(b: OdxBuilder) -> None:
    """What a supplier's ODX has besides the framework's roles, and names of its own."""
    from odxtools.uds import UDSSID as SID, positive_response_id as pos

    u8 = b.dop(Field("u8", "uint", 8), DutProfile())
    b.service("IOControl_CoolingFan", "IOCONTROL",
              [b.const("SID_RQ", SID.InputOutputControlByIdentifier, 0), b.const("DataIdentifier", 0x5001, 1, 16),
               b.const("ControlParameter", 3, 3), b.value("Duty", u8, 4)],
              [b.const("SID_PR", pos(SID.InputOutputControlByIdentifier), 0), b.matching("DataIdentifier", 1, 2)])
    b.service("RoutineControl_Start_CellBalancingTest", "ROUTINE",
              [b.const("SID_RQ", SID.RoutineControl, 0), b.const("RoutineControlType", 1, 1),
               b.const("RoutineIdentifier", 0x0210, 2, 16)],
              [b.const("SID_PR", pos(SID.RoutineControl), 0), b.matching("RoutineControlType", 1, 1)])
    b.service("RoutineControl_Stop_EraseMemory", "ROUTINE",
              [b.const("SID_RQ", SID.RoutineControl, 0), b.const("RoutineControlType", 2, 1),
               b.const("RoutineIdentifier", 0x0201, 2, 16)],
              [b.const("SID_PR", pos(SID.RoutineControl), 0), b.matching("RoutineControlType", 1, 1)])
    b.service("DiagnosticSessionControl_EndOfLine", "SESSION",
              [b.const("SID_RQ", SID.DiagnosticSessionControl, 0), b.const("SessionType", 0x60, 1)],
              [b.const("SID_PR", pos(SID.DiagnosticSessionControl), 0), b.matching("SessionType", 1, 1)])
    b.service("ReadDataByIdentifier_MaxCellTemperature", "CURRENTDATA",
              [b.const("SID_RQ", SID.ReadDataByIdentifier, 0), b.const("DataIdentifier", 0x2001, 1, 16)],
              [b.const("SID_PR", pos(SID.ReadDataByIdentifier), 0), b.matching("DataIdentifier", 1, 2),
               b.value("Temperature", u8, 3)])
    b.service("Vendor_Flip", "FUNCTION", [b.const("SID_RQ", 0xBA, 0)], [b.const("SID_PR", 0xFA, 0)])
    for svc in b.services:  # the supplier's own names
        if svc.short_name == "ReadDataByIdentifier_FlashLayout":
            svc.short_name = "RDBI_FlashMap"


@pytest.fixture(scope="module")
def vendor_pdx(tmp_path_factory) -> Path:
    return write_pdx(load_profile(ROOT / "benches/profiles/vendor-b.yaml"),
                     tmp_path_factory.mktemp("odx") / "vendor.pdx", _vendor_services)


def test_services_the_profile_cannot_express_are_listed(vendor_pdx):
    imported = import_odx(vendor_pdx)
    listed = "\n".join(imported.not_mapped)
    for expected in ("IOControl_CoolingFan (SID 0x2F InputOutputControlByIdentifier): the profile has no place",
                     "RoutineControl_Start_CellBalancingTest (SID 0x31 RoutineControl): routine 0x0210 has no framework "
                     "role",
                     "RoutineControl_Stop_EraseMemory (SID 0x31 RoutineControl): RoutineControl subfunction 0x02",
                     "DiagnosticSessionControl_EndOfLine (SID 0x10 DiagnosticSessionControl): session 0x60 has no "
                     "framework role",
                     "ReadDataByIdentifier_MaxCellTemperature (SID 0x22 ReadDataByIdentifier): DID 0x2001 matched no "
                     "framework role",
                     "Vendor_Flip (SID 0xBA vendor-specific service): the profile has no place",
                     "RDBI_FlashMap (SID 0x22 ReadDataByIdentifier): DID 0x4206 matched no framework role by name "
                     "(roles without a DID: FLASH_LAYOUT; --map ROLE=RDBI_FlashMap)"):
        assert expected in listed, listed
    assert len(imported.not_mapped) == 7, listed
    assert "# NOT MAPPED from the ODX" in render(imported) and "IOControl_CoolingFan" in render(imported)


def test_a_role_the_names_do_not_match_is_named_and_settled_with_map(vendor_pdx, tmp_path):
    imported = import_odx(vendor_pdx)
    assert imported.profile["dids"]["FLASH_LAYOUT"] == TODO
    assert "RDBI_FlashMap 0x4206" in imported.todo["dids.FLASH_LAYOUT"]
    assert "--map FLASH_LAYOUT=<SHORT-NAME>" in imported.todo["dids.FLASH_LAYOUT"]
    assert "dids.FLASH_LAYOUT: no ReadDataByIdentifier service" in render(imported)
    settled = import_odx(vendor_pdx, mapping={"FLASH_LAYOUT": "RDBI_FlashMap"})
    assert settled.profile["dids"]["FLASH_LAYOUT"] == 0x4206 and "dids.FLASH_LAYOUT" not in settled.todo
    with pytest.raises(BenchConfigError, match=r"--map FLASH_LAYOUT=RDBI_Nope: no did of that name .*accepted: .*RDBI_FlashMap"):
        import_odx(vendor_pdx, mapping={"FLASH_LAYOUT": "RDBI_Nope"})


def test_a_record_layout_the_framework_cannot_read_is_listed(tmp_path):
    def shorter_boot_info(b: OdxBuilder) -> None:
        from odxtools.nameditemlist import NamedItemList

        for response in b.positive:
            if response.short_name == "PR_ReadDataByIdentifier_BootInfo":
                response.parameters = NamedItemList(list(response.parameters)[:-1])

    pdx = write_pdx(DutProfile(), tmp_path / "x.pdx", shorter_boot_info)
    imported = import_odx(pdx)
    assert any(m.startswith("dids.BOOT_INFO (ReadDataByIdentifier_BootInfo") and "the ODX record has 3 field(s); the "
               "framework reads mode (boot_mode, 1 byte), active_slot" in m for m in imported.not_mapped), \
        imported.not_mapped


def test_a_code_without_a_framework_meaning_is_listed_and_a_missing_one_named(tmp_path):
    data = DutProfile().model_dump()
    profile = DutProfile.model_validate(data)

    def vendor_texts(b: OdxBuilder) -> None:
        from odxtools.compumethods.compuconst import CompuConst
        from odxtools.odxtypes import DataType

        scales = b.dops["DOP_ResetCause"].compu_method.compu_internal_to_phys.compu_scales
        scales[-1].compu_const = CompuConst(vt="LOCKUP", data_type=DataType.A_UNICODE2STRING)

    imported = import_odx(write_pdx(profile, tmp_path / "x.pdx", vendor_texts))
    assert any("encodings.reset_cause" in m and "'LOCKUP' (0x04) has no framework meaning" in m
               for m in imported.not_mapped), imported.not_mapped
    assert "no text for BROWN_OUT" in imported.todo["encodings.reset_cause"]


def test_an_odx_d_file_is_read_with_the_comparam_subsets_beside_it(tmp_path):
    """What a supplier delivers without a PDX: the .odx-d and the .odx-cs files it refers to."""
    import zipfile

    profile = load_profile(ROOT / "benches/profiles/vendor-b.yaml")
    zipfile.ZipFile(write_pdx(profile, tmp_path / "x.pdx")).extractall(tmp_path / "odx")
    (tmp_path / "odx/index.xml").unlink()
    assert diagnostic_part(import_odx(tmp_path / "odx/vendor_b.odx-d").profile) == diagnostic_part(profile)
    assert diagnostic_part(import_odx(tmp_path / "odx").profile) == diagnostic_part(profile)


def test_an_unreadable_file_and_an_unknown_variant_are_named(tmp_path, vendor_pdx):
    bad = tmp_path / "bad.pdx"
    bad.write_bytes(b"not a zip")
    with pytest.raises(BenchConfigError, match=r"bad\.pdx: not a readable ODX/PDX file .*accepted: a \.pdx archive"):
        import_odx(bad)
    with pytest.raises(BenchConfigError, match=r"--variant: got 'nope' - no such ECU or base variant; accepted: vendor_b"):
        import_odx(vendor_pdx, variant="nope")


# ------------------------------------------------------------------------------ the commands
def test_hil_profile_export_and_import(tmp_path):
    profile_file = ROOT / "benches/profiles/vendor-b.yaml"
    runner = CliRunner()
    pdx = tmp_path / "vendor-b.pdx"
    res = runner.invoke(main, ["profile", "export", str(profile_file), "-o", str(pdx)])
    assert res.exit_code == 0, res.output
    draft = tmp_path / "draft.yaml"
    res = runner.invoke(main, ["profile", "import", str(pdx), "--dbc", str(ROOT / "benches/dbc/vendor-b.dbc"),
                               "-o", str(draft)])
    assert res.exit_code == 0, res.output
    assert "to fill in (9):" in res.output and "security.algorithm" in res.output
    assert "it does not load until the 9 item(s) to fill in are given" in res.output
    text = draft.read_text()
    assert "algorithm: TODO   # TODO: the seed-to-key function is not in ODX" in text
    assert "phys_request_id: 0x6F0" in text and "dbc: ../../../" not in text
    with pytest.raises(BenchConfigError, match=r"draft\.yaml: security\.algorithm: got 'TODO' - unknown algorithm"):
        load_profile(draft)
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump(_not_diagnostic(load_profile(profile_file))))
    res = runner.invoke(main, ["profile", "import", str(pdx), "--dbc", str(ROOT / "benches/dbc/vendor-b.dbc"),
                               "-o", str(draft), "--extra", str(extra)])
    assert res.exit_code != 0 and "exists; give --force" in res.output
    res = runner.invoke(main, ["profile", "import", str(pdx), "--dbc", str(ROOT / "benches/dbc/vendor-b.dbc"),
                               "-o", str(draft), "--extra", str(extra), "--force"])
    assert res.exit_code == 0, res.output
    assert "profile vendor-b loads" in res.output
    res = runner.invoke(main, ["profile", "import", str(pdx), "-o", str(tmp_path / "y.yaml"), "--map", "FLASH_LAYOUT"])
    assert res.exit_code != 0 and "accepted: ROLE=SHORT_NAME" in res.output


def test_cli_groups_keep_the_two_profiles_apart():
    res = CliRunner().invoke(main, ["--help"])
    assert "profile" in res.output and "packages" in res.output
    assert "DUT profile" in CliRunner().invoke(main, ["profile", "--help"]).output


def test_exported_pdx_parses_every_service_request(tmp_path):
    """odxtools encodes each exported request: the description is consistent, not just well-formed XML."""
    import odxtools

    db = odxtools.load_file(str(write_pdx(DutProfile(), tmp_path / "d.pdx")))
    layer = db.diag_layers[0]
    for svc in layer.services:
        params = {p.short_name: 0 for p in svc.request.parameters if type(p).__name__ == "ValueParameter"}
        params = {k: (b"" if "Record" in k or k == "key" else "x" if k == "text" else "TEST" if k == "mode" else 0)
                  for k in params}
        try:
            svc.request.encode(**params)
        except Exception as exc:  # noqa: BLE001 - name the service that does not encode
            pytest.fail(f"{svc.short_name}: {exc}")
    assert copy.copy(layer.get_can_receive_id()) == DutProfile().uds.phys_request_id
