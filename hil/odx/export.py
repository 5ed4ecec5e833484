"""A DUT profile as an ODX diagnostic description, written as a PDX by odxtools (`hil profile export`).

What the profile says about diagnostics becomes ODX objects a tester or `hil profile import` reads:

- addressing and timing: the ISO 15765-2/-3 communication parameters (CP_UniqueRespIdTable with
  CP_CanPhysReqId / CP_CanRespUSDTId and their 11- or 29-bit formats, CP_CanFuncReqId,
  CP_CanFillerByte(Handling), CP_P2Max, CP_P2Star), defined in a minimal comparam subset of the
  standard names that ships inside the PDX;
- sessions: one DiagnosticSessionControl service per role;
- security: RequestSeed / SendKey services per level, the seed and key lengths in their records;
- DIDs: one ReadDataByIdentifier service per role with the record layout of `layouts.DID_LAYOUTS`
  (enum fields as TEXTTABLEs carrying the profile's encodings; the fingerprint as long as
  `update.fingerprint_length`), WriteDataByIdentifier for the DIDs the framework writes (the
  configuration; the flash bootloader's fingerprint);
- routines: one RoutineControl startRoutine service per role the profile gives (its update family's),
  with its option record: ACTIVATE_UPDATE's mode, CHECK_MEMORY's signature record, ERASE_MEMORY's
  addressAndLengthFormatIdentifier (the board's, a constant), address and size for the flash bootloader;
- the download: RequestDownload (its response fixes maxNumberOfBlockLength), TransferData,
  RequestTransferExit, ECUReset, TesterPresent.

What ODX has no place for (the seed-to-key algorithm, the attempt counter and delay, CAN message names,
console patterns and lines, the restore method, the SOC core's frames, the vehicle state's timing, the
update-record layouts, the flash bootloader's logical blocks: `hil.odx.importer.NOT_IN_ODX`) stays in the
profile; `hil profile import` names it as to be filled in or checked.

The PDX is deterministic: the same profile and odxtools version give the same bytes (odxtools stamps
the time into the archive; `write_pdx` rewrites it with a fixed date).
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

from hil.bench.dut_profile import ENCODED_ENUMS, DutProfile
from hil.odx.layouts import (DID_LAYOUTS, ENCODING_HOMES, ROUTINE_OPTIONS, SECURITY_ROLES, SESSION_ROLES, WRITTEN_DIDS,
                             Field, did_layout, routine_options)

#: The date every entry of an exported PDX carries (a fixed one: the same profile gives the same file).
FIXED_DATE = "2024-01-01T00:00:00"
#: Comparam subsets (ISO 15765-2 transport, ISO 15765-3 application timing) and the names this package uses.
CP_TRANSPORT = "ISO_15765_2"
CP_APPLICATION = "ISO_15765_3"
#: CP_CanPhysReqFormat / CP_CanRespUSDTFormat texts (ISO 15765-2 comparam subset) by identifier width.
REQUEST_FORMAT = {False: "normal segmented 11-bit transmit with FC", True: "normal segmented 29-bit transmit with FC"}
RESPONSE_FORMAT = {False: "normal segmented 11-bit receive with FC", True: "normal segmented 29-bit receive with FC"}
UUDT_FORMAT = {False: "normal unsegmented 11-bit receive", True: "normal unsegmented 29-bit receive"}
#: Sub-parameters of CP_UniqueRespIdTable, in the standard's order.
UNIQUE_RESP_ID_TABLE = ("CP_CanPhysReqFormat", "CP_CanPhysReqId", "CP_CanPhysReqExtAddr", "CP_CanRespUSDTFormat",
                        "CP_CanRespUSDTId", "CP_CanRespUSDTExtAddr", "CP_CanRespUUDTFormat", "CP_CanRespUUDTId",
                        "CP_CanRespUUDTExtAddr", "CP_ECULayerShortName")
#: "No UUDT id" as the standard writes it (0xFFFFFFFF as an unsigned decimal).
NO_UUDT_ID = str(2**32 - 1)


def short_name(text: str) -> str:
    """An ODX SHORT-NAME (letters, digits, underscore) for `text`."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", text)
    return name if re.match(r"[A-Za-z_]", name) else f"_{name}"


def role_name(role: str) -> str:
    """UPDATE_STATUS -> UpdateStatus: how services and DIDs are named in an exported ODX."""
    return "".join(part.capitalize() for part in role.split("_"))


class OdxBuilder:
    """odxtools objects of one diagnostic layer container, with the ids and references that tie them."""

    def __init__(self, container: str) -> None:
        from odxtools.odxlink import DocType, OdxDocFragment

        self.prefix = container
        self.frags = (OdxDocFragment(container, DocType.CONTAINER),)
        self.dops: dict[str, Any] = {}
        self.requests: list[Any] = []
        self.positive: list[Any] = []
        self.negative: list[Any] = []
        self.services: list[Any] = []

    # ------------------------------------------------------------------ links
    def link_id(self, name: str) -> Any:
        from odxtools.odxlink import OdxLinkId

        return OdxLinkId(f"{self.prefix}.{name}", self.frags)

    def ref(self, name: str) -> Any:
        from odxtools.odxlink import OdxLinkRef

        return OdxLinkRef(f"{self.prefix}.{name}", self.frags)

    # ------------------------------------------------------------------ data object properties
    def dop(self, field: Field, profile: DutProfile) -> str:
        """The short name of the DOP for `field` (made once per kind and size)."""
        from odxtools.compumethods.compucategory import CompuCategory
        from odxtools.compumethods.identicalcompumethod import IdenticalCompuMethod
        from odxtools.dataobjectproperty import DataObjectProperty
        from odxtools.minmaxlengthtype import MinMaxLengthType
        from odxtools.odxtypes import DataType
        from odxtools.physicaltype import PhysicalType
        from odxtools.standardlengthtype import StandardLengthType
        from odxtools.termination import Termination

        if field.kind == "enum":
            assert field.table is not None
            return self._texttable(field.table, profile.encodings[field.table])
        size = "rest" if field.bits is None else str(field.bits)
        name = f"DOP_{field.kind}_{size}"
        if name in self.dops:
            return name
        internal = {"uint": DataType.A_UINT32, "bytes": DataType.A_BYTEFIELD, "ascii": DataType.A_ASCIISTRING,
                    "utf8": DataType.A_UTF8STRING}[field.kind]
        physical = {"uint": DataType.A_UINT32, "bytes": DataType.A_BYTEFIELD}.get(field.kind, DataType.A_UNICODE2STRING)
        coded: Any
        if field.bits is None:
            coded = MinMaxLengthType(base_data_type=internal, min_length=0, termination=Termination.END_OF_PDU)
        else:
            coded = StandardLengthType(base_data_type=internal, bit_length=field.bits)
        self.dops[name] = DataObjectProperty(
            odx_id=self.link_id(name), short_name=name, diag_coded_type=coded,
            physical_type=PhysicalType(base_data_type=physical),
            compu_method=IdenticalCompuMethod(category=CompuCategory.IDENTICAL, internal_type=internal,
                                              physical_type=physical))
        return name

    def _texttable(self, table: str, codes: dict[str, int]) -> str:
        from odxtools.compumethods.compucategory import CompuCategory
        from odxtools.compumethods.compuconst import CompuConst
        from odxtools.compumethods.compuinternaltophys import CompuInternalToPhys
        from odxtools.compumethods.compuscale import CompuScale
        from odxtools.compumethods.limit import Limit
        from odxtools.compumethods.texttablecompumethod import TexttableCompuMethod
        from odxtools.dataobjectproperty import DataObjectProperty
        from odxtools.odxtypes import DataType
        from odxtools.physicaltype import PhysicalType
        from odxtools.standardlengthtype import StandardLengthType

        name = f"DOP_{role_name(table)}"
        if name in self.dops:
            return name
        scales = [CompuScale(compu_const=CompuConst(vt=member, data_type=DataType.A_UNICODE2STRING),
                             lower_limit=Limit(value_raw=str(value), value_type=DataType.A_UINT32),
                             upper_limit=Limit(value_raw=str(value), value_type=DataType.A_UINT32),
                             domain_type=DataType.A_UINT32, range_type=DataType.A_UNICODE2STRING)
                  for member, value in sorted(codes.items(), key=lambda kv: kv[1])]
        self.dops[name] = DataObjectProperty(
            odx_id=self.link_id(name), short_name=name, long_name=ENCODED_ENUMS[table].__name__,
            diag_coded_type=StandardLengthType(base_data_type=DataType.A_UINT32, bit_length=8),
            physical_type=PhysicalType(base_data_type=DataType.A_UNICODE2STRING),
            compu_method=TexttableCompuMethod(category=CompuCategory.TEXTTABLE,
                                              compu_internal_to_phys=CompuInternalToPhys(compu_scales=scales),
                                              internal_type=DataType.A_UINT32,
                                              physical_type=DataType.A_UNICODE2STRING))
        return name

    # ------------------------------------------------------------------ parameters
    @staticmethod
    def const(name: str, value: int, position: int, bits: int = 8) -> Any:
        from odxtools.odxtypes import DataType
        from odxtools.parameters.codedconstparameter import CodedConstParameter
        from odxtools.standardlengthtype import StandardLengthType

        return CodedConstParameter(short_name=name, byte_position=position, coded_value_raw=str(value),
                                   diag_coded_type=StandardLengthType(base_data_type=DataType.A_UINT32, bit_length=bits))

    def value(self, name: str, dop: str, position: int) -> Any:
        from odxtools.parameters.valueparameter import ValueParameter

        return ValueParameter(short_name=name, byte_position=position, dop_ref=self.ref(dop))

    @staticmethod
    def matching(name: str, position: int, length: int) -> Any:
        from odxtools.parameters.matchingrequestparameter import MatchingRequestParameter

        return MatchingRequestParameter(short_name=name, request_byte_position=position, byte_position=position,
                                        byte_length=length)

    def fields(self, fields: tuple[Field, ...], start: int, profile: DutProfile) -> list[Any]:
        """Value parameters for `fields`, the first at byte `start`."""
        out, position = [], start
        for f in fields:
            if f.value is not None:
                out.append(self.const(f.name, f.value, position, f.bits or 8))
            else:
                out.append(self.value(f.name, self.dop(f, profile), position))
            position += (f.bits or 0) // 8
        return out

    # ------------------------------------------------------------------ services
    def service(self, name: str, semantic: str, request: list[Any], response: list[Any]) -> None:
        """A service with its request, its positive response and the shared negative response."""
        from odxtools.diagservice import DiagService
        from odxtools.nameditemlist import NamedItemList
        from odxtools.request import Request
        from odxtools.response import Response, ResponseType

        self.requests.append(Request(odx_id=self.link_id(f"RQ.{name}"), short_name=f"RQ_{name}",
                                     parameters=NamedItemList(request)))
        self.positive.append(Response(odx_id=self.link_id(f"PR.{name}"), short_name=f"PR_{name}",
                                      response_type=ResponseType.POSITIVE, parameters=NamedItemList(response)))
        self.services.append(DiagService(odx_id=self.link_id(f"DC.{name}"), short_name=name, semantic=semantic,
                                         request_ref=self.ref(f"RQ.{name}"), pos_response_refs=[self.ref(f"PR.{name}")],
                                         neg_response_refs=[self.ref("NR.Negative")]))

    def negative_response(self) -> None:
        from odxtools.nameditemlist import NamedItemList
        from odxtools.response import Response, ResponseType
        from odxtools.uds import NegativeResponseId

        nrc = self.dop(Field("nrc", "uint", 8), DutProfile())
        self.negative.append(Response(
            odx_id=self.link_id("NR.Negative"), short_name="NR_Negative", response_type=ResponseType.NEGATIVE,
            parameters=NamedItemList([self.const("SID_NR", NegativeResponseId, 0), self.matching("SIDRQ_NR", 0, 1),
                                      self.value("NRC", nrc, 2)])))


def _services(b: OdxBuilder, profile: DutProfile) -> None:
    from odxtools.uds import UDSSID as SID, positive_response_id as pos

    b.negative_response()
    for role, field in SESSION_ROLES.items():
        sub = getattr(profile.sessions, field)
        b.service(f"DiagnosticSessionControl_{role_name(role)}", "SESSION",
                  [b.const("SID_RQ", SID.DiagnosticSessionControl, 0), b.const("SessionType", sub, 1)],
                  [b.const("SID_PR", pos(SID.DiagnosticSessionControl), 0), b.matching("SessionType", 1, 1),
                   b.value("P2ServerMax", b.dop(Field("ms", "uint", 16), profile), 2),
                   b.value("P2StarServerMax", b.dop(Field("ms", "uint", 16), profile), 4)])
    sec = profile.security
    for role, field in SECURITY_ROLES.items():
        level = getattr(sec, field)
        if level is None:
            continue
        seed, key = Field("seed", "bytes", 8 * sec.seed_length), Field("key", "bytes", 8 * sec.key_length)
        b.service(f"SecurityAccess_RequestSeed_{role_name(role)}", "SECURITY",
                  [b.const("SID_RQ", SID.SecurityAccess, 0), b.const("SecurityAccessType", level, 1)],
                  [b.const("SID_PR", pos(SID.SecurityAccess), 0), b.matching("SecurityAccessType", 1, 1),
                   *b.fields((seed,), 2, profile)])
        b.service(f"SecurityAccess_SendKey_{role_name(role)}", "SECURITY",
                  [b.const("SID_RQ", SID.SecurityAccess, 0), b.const("SecurityAccessType", level + 1, 1),
                   *b.fields((key,), 2, profile)],
                  [b.const("SID_PR", pos(SID.SecurityAccess), 0), b.matching("SecurityAccessType", 1, 1)])
    for role, ident in profile.dids.items():
        b.service(f"ReadDataByIdentifier_{role_name(role)}", "CURRENTDATA",
                  [b.const("SID_RQ", SID.ReadDataByIdentifier, 0), b.const("DataIdentifier", ident, 1, 16)],
                  [b.const("SID_PR", pos(SID.ReadDataByIdentifier), 0), b.matching("DataIdentifier", 1, 2),
                   *b.fields(did_layout(role, profile), 3, profile)])
    for role in (r for r in WRITTEN_DIDS if r in profile.dids):
        ident = profile.dids[role]
        b.service(f"WriteDataByIdentifier_{role_name(role)}", "CALIBRATION",
                  [b.const("SID_RQ", SID.WriteDataByIdentifier, 0), b.const("DataIdentifier", ident, 1, 16),
                   *b.fields(did_layout(role, profile), 3, profile)],
                  [b.const("SID_PR", pos(SID.WriteDataByIdentifier), 0), b.matching("DataIdentifier", 1, 2)])
    for role, ident in profile.routines.items():
        b.service(f"RoutineControl_Start_{role_name(role)}", "ROUTINE",
                  [b.const("SID_RQ", SID.RoutineControl, 0), b.const("RoutineControlType", 1, 1),
                   b.const("RoutineIdentifier", ident, 2, 16), *b.fields(routine_options(role, profile), 4, profile)],
                  [b.const("SID_PR", pos(SID.RoutineControl), 0), b.matching("RoutineControlType", 1, 1),
                   b.matching("RoutineIdentifier", 2, 2), *b.fields((Field("status", "bytes", None),), 4, profile)])
    u32 = b.dop(Field("u32", "uint", 32), profile)
    b.service("RequestDownload", "DOWNLOAD",
              [b.const("SID_RQ", SID.RequestDownload, 0), b.const("DataFormatIdentifier", 0, 1),
               b.const("AddressAndLengthFormatIdentifier", 0x44, 2), b.value("MemoryAddress", u32, 3),
               b.value("MemorySize", u32, 7)],
              [b.const("SID_PR", pos(SID.RequestDownload), 0), b.const("LengthFormatIdentifier", 0x20, 1),
               b.const("MaxNumberOfBlockLength", profile.uds.max_block_length, 2, 16)])
    b.service("TransferData", "DOWNLOAD",
              [b.const("SID_RQ", SID.TransferData, 0),
               b.value("BlockSequenceCounter", b.dop(Field("u8", "uint", 8), profile), 1),
               *b.fields((Field("TransferRequestParameterRecord", "bytes", None),), 2, profile)],
              [b.const("SID_PR", pos(SID.TransferData), 0), b.matching("BlockSequenceCounter", 1, 1)])
    b.service("RequestTransferExit", "DOWNLOAD", [b.const("SID_RQ", SID.RequestTransferExit, 0)],
              [b.const("SID_PR", pos(SID.RequestTransferExit), 0)])
    b.service("ECUReset_HardReset", "ECU-RESET", [b.const("SID_RQ", SID.EcuReset, 0), b.const("ResetType", 1, 1)],
              [b.const("SID_PR", pos(SID.EcuReset), 0), b.matching("ResetType", 1, 1)])
    b.service("TesterPresent", "TESTERPRESENT", [b.const("SID_RQ", SID.TesterPresent, 0), b.const("SubFunction", 0, 1)],
              [b.const("SID_PR", pos(SID.TesterPresent), 0), b.matching("SubFunction", 1, 1)])


def _comparam_subsets() -> list[Any]:
    """The communication parameters an exported profile uses, under their ISO 15765-2/-3 names."""
    from odxtools.comparam import Comparam
    from odxtools.comparamsubset import ComparamSubset
    from odxtools.compumethods.compucategory import CompuCategory
    from odxtools.compumethods.identicalcompumethod import IdenticalCompuMethod
    from odxtools.complexcomparam import ComplexComparam
    from odxtools.dataobjectproperty import DataObjectProperty
    from odxtools.minmaxlengthtype import MinMaxLengthType
    from odxtools.nameditemlist import NamedItemList
    from odxtools.odxlink import DocType, OdxDocFragment, OdxLinkId, OdxLinkRef
    from odxtools.odxtypes import DataType
    from odxtools.physicaltype import PhysicalType
    from odxtools.standardlengthtype import StandardLengthType
    from odxtools.standardizationlevel import StandardizationLevel
    from odxtools.termination import Termination
    from odxtools.usage import Usage

    def subset(name: str, params: list[tuple[str, str, str]], complex_params: dict[str, list[tuple[str, str, str]]]) -> Any:
        frags = (OdxDocFragment(name, DocType.COMPARAM_SUBSET),)
        dops = [
            DataObjectProperty(odx_id=OdxLinkId(f"{name}.DOP_UINT32", frags), short_name="DOP_UINT32",
                               diag_coded_type=StandardLengthType(base_data_type=DataType.A_UINT32, bit_length=32),
                               physical_type=PhysicalType(base_data_type=DataType.A_UINT32),
                               compu_method=IdenticalCompuMethod(category=CompuCategory.IDENTICAL,
                                                                 internal_type=DataType.A_UINT32,
                                                                 physical_type=DataType.A_UINT32)),
            DataObjectProperty(odx_id=OdxLinkId(f"{name}.DOP_TEXT", frags), short_name="DOP_TEXT",
                               diag_coded_type=MinMaxLengthType(base_data_type=DataType.A_UNICODE2STRING, min_length=0,
                                                                termination=Termination.END_OF_PDU),
                               physical_type=PhysicalType(base_data_type=DataType.A_UNICODE2STRING),
                               compu_method=IdenticalCompuMethod(category=CompuCategory.IDENTICAL,
                                                                 internal_type=DataType.A_UNICODE2STRING,
                                                                 physical_type=DataType.A_UNICODE2STRING)),
        ]

        def comparam(cp: str, cls: str, dop: str, default: str) -> Any:
            return Comparam(odx_id=OdxLinkId(f"{name}.{cp}", frags), short_name=cp, param_class=cls,
                            cptype=StandardizationLevel.STANDARD, physical_default_value_raw=default,
                            cpusage=Usage.TESTER if cls == "TIMING" else Usage.ECU_COMM,
                            dop_ref=OdxLinkRef(f"{name}.{dop}", frags))

        complexes = [ComplexComparam(odx_id=OdxLinkId(f"{name}.{cp}", frags), short_name=cp, param_class="UNIQUE_ID",
                                     cptype=StandardizationLevel.STANDARD, cpusage=Usage.ECU_COMM,
                                     subparams=NamedItemList([comparam(s, c, d, "0") for s, c, d in subs]),
                                     allow_multiple_values_raw=True)
                     for cp, subs in complex_params.items()]
        return ComparamSubset(odx_id=OdxLinkId(name, frags), short_name=name, category=name,
                              comparams=NamedItemList([comparam(cp, cls, dop, "0") for cp, cls, dop in params]),
                              complex_comparams=NamedItemList(complexes), data_object_props=NamedItemList(dops))

    text, u32 = "DOP_TEXT", "DOP_UINT32"
    table = [(cp, "UNIQUE_ID", text if cp.endswith(("Format", "ShortName")) else u32) for cp in UNIQUE_RESP_ID_TABLE]
    transport = subset(CP_TRANSPORT, [("CP_CanFuncReqId", "COM", u32), ("CP_CanFillerByte", "COM", u32),
                                      ("CP_CanFillerByteHandling", "COM", text)],
                       {"CP_UniqueRespIdTable": table})
    application = subset(CP_APPLICATION, [("CP_P2Max", "TIMING", u32), ("CP_P2Star", "TIMING", u32)], {})
    return [transport, application]


def _comparams(profile: DutProfile, layer: str) -> list[Any]:
    from odxtools.comparaminstance import ComparamInstance
    from odxtools.odxlink import DocType, OdxDocFragment, OdxLinkRef

    def ref(subset: str, cp: str) -> Any:
        return OdxLinkRef(f"{subset}.{cp}", (OdxDocFragment(subset, DocType.COMPARAM_SUBSET),))

    uds = profile.uds
    ext = uds.extended_ids
    table = [REQUEST_FORMAT[ext], str(uds.phys_request_id), "0", RESPONSE_FORMAT[ext], str(uds.phys_response_id), "0",
             UUDT_FORMAT[ext], NO_UUDT_ID, "0", layer]
    out = [ComparamInstance(spec_ref=ref(CP_TRANSPORT, "CP_UniqueRespIdTable"), value=list(table))]  # type: ignore[arg-type]
    if uds.functional_request_id is not None:
        out.append(ComparamInstance(spec_ref=ref(CP_TRANSPORT, "CP_CanFuncReqId"), value=str(uds.functional_request_id)))
    out.append(ComparamInstance(spec_ref=ref(CP_TRANSPORT, "CP_CanFillerByteHandling"),
                                value="Disabled" if uds.padding is None else "Enabled"))
    if uds.padding is not None:
        out.append(ComparamInstance(spec_ref=ref(CP_TRANSPORT, "CP_CanFillerByte"), value=str(uds.padding)))
    out.append(ComparamInstance(spec_ref=ref(CP_APPLICATION, "CP_P2Max"), value=str(uds.p2_ms * 1000)))
    out.append(ComparamInstance(spec_ref=ref(CP_APPLICATION, "CP_P2Star"), value=str(uds.p2_star_ms * 1000)))
    return out


def build_database(profile: DutProfile, extra_services: Callable[[OdxBuilder], None] | None = None) -> Any:
    """The odxtools Database describing `profile`'s diagnostics: one container, one base variant.

    `extra_services(builder)` adds services of a vendor's own (the porting example's supplier file, tests).
    """
    from odxtools.database import Database
    from odxtools.diagdatadictionaryspec import DiagDataDictionarySpec
    from odxtools.diaglayercontainer import DiagLayerContainer
    from odxtools.diaglayers.basevariant import BaseVariant
    from odxtools.diaglayers.basevariantraw import BaseVariantRaw
    from odxtools.diaglayers.diaglayertype import DiagLayerType
    from odxtools.nameditemlist import NamedItemList

    container = short_name(profile.name)
    b = OdxBuilder(container)
    _services(b, profile)
    if extra_services is not None:
        extra_services(b)
    for table, (role, field) in ENCODING_HOMES.items():  # every table is carried, also one no record uses today
        assert role in DID_LAYOUTS or role in ROUTINE_OPTIONS, (table, field)
    raw = BaseVariantRaw(
        variant_type=DiagLayerType.BASE_VARIANT, odx_id=b.link_id("BV"), short_name=container, long_name=profile.name,
        diag_data_dictionary_spec=DiagDataDictionarySpec(data_object_props=NamedItemList(b.dops.values())),
        diag_comms_raw=list(b.services), requests=NamedItemList(b.requests),
        positive_responses=NamedItemList(b.positive), negative_responses=NamedItemList(b.negative),
        comparam_refs=_comparams(profile, container))
    dlc = DiagLayerContainer(odx_id=b.link_id("DLC"), short_name=container, long_name=profile.name,
                             base_variants=NamedItemList([BaseVariant(diag_layer_raw=raw)]))
    db = Database()
    db.short_name = container
    db._diag_layer_containers = NamedItemList([dlc])
    db._comparam_subsets = NamedItemList(_comparam_subsets())
    db.refresh()
    return db


def write_pdx(profile: DutProfile, path: str | os.PathLike[str],
              extra_services: Callable[[OdxBuilder], None] | None = None) -> Path:
    """Write `profile` as a PDX at `path` (odxtools.write_pdx_file, then the dates fixed). Returns the path."""
    import odxtools

    out = Path(path)
    db = build_database(profile, extra_services)
    with tempfile.TemporaryDirectory(prefix=".pdx-", dir=out.parent if out.parent.is_dir() else None) as tmp:
        raw = Path(tmp) / "raw.pdx"
        odxtools.write_pdx_file(str(raw), db)
        data = _deterministic(raw.read_bytes())
    tmp_out = out.with_name(f".{out.name}.tmp")
    tmp_out.write_bytes(data)
    tmp_out.replace(out)
    return out


def _deterministic(pdx: bytes) -> bytes:
    """The same archive with every entry dated FIXED_DATE (in the index and in the zip), entries sorted."""
    src = zipfile.ZipFile(io.BytesIO(pdx))
    buf = io.BytesIO()
    stamp = tuple(int(x) for x in re.split(r"[-T:]", FIXED_DATE))
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for name in sorted(src.namelist()):
            data = src.read(name)
            if name == "index.xml":
                data = re.sub(rb'CREATION-DATE="[^"]*"', b'CREATION-DATE="' + FIXED_DATE.encode() + b'"', data)
            info = zipfile.ZipInfo(name, date_time=stamp)  # type: ignore[arg-type]
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            dst.writestr(info, data)
    return buf.getvalue()
