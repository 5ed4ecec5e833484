"""A vendor's ODX (PDX or ODX-D, read with odxtools) and DBC become a draft DUT profile (`hil profile import`).

What is mapped: UDS addressing and timing (ISO 15765-2/-3 communication parameters), sessions
(DiagnosticSessionControl), security levels with their seed and key lengths (SecurityAccess), DIDs by
role with a check of their record layouts (ReadDataByIdentifier), routines by role (RoutineControl),
the board's codes for states, reasons, reset causes, boot and activation modes (the TEXTTABLEs of
those record fields) and the download block length (RequestDownload). Roles are matched by name (the
service's SHORT-NAME, then its LONG-NAME), an ambiguous or missing match is named with its
candidates, and `--map ROLE=SHORT_NAME` settles it.

The board's update family (hil/images/families.py) is inferred from what only one family has: its
own DID and routine roles (ACTIVATE_UPDATE: mcuboot; FINGERPRINT, CHECK_MEMORY: flash_bootloader) and
the form of the erase routine's option record (none, or addressAndLengthFormatIdentifier + address +
size, whose format becomes `update.address_length_format`); the fingerprint record's length becomes
`update.fingerprint_length`. The report says what the family was inferred from; only that family's
roles are demanded. Signs of two families leave `update.family` to fill in, naming them.

What could not be mapped is listed: services the profile cannot express (an IOControl, a vendor
routine, a session or security level without a framework role, ...), record layouts the framework
cannot read, codes without a framework meaning. What ODX has no place for (`NOT_IN_ODX`: the seed-to-key
algorithm, CAN message names, console lines, the flash bootloader's logical blocks, ...) is named as to
be filled in, or as a default kept to check - in the output and as comments in
the draft, whose placeholders (`TODO`) fail at load naming the field until they are given. A file of
those facts (`--extra`, a partial profile) is merged in, so a new ODX release re-imports without losing
them.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from hil.bench import contract
from hil.bench.dut_profile import ENCODED_ENUMS, FRAMEWORK_MESSAGES, DutProfile
from hil.bench.validation import hex_id, is_identifier_path
from hil.errors import BenchConfigError
from hil.images.families import DEFAULT_FAMILY, FAMILIES, OPTIONAL_DIDS, shared_dids
from hil.odx.layouts import (DID_LAYOUTS, ENCODING_HOMES, ERASE_OPTIONS, ROUTINE_OPTIONS, WRITTEN_DIDS, Field,
                             erase_options, normalise)

#: The value a draft carries where something has to be filled in: the loader refuses it, naming the field.
TODO = "TODO"

#: Other names vendors give a role (normalised), besides the role's own name.
ALIASES: dict[str, tuple[str, ...]] = {
    "ACTIVE_SESSION": ("activediagnosticsession", "currentsession"),
    "SOFTWARE_VERSION": ("ecusoftwareversion", "applicationsoftwareversion", "swversion"),
    "SUPPLIER_SW_VERSION": ("suppliersoftwareversion", "systemsupplierecusoftwareversion"),
    "HARDWARE_NUMBER": ("ecuhardwarenumber", "hardwareversion"),
    "SERIAL_NUMBER": ("ecuserialnumber",),
    "BOOT_INFO": ("bootinformation",),
    "ERASE_MEMORY": ("erase", "erasememory", "eraseflash"),
    "CHECK_PROGRAMMING_DEPENDENCIES": ("checkdependencies", "checkprogrammingdependencies"),
    "ACTIVATE_UPDATE": ("activate", "activateupdate", "activatesoftware"),
    "CHECK_MEMORY": ("checkmemory", "verifymemory"),
    "FINGERPRINT": ("fingerprint", "programmingfingerprint", "repairshopcode"),
}
#: Name parts that say nothing about the role (stripped before comparing).
NOISE = ("readdatabyidentifier", "writedatabyidentifier", "routinecontrol", "rdbi", "wdbi", "read", "start", "did",
         "rid", "rc")
#: Words in a session's or security level's name that give its role.
SESSION_WORDS = {"DEFAULT": ("default", "dflt", "standard"), "PROGRAMMING": ("programming", "prog", "flash"),
                 "EXTENDED": ("extended", "extd", "ext")}
SECURITY_WORDS = {"BENCH": ("bench", "development", "develop", "supplier", "restore", "eol", "factory"),
                  "PROGRAMMING": ("programming", "prog", "flash", "reprogram")}
#: ISO 14229-1 subfunction values of the standard sessions (when a name says nothing).
ISO_SESSIONS = {1: "DEFAULT", 2: "PROGRAMMING", 3: "EXTENDED"}
#: Services the framework uses as ISO 14229-1 defines them, with no identifier of the board's to map.
STANDARD_SERVICES = {0x11: "ECUReset", 0x14: "ClearDiagnosticInformation", 0x19: "ReadDTCInformation",
                     0x36: "TransferData", 0x37: "RequestTransferExit", 0x3E: "TesterPresent"}


@dataclass
class Imported:
    """The result of an import: the draft's data and what the user has to know about it."""

    source: Path
    variant: str
    profile: dict[str, Any]
    mapped: list[str] = field(default_factory=list)
    not_mapped: list[str] = field(default_factory=list)
    todo: dict[str, str] = field(default_factory=dict)  # field path -> what to fill in and why
    check: dict[str, str] = field(default_factory=dict)  # field path -> a default kept that the user should confirm

    def complete(self) -> bool:
        """Nothing left to fill in."""
        return not self.todo


@dataclass(frozen=True)
class _Service:
    name: str
    long_name: str
    sid: int
    consts: dict[int, tuple[int, int]]  # byte position -> (value, bits) of the request's coded constants
    service: Any

    @property
    def names(self) -> tuple[str, str]:
        return self.name, self.long_name

    def describe(self) -> str:
        from odxtools.uds import UDSSID

        try:
            what = UDSSID(self.sid).name
        except ValueError:
            what = "vendor-specific service"
        return f"{self.name} (SID {hex_id(self.sid)} {what})"


def _h16(value: int) -> str:
    """A DID or routine identifier as datasheets write it: 0x0210."""
    return f"0x{value:04X}"


# ------------------------------------------------------------------------------ reading odxtools objects
def _load(source: Path) -> Any:
    """A PDX archive; a folder of ODX files; or an ODX file, read with the ODX files beside it (an .odx-d
    refers to the comparam subsets, .odx-cs, its supplier delivers with it)."""
    import odxtools

    if not source.exists():
        raise BenchConfigError(f"{source}: ODX file not found; accepted: a .pdx archive, an .odx-d/.odx file "
                               "(with the .odx-cs files it refers to beside it) or a folder of them")
    try:
        if source.is_dir():
            return odxtools.load_directory(str(source))
        if source.suffix.lower() == ".pdx":
            return odxtools.load_pdx_file(str(source))
        beside = [p for p in sorted(source.parent.iterdir()) if p.suffix.lower().startswith(".odx") and p != source]
        return odxtools.load_files(str(source), *(str(p) for p in beside))
    except Exception as exc:  # odxtools raises many types for malformed files; name the file and the cause
        raise BenchConfigError(f"{source}: not a readable ODX/PDX file ({type(exc).__name__}: {exc}); "
                               "accepted: a .pdx archive or an .odx-d/.odx file (ISO 22901)") from None


def _layer(db: Any, source: Path, variant: str | None) -> Any:
    layers = [dl for dl in db.diag_layers if type(dl).__name__ in ("EcuVariant", "BaseVariant")]
    if variant is not None:
        found = [dl for dl in layers if dl.short_name == variant]
        if not found:
            raise BenchConfigError(f"{source}: --variant: got {variant!r} - no such ECU or base variant; accepted: "
                                   f"{', '.join(dl.short_name for dl in layers) or 'none'}")
        return found[0]
    ecus = [dl for dl in layers if type(dl).__name__ == "EcuVariant"]
    candidates = ecus or layers
    if len(candidates) != 1:
        raise BenchConfigError(f"{source}: {len(candidates)} variants; name one with --variant; accepted: "
                               f"{', '.join(dl.short_name for dl in candidates) or 'none'}")
    return candidates[0]


def _consts(params: Iterable[Any]) -> dict[int, tuple[int, int]]:
    out = {}
    for p in params:
        if type(p).__name__ == "CodedConstParameter" and p.byte_position is not None \
                and isinstance(p.coded_value, int):
            out[p.byte_position] = (p.coded_value, p.diag_coded_type.bit_length if hasattr(p.diag_coded_type, "bit_length")
                                    else 0)
    return out


def _services(layer: Any) -> list[_Service]:
    out = []
    for svc in layer.services:
        request = getattr(svc, "request", None)
        consts = _consts(request.parameters) if request is not None else {}
        sid = consts.get(0, (None, 0))[0]
        if sid is None:
            continue
        out.append(_Service(svc.short_name, svc.long_name or "", sid, consts, svc))
    return out


@dataclass(frozen=True)
class _Slot:
    """A value field of a record as ODX lays it out."""

    name: str
    position: int
    bits: int | None  # None: to the end of the message
    dop: Any


def _value_fields(params: Iterable[Any], start: int) -> list[_Slot]:
    """The value parameters at or after byte `start`, in order (structures flattened)."""
    out = []
    for p in params:
        if type(p).__name__ != "ValueParameter" or p.byte_position is None or p.byte_position < start:
            continue
        dop = p.dop
        if type(dop).__name__ == "Structure":
            out += [_Slot(f"{p.short_name}.{s.name}", p.byte_position + s.position - start + start, s.bits, s.dop)
                    for s in _value_fields(dop.parameters, 0)]
            continue
        coded = getattr(dop, "diag_coded_type", None)
        bits = getattr(coded, "bit_length", None) if type(coded).__name__ == "StandardLengthType" else None
        out.append(_Slot(p.short_name, p.byte_position, bits, dop))
    return sorted(out, key=lambda s: s.position)


def _texttable(dop: Any) -> dict[str, int] | None:
    """TEXTTABLE text -> internal value of a DOP; None when it has no such table."""
    cm = getattr(dop, "compu_method", None)
    scales = getattr(getattr(cm, "compu_internal_to_phys", None), "compu_scales", None)
    if type(cm).__name__ != "TexttableCompuMethod" or not scales:
        return None
    out = {}
    for s in scales:
        text = s.compu_const.value if s.compu_const is not None else None
        low = s.lower_limit.value if s.lower_limit is not None else None
        if isinstance(text, str) and isinstance(low, int):
            out[text] = low
    return out


def _layout_problem(slots: list[_Slot], fields: tuple[Field, ...], start: int) -> str | None:
    """Why the ODX record cannot be read as the framework's layout, or None."""
    if len(slots) != len(fields):
        return f"{len(slots)} field(s)"
    position = start
    for slot, f in zip(slots, fields):
        if slot.position != position:
            return f"{slot.name} at byte {slot.position}, expected byte {position}"
        if f.bits is not None and slot.bits != f.bits:
            return f"{slot.name} is {'variable' if slot.bits is None else f'{slot.bits // 8} byte(s)'}, " \
                   f"expected {f.bits // 8}"
        position += (f.bits or 0) // 8
    return None


# ------------------------------------------------------------------------------ matching names to roles
def _core(name: str) -> str:
    n = normalise(name)
    for noise in NOISE:
        n = n.replace(noise, "") if len(n) > len(noise) else n
    return n


def _match_roles(roles: Iterable[str], candidates: list[_Service], mapping: dict[str, str], what: str,
                 ident: Any, imported: Imported) -> dict[str, _Service]:
    """Role -> service: by --map, then an exact name, then the one name that contains the role's."""
    out: dict[str, _Service] = {}
    roles = list(roles)
    for role in roles:
        wanted = mapping.get(role)
        if wanted is None:
            continue
        hit = [c for c in candidates if c.name == wanted or str(ident(c)) == wanted or hex_id(ident(c)) == wanted.upper()
               .replace("0X", "0x")]
        if not hit:
            raise BenchConfigError(f"--map {role}={wanted}: no {what} of that name or identifier in {imported.source}; "
                                   f"accepted: {', '.join(c.name for c in candidates) or 'none'}")
        out[role] = hit[0]

    def names(role: str) -> tuple[str, ...]:
        return (normalise(role), *ALIASES.get(role, ()))

    for exact in (True, False):
        for role in roles:
            if role in out:
                continue
            free = [c for c in candidates if c not in out.values()]
            hits = [c for c in free if any((_core(n) == r) if exact else (r in _core(n))
                                           for n in c.names if n for r in names(role))]
            if len(hits) == 1:
                out[role] = hits[0]
            elif len(hits) > 1 and not exact:
                imported.todo[f"{what}s.{role}"] = (f"several {what}s could be {role}: "
                                                    f"{', '.join(f'{c.name} ({_h16(ident(c))})' for c in hits)}; "
                                                    f"choose with --map {role}=<SHORT-NAME>")
    return out


# ------------------------------------------------------------------------------ the import
def import_odx(source: str | os.PathLike[str], *, dbc: str | os.PathLike[str] | None = None,
               variant: str | None = None, mapping: dict[str, str] | None = None,
               extra: dict[str, Any] | None = None, output: str | os.PathLike[str] | None = None) -> Imported:
    """Read `source` (PDX or ODX-D) and `dbc` into a draft profile; `output` is where the draft will live
    (the DBC path is written relative to it); `extra`: a partial profile merged over what was imported."""
    src = Path(source)
    db = _load(src)
    layer = _layer(db, src, variant)
    imported = Imported(src, layer.short_name, {"name": layer.long_name or layer.short_name})
    services = _services(layer)
    used: set[str] = set()
    _addressing(layer, imported)
    used |= _sessions(services, imported)
    used |= _security(services, imported)
    reads = [s for s in services if s.sid == 0x22 and 1 in s.consts and s.consts[1][1] == 16]
    starts = [s for s in services if s.sid == 0x31 and s.consts.get(1, (0, 0))[0] == 1 and 2 in s.consts]
    did_matches = _match_roles([d.name for d in contract.Did], reads, mapping or {}, "did", _did_of, imported)
    routine_matches = _match_roles([r.name for r in contract.Routine], starts, mapping or {}, "routine", _routine_of,
                                   imported)
    family = _family(did_matches, routine_matches, imported)
    used |= _dids(services, reads, did_matches, family, imported)
    used |= _routines(services, starts, routine_matches, family, imported)
    used |= _download(services, imported)
    for svc in services:
        if svc.name in used:
            continue
        if svc.sid in STANDARD_SERVICES:
            used.add(svc.name)
        else:
            imported.not_mapped.append(f"{svc.describe()}: the profile has no place for this service")
    standard = sorted({STANDARD_SERVICES[s.sid] for s in services if s.sid in STANDARD_SERVICES})
    imported.mapped.append(f"standard services the framework uses as ISO 14229-1 defines them: "
                           f"{', '.join(standard) or 'none'}")
    _can(dbc, output, imported)
    _defaults(imported, family)
    if extra:
        _merge_extra(imported, extra)
    return imported


def _addressing(layer: Any, imported: Imported) -> None:
    def comparam(name: str) -> Any:
        cp = layer.get_comparam(name)
        return None if cp is None else cp.value

    uds: dict[str, Any] = {}
    request, response = layer.get_can_receive_id(), layer.get_can_send_id()
    table = comparam("CP_UniqueRespIdTable")
    formats = " ".join(v for v in table if isinstance(v, str)) if isinstance(table, list) else ""
    if request is None or response is None:
        imported.todo["uds.phys_request_id"] = "no CP_UniqueRespIdTable (CP_CanPhysReqId / CP_CanRespUSDTId) in the ODX"
        uds["phys_request_id"] = uds["phys_response_id"] = TODO
    else:
        uds["phys_request_id"], uds["phys_response_id"] = int(request), int(response)
    functional = layer.get_can_func_req_id()
    uds["functional_request_id"] = None if functional is None else int(functional)
    ids = [v for v in (request, response, functional) if isinstance(v, int)]
    uds["extended_ids"] = "29-bit" in formats or any(v > 0x7FF for v in ids)
    handling, filler = comparam("CP_CanFillerByteHandling"), comparam("CP_CanFillerByte")
    if handling == "Disabled":
        uds["padding"] = None
    elif filler is not None:
        uds["padding"] = int(filler)
    else:
        uds["padding"] = DutProfile().uds.padding
        imported.check["uds.padding"] = "no CP_CanFillerByte in the ODX: the default filler byte is kept"
    for key, cp in (("p2_ms", "CP_P2Max"), ("p2_star_ms", "CP_P2Star")):
        value = comparam(cp)
        if value is None:
            uds[key] = getattr(DutProfile().uds, key)
            imported.check[f"uds.{key}"] = f"no {cp} in the ODX: the default {uds[key]} ms is kept"
        else:
            uds[key] = int(value) // 1000  # the comparams are in microseconds
    uds["s3_s"] = contract.S3_SERVER_S  # ISO 14229-2 fixes S3Server; ODX has no parameter for it
    imported.profile["uds"] = uds
    if isinstance(uds["phys_request_id"], int):
        imported.mapped.append(f"UDS: request {hex_id(uds['phys_request_id'])}, response {hex_id(uds['phys_response_id'])}"
                               f"{', functional ' + hex_id(functional) if functional is not None else ''}, "
                               f"{'29' if uds['extended_ids'] else '11'}-bit, padding "
                               f"{'none' if uds['padding'] is None else hex_id(uds['padding'])}, "
                               f"P2 {uds['p2_ms']} ms, P2* {uds['p2_star_ms']} ms")


def _role_by_words(svc: _Service, words: Mapping[str, tuple[str, ...]]) -> str | None:
    text = " ".join(normalise(n) for n in svc.names if n)
    found = [role for role, ws in words.items() if any(w in text for w in ws)]
    return found[0] if len(found) == 1 else None


def _sessions(services: list[_Service], imported: Imported) -> set[str]:
    sessions: dict[str, Any] = {}
    used = set()
    for svc in (s for s in services if s.sid == 0x10 and 1 in s.consts):
        sub = svc.consts[1][0]
        role = _role_by_words(svc, SESSION_WORDS) or ISO_SESSIONS.get(sub)
        field_name = {"DEFAULT": "default", "PROGRAMMING": "programming", "EXTENDED": "extended"}.get(role or "")
        if field_name is None or field_name in sessions:
            imported.not_mapped.append(f"{svc.describe()}: session {hex_id(sub)} has no framework role "
                                       "(accepted: default, programming, extended)")
            used.add(svc.name)
            continue
        sessions[field_name] = sub
        used.add(svc.name)
    for name in ("default", "programming", "extended"):
        if name not in sessions:
            sessions[name] = TODO
            imported.todo[f"sessions.{name}"] = "no DiagnosticSessionControl service for it in the ODX"
    imported.profile["sessions"] = sessions
    imported.mapped.append("sessions: " + ", ".join(f"{k} {hex_id(v) if isinstance(v, int) else v}"
                                                    for k, v in sessions.items()))
    return used


def _security(services: list[_Service], imported: Imported) -> set[str]:
    seeds = [s for s in services if s.sid == 0x27 and 1 in s.consts and s.consts[1][0] % 2 == 1]
    keys = {s.consts[1][0]: s for s in services if s.sid == 0x27 and 1 in s.consts and s.consts[1][0] % 2 == 0}
    sec: dict[str, Any] = {}
    lengths: dict[str, set[int]] = {"seed_length": set(), "key_length": set()}
    used = set()
    roles: dict[str, _Service] = {}
    for svc in seeds:
        role = _role_by_words(svc, SECURITY_WORDS) or ("PROGRAMMING" if len(seeds) == 1 else None)
        if role is None or role in roles:
            imported.not_mapped.append(f"{svc.describe()}: security level {hex_id(svc.consts[1][0])} has no framework "
                                       "role (accepted: a programming level and a bench level, named so)")
            used.add(svc.name)
            send = keys.get(svc.consts[1][0] + 1)
            if send is not None:
                used.add(send.name)
            continue
        roles[role] = svc
    for role, svc in roles.items():
        level = svc.consts[1][0]
        sec["programming_level" if role == "PROGRAMMING" else "bench_level"] = level
        used.add(svc.name)
        seed_fields = _value_fields(svc.service.positive_responses[0].parameters, 2) \
            if svc.service.positive_responses else []
        if len(seed_fields) == 1 and seed_fields[0].bits:
            lengths["seed_length"].add(seed_fields[0].bits // 8)
        send = keys.get(level + 1)
        if send is not None:
            used.add(send.name)
            key_fields = _value_fields(send.service.request.parameters, 2)
            if len(key_fields) == 1 and key_fields[0].bits:
                lengths["key_length"].add(key_fields[0].bits // 8)
    if "programming_level" not in sec:
        sec["programming_level"] = TODO
        imported.todo["security.programming_level"] = "no SecurityAccess requestSeed service for programming in the ODX"
    sec.setdefault("bench_level", None)
    if sec["bench_level"] is None:
        imported.check["security.bench_level"] = ("no bench (development) security level in the ODX: restore with "
                                                  "a debug probe (restore.method pyocd or command)")
    sec["algorithm"] = TODO
    imported.todo["security.algorithm"] = ("the seed-to-key function is not in ODX: a built-in name (hmac-sha256, xor) "
                                           "or module:function(secret, seed, level) beside the bench file")
    for key, found in lengths.items():
        if len(found) == 1:
            sec[key] = found.pop()
        else:
            sec[key] = getattr(DutProfile().security, key)
            imported.check[f"security.{key}"] = (f"the ODX gives {len(found) or 'no'} length(s) "
                                                 f"{sorted(found) if found else ''}: the default {sec[key]} is kept")
    sec["max_attempts"] = DutProfile().security.max_attempts
    imported.check["security.max_attempts"] = (f"ODX has no attempt counter: the default {sec['max_attempts']} is kept "
                                               "(the failed keys before NRC 0x36)")
    sec["delay_s"] = DutProfile().security.delay_s
    imported.check["security.delay_s"] = (f"ODX has no security delay: the default {sec['delay_s']} s is kept (NRC 0x37 "
                                          "after the attempts)")
    imported.profile["security"] = sec
    imported.mapped.append("security: " + ", ".join(f"{k} {hex_id(v) if isinstance(v, int) and k.endswith('level') else v}"
                                                    for k, v in sec.items() if k != "algorithm"))
    return used


def _did_of(svc: _Service) -> int:
    return svc.consts[1][0]


def _routine_of(svc: _Service) -> int:
    return svc.consts[2][0]


def _wanted(kind: str, family: str | None) -> tuple[str, ...]:
    """The roles of `kind` ("dids" or "routines") the family uses; every role when the family is not known."""
    roles = tuple(m.name for m in (contract.Did if kind == "dids" else contract.Routine))
    if family is None:
        return roles
    fam = FAMILIES[family]
    wanted = (*shared_dids(roles), *fam.dids) if kind == "dids" else fam.routines
    return tuple(r for r in roles if r in wanted)


def _erase_form(svc: _Service) -> tuple[str, int | None] | str:
    """The family whose erase option record `svc` (an ERASE_MEMORY startRoutine) has, and the flash bootloader's
    addressAndLengthFormatIdentifier (None for a family without one); or why it is neither family's."""
    slots = _value_fields(svc.service.request.parameters, 4)
    consts = {pos: value for pos, value in svc.consts.items() if pos >= 4}
    if not slots and not consts:
        return next(f for f, names in ERASE_OPTIONS.items() if not names), None
    alfid: int | None = None
    if 4 in consts and consts[4][1] == 8 and len(slots) == 2 and len(consts) == 1:
        alfid = consts[4][0]  # the board's addressAndLengthFormatIdentifier, a constant in the ODX
    elif not consts and len(slots) == 3 and slots[0].position == 4 and slots[0].bits == 8 \
            and all(s.bits for s in slots[1:]):
        alfid = ((slots[2].bits or 0) // 8) << 4 | (slots[1].bits or 0) // 8  # from the address and size widths
    family = next(f for f, names in ERASE_OPTIONS.items() if names)
    if alfid is not None and 1 <= alfid >> 4 <= 4 and 1 <= alfid & 0x0F <= 4:
        problem = _layout_problem(slots, erase_options(family, alfid)[1:], 5)
        if problem is None:
            return family, alfid
    found = ", ".join([f"constant {hex_id(v)} at byte {pos}" for pos, (v, _) in sorted(consts.items())]
                      + [f"{s.name} at byte {s.position} ({'variable' if s.bits is None else f'{s.bits // 8} byte(s)'})"
                         for s in slots])
    return (f"the option record has {found}; the framework sends none (mcuboot) or addressAndLengthFormatIdentifier, "
            "memory address and memory size of the widths it gives (flash_bootloader)")


def _family(dids: dict[str, _Service], routines: dict[str, _Service], imported: Imported) -> str | None:
    """The update family the ODX describes, from what only one family has (its own DID and routine roles, the
    form of the erase record); None (and update.family to fill in) when the ODX has signs of more than one."""
    signs: dict[str, list[str]] = {name: [] for name in FAMILIES}
    every_routine = set.intersection(*(set(f.routines) for f in FAMILIES.values()))
    for name, fam in FAMILIES.items():
        signs[name] += [f"routine {role} ({routines[role].name})" for role in fam.routines
                        if role in routines and role not in every_routine]
        signs[name] += [f"DID {role} ({dids[role].name})" for role in fam.dids if role in dids]
    erase = routines.get("ERASE_MEMORY")
    form = _erase_form(erase) if erase is not None else None
    if isinstance(form, tuple):
        record = "no option record" if form[1] is None else \
            f"addressAndLengthFormatIdentifier {hex_id(form[1])}, address and size"
        signs[form[0]].append(f"ERASE_MEMORY with {record} ({erase.name})")  # type: ignore[union-attr]
    found = {name: why for name, why in signs.items() if why}
    update = imported.profile.setdefault("update", {})
    if isinstance(form, tuple) and form[1] is not None:
        update["address_length_format"] = form[1]
    if len(found) == 1:
        family = next(iter(found))
        imported.profile["update"] = update = {"family": family, **update}
        imported.mapped.append(f"update family: {family}, inferred from {'; '.join(found[family])}")
        return family
    if not found:
        update["family"] = DEFAULT_FAMILY
        imported.check["update.family"] = (f"nothing in the ODX tells the update family (no role only one family "
                                           f"uses, no erase routine): {DEFAULT_FAMILY} is assumed; accepted: "
                                           f"{', '.join(FAMILIES)}")
        return DEFAULT_FAMILY
    update["family"] = TODO
    imported.todo["update.family"] = ("the ODX has signs of more than one update family: " + "; ".join(
        f"{name}: {', '.join(why)}" for name, why in found.items()) + f"; accepted: {', '.join(FAMILIES)}")
    return None


def _dids(services: list[_Service], reads: list[_Service], matched: dict[str, _Service], family: str | None,
          imported: Imported) -> set[str]:
    ident = _did_of
    wanted = _wanted("dids", family)
    dids: dict[str, Any] = {}
    for role in list(matched):
        if role not in wanted:  # only where the family is known: then no role of another family matched
            del matched[role]
    for role in [r for r in imported.todo if r.startswith("dids.") and r[5:] not in wanted]:
        del imported.todo[role]  # "several could be" a role this family does not use
    for name in wanted:
        svc = matched.get(name)
        if svc is None:
            if name in OPTIONAL_DIDS:
                continue  # a role a board may lack: not demanded in the draft
            dids[name] = TODO
            imported.todo.setdefault(f"dids.{name}", "no ReadDataByIdentifier service in the ODX matched its name; "
                                     f"map one with --map {name}=<SHORT-NAME> (unmapped: "
                                     f"{', '.join(f'{s.name} {_h16(ident(s))}' for s in reads if s not in matched.values()) or 'none'})")
            continue
        dids[name] = ident(svc)
        response = svc.service.positive_responses[0].parameters if svc.service.positive_responses else []
        slots = _value_fields(response, 3)
        problem = _layout_problem(slots, DID_LAYOUTS[name], 3)
        if problem:
            expected = ", ".join(f.describe() for f in DID_LAYOUTS[name])
            imported.not_mapped.append(f"dids.{name} ({svc.name}, {_h16(ident(svc))}): the ODX record has "
                                       f"{problem}; the framework reads {expected}")
            continue
        if name == "FINGERPRINT":
            _fingerprint_length(svc, slots, imported)
        for table, (role, field_name) in ENCODING_HOMES.items():
            if role == name:  # the field at the layout's place, whatever the vendor named it
                index = [f.name for f in DID_LAYOUTS[role]].index(field_name)
                _encoding(table, slots[index], f"{svc.name}.{slots[index].name}", imported)
    used = {s.name for s in matched.values()}
    written = {s.consts[1][0]: s for s in services if s.sid == 0x2E and 1 in s.consts}
    for role in WRITTEN_DIDS:
        svc = written.get(dids[role]) if isinstance(dids.get(role), int) else None
        if svc is not None:
            used.add(svc.name)
    unmatched = [r for r in wanted if r not in matched]
    for svc in reads:
        if svc.name not in used:
            why = (f"matched no framework role by name (roles without a DID: {', '.join(unmatched)}; "
                   f"--map ROLE={svc.name})" if unmatched else
                   f"has no framework role (accepted: {', '.join(wanted)})")
            imported.not_mapped.append(f"{svc.describe()}: DID {_h16(ident(svc))} {why}")
            used.add(svc.name)
    imported.profile["dids"] = dids
    imported.mapped.append(f"DIDs: {sum(isinstance(v, int) for v in dids.values())} of {len(dids)} roles")
    return used


def _fingerprint_length(svc: _Service, slots: list[_Slot], imported: Imported) -> None:
    """update.fingerprint_length: the fingerprint record's bytes (the date's and the tester id's)."""
    date, tester = slots
    update = imported.profile.setdefault("update", {})
    if tester.bits is None:
        update["fingerprint_length"] = DutProfile().update.fingerprint_length
        imported.check["update.fingerprint_length"] = (f"{svc.name}: the tester id runs to the end of the message: "
                                                       f"the default {update['fingerprint_length']} bytes are kept")
        return
    update["fingerprint_length"] = ((date.bits or 0) + tester.bits) // 8


def _encoding(table: str, slot: _Slot, where: str, imported: Imported) -> None:
    texts = _texttable(slot.dop)
    members = ENCODED_ENUMS[table].__members__
    if texts is None:
        imported.todo[f"encodings.{table}"] = f"{where} has no TEXTTABLE: give the board's code for each of " \
                                              f"{', '.join(members)}"
        return
    codes: dict[str, int] = {}
    by_norm = {normalise(m): m for m in members}
    for text, value in texts.items():
        member = by_norm.get(normalise(text))
        if member is None:
            imported.not_mapped.append(f"encodings.{table}: {where} text {text!r} ({hex_id(value)}) has no framework "
                                       f"meaning (accepted: {', '.join(members)})")
        else:
            codes[member] = value
    missing = [m for m in members if m not in codes]
    if missing:
        imported.todo[f"encodings.{table}"] = f"{where} has no text for {', '.join(missing)}"
        codes.update({m: TODO for m in missing})  # type: ignore[misc]
    imported.profile.setdefault("encodings", {})[table] = {m: codes[m] for m in members}


def _routines(services: list[_Service], starts: list[_Service], matched: dict[str, _Service], family: str | None,
              imported: Imported) -> set[str]:
    ident = _routine_of
    wanted = _wanted("routines", family)
    for role in list(matched):
        if role not in wanted:
            del matched[role]
    for role in [r for r in imported.todo if r.startswith("routines.") and r[9:] not in wanted]:
        del imported.todo[role]
    routines: dict[str, Any] = {}
    for name in wanted:
        svc = matched.get(name)
        if svc is None:
            routines[name] = TODO
            imported.todo.setdefault(f"routines.{name}", "no RoutineControl startRoutine service in the ODX "
                                     f"matched its name; map one with --map {name}=<SHORT-NAME> (unmapped: "
                                     f"{', '.join(f'{s.name} {_h16(ident(s))}' for s in starts if s not in matched.values()) or 'none'})")
            continue
        routines[name] = ident(svc)
        if name == "ERASE_MEMORY":
            form = _erase_form(svc)
            if isinstance(form, str):
                imported.not_mapped.append(f"routines.{name} ({svc.name}): {form}")
            elif family is not None and form[0] != family:
                imported.not_mapped.append(f"routines.{name} ({svc.name}): the option record is {form[0]}'s, the "
                                           f"other services are {family}'s")
            continue
        slots = _value_fields(svc.service.request.parameters, 4)
        problem = _layout_problem(slots, ROUTINE_OPTIONS[name], 4)
        if problem:
            expected = ", ".join(f.describe() for f in ROUTINE_OPTIONS[name]) or "none"
            imported.not_mapped.append(f"routines.{name} ({svc.name}): the option record has {problem}; "
                                       f"the framework sends {expected}")
            continue
        for table, (role, field_name) in ENCODING_HOMES.items():
            if role == name:
                index = [f.name for f in ROUTINE_OPTIONS[role]].index(field_name)
                _encoding(table, slots[index], f"{svc.name}.{field_name}", imported)
    used = {s.name for s in matched.values()}
    unmatched = [r for r in wanted if r not in matched]
    for svc in (s for s in services if s.sid == 0x31 and s.name not in used):
        sub = svc.consts.get(1, (None, 0))[0]
        role_hint = (f"matched no framework role by name (roles without a routine: {', '.join(unmatched)}; "
                     f"--map ROLE={svc.name})" if unmatched else "has no framework role")
        why = (f"routine {_h16(svc.consts[2][0])} {role_hint}" if sub == 1 and 2 in svc.consts
               else f"RoutineControl subfunction {hex_id(sub) if sub is not None else '?'} (the framework only starts "
                    "routines)")
        imported.not_mapped.append(f"{svc.describe()}: {why}")
        used.add(svc.name)
    imported.profile["routines"] = routines
    imported.mapped.append(f"routines: {sum(isinstance(v, int) for v in routines.values())} of {len(routines)} roles")
    return used


def _download(services: list[_Service], imported: Imported) -> set[str]:
    uds = imported.profile["uds"]
    for svc in (s for s in services if s.sid == 0x34):
        response = svc.service.positive_responses[0].parameters if svc.service.positive_responses else []
        block = _consts(response).get(2)
        if block is not None and block[1] == 16:
            uds["max_block_length"] = block[0]
            imported.mapped.append(f"download: maxNumberOfBlockLength {block[0]} ({svc.name})")
            return {svc.name}
        uds["max_block_length"] = DutProfile().uds.max_block_length
        imported.check["uds.max_block_length"] = (f"{svc.name} does not fix maxNumberOfBlockLength: the default "
                                                  f"{uds['max_block_length']} is kept")
        return {svc.name}
    uds["max_block_length"] = DutProfile().uds.max_block_length
    imported.check["uds.max_block_length"] = "no RequestDownload service in the ODX: the default block length is kept"
    return set()


def _can(dbc: str | os.PathLike[str] | None, output: str | os.PathLike[str] | None, imported: Imported) -> None:
    can: dict[str, Any] = {}
    if dbc is None:
        imported.todo["can.dbc"] = "the ODX does not describe CAN messages: give the board's DBC (--dbc)"
        can["dbc"] = TODO
        can["messages"] = {m: TODO for m in FRAMEWORK_MESSAGES}
        imported.profile["can"] = can
        return
    import cantools

    path = Path(dbc)
    try:
        db = cantools.database.load_file(str(path))
    except Exception as exc:  # cantools raises parser-specific errors; name the file
        raise BenchConfigError(f"{path}: not a readable DBC ({type(exc).__name__}: {exc})") from None
    base = Path(output).resolve().parent if output is not None else Path.cwd()
    can["dbc"] = os.path.relpath(path.resolve(), base)
    names = [m.name for m in getattr(db, "messages", [])]
    by_norm = {normalise(n): n for n in names}
    messages: dict[str, Any] = {}
    for fw in FRAMEWORK_MESSAGES:
        hit = fw if fw in names else by_norm.get(normalise(fw))
        messages[fw] = hit or TODO
        if hit is None:
            imported.todo[f"can.messages.{fw}"] = (f"no message of {path.name} has this name; give the board's "
                                                   f"(accepted: {', '.join(sorted(names))})")
    can["messages"] = messages
    can["signals"] = {}
    imported.profile["can"] = can
    imported.check["can.signals"] = "signal names are taken as the framework's; rename where your DBC differs"
    imported.mapped.append(f"CAN: {path.name}, {sum(v != TODO for v in messages.values())} of {len(messages)} "
                           "framework messages by name")


def _defaults(imported: Imported, family: str | None) -> None:
    """What ODX has no place for: the family's facts to fill in, the framework's defaults to check."""
    imported.profile.setdefault("encodings", {})
    for table in ENCODED_ENUMS:
        if table not in imported.profile["encodings"]:
            role, field_name = ENCODING_HOMES[table]
            if not _record_used(role, family):
                continue  # no record of this family carries the table: the loader keeps the default's
            imported.todo.setdefault(f"encodings.{table}", f"read from the {field_name} field of {role}, which is not "
                                     "mapped (map it, or give the board's code for each name)")
    update = imported.profile.setdefault("update", {})
    for name in FAMILIES[family].profile_fields if family is not None else ():
        update[name] = TODO
        imported.todo[f"update.{name}"] = (f"ODX does not describe the board's memory map: give the update family "
                                           f"{family}'s {name} (docs/flash-bootloader.md)")
    imported.profile["console"] = {"patterns": {}}
    imported.check["console.patterns"] = ("ODX has no console lines: without patterns the cases that read the console "
                                          "are skipped (NOT COVERED)")
    imported.profile["restore"] = {"method": "uds_restore"}
    imported.check["restore"] = "uds_restore needs a bench security level; else pyocd or command (docs/porting.md)"
    default = DutProfile().model_dump(mode="json")
    for section, why in (("soc_core", "the SOC core's frames (counter signal, cells, temperatures, slow frame rate)"),
                         ("vehicle_state", "the vehicle state message's period and timeout"),
                         ("records", "the byte layouts of the update status and update history records")):
        imported.profile[section] = default[section]
        imported.check[section] = f"ODX does not say {why}: the default board's are kept"


def _record_used(role: str, family: str | None) -> bool:
    """Whether the family's board has the DID or routine `role` (every role when the family is not known)."""
    return role in _wanted("dids", family) or role in _wanted("routines", family)


def _merge_extra(imported: Imported, extra: dict[str, Any]) -> None:
    """`extra` (a partial profile) over the draft; the items it gives are no longer to fill in or check."""
    def merge(into: dict[str, Any], over: dict[str, Any], prefix: str) -> None:
        for key, value in over.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and isinstance(into.get(key), dict) and value:
                merge(into[key], value, f"{path}.")
            else:
                into[key] = value
            for book in (imported.todo, imported.check):
                for done in [p for p in book if p == path or p.startswith(path + ".")]:
                    del book[done]

    merge(imported.profile, extra, "")


# ------------------------------------------------------------------------------ the diagnostic part
#: What of a profile ODX carries (and `hil profile import` gives back); `update` and `encodings` as far as the
#: board's update family has records that carry them (`odx_update_fields`, `_record_used`).
DIAGNOSTIC_FIELDS: dict[str, tuple[str, ...] | None] = {
    "name": None,
    "uds": ("phys_request_id", "phys_response_id", "functional_request_id", "extended_ids", "padding", "p2_ms",
            "p2_star_ms", "s3_s", "max_block_length"),
    "sessions": ("default", "programming", "extended"),
    "security": ("programming_level", "bench_level", "seed_length", "key_length"),
    "dids": None,
    "routines": None,
    "encodings": None,
    "update": None,
}

#: What ODX has no place for: the porter gives it once, in the `--extra` file beside the profile (`extra_part`).
#: `can.dbc` is the import's --dbc. Every profile field is in this or in DIAGNOSTIC_FIELDS (tests/test_odx.py).
NOT_IN_ODX: dict[str, tuple[str, ...] | None] = {
    "can": ("messages", "signals"),
    "security": ("algorithm", "max_attempts", "delay_s"),
    "console": None,
    "restore": None,
    "soc_core": None,
    "vehicle_state": None,
    "records": None,
    "settling": None,  # how long the board takes to act on an input it samples
    "update": None,  # what odx_update_fields leaves: the logical blocks, facts of another family
}


def odx_update_fields(family: str) -> tuple[str, ...]:
    """The `update:` fields an ODX of a board of `family` says: the family (from what only it has), the erase
    record's addressAndLengthFormatIdentifier, the fingerprint's length."""
    fam = FAMILIES.get(family)
    if fam is None:
        return ("family",)
    return ("family", *(("address_length_format",) if ERASE_OPTIONS[family] else ()),
            *(("fingerprint_length",) if "FINGERPRINT" in fam.dids else ()))


def _family_of(data: dict[str, Any]) -> str:
    update = data.get("update")
    family = update.get("family") if isinstance(update, dict) else None
    return family if isinstance(family, str) else DEFAULT_FAMILY


def diagnostic_part(profile: DutProfile | dict[str, Any]) -> dict[str, Any]:
    """The part of a profile (a DutProfile or a draft's data) that ODX describes."""
    data = profile.model_dump() if isinstance(profile, DutProfile) else profile
    family = _family_of(data)
    out: dict[str, Any] = {}
    for key, fields in DIAGNOSTIC_FIELDS.items():
        value = data.get(key)
        if key == "update":
            fields = odx_update_fields(family)
        out[key] = value if fields is None or not isinstance(value, dict) else {f: value.get(f) for f in fields}
    if isinstance(out["encodings"], dict):
        out["encodings"] = {t: v for t, v in out["encodings"].items()
                            if t not in ENCODING_HOMES or _record_used(ENCODING_HOMES[t][0], family)}
    return out


def extra_part(profile: DutProfile) -> dict[str, Any]:
    """What of `profile` ODX does not carry (NOT_IN_ODX): the `--extra` file that, merged over the import of its
    export, gives the profile back."""
    data = profile.model_dump(mode="json")
    out: dict[str, Any] = {}
    for key, fields in NOT_IN_ODX.items():
        if key == "update":
            carried = odx_update_fields(profile.update.family)
            fields = tuple(f for f in data["update"] if f not in carried)
        out[key] = data[key] if fields is None else {f: data[key][f] for f in fields}
    return out


# ------------------------------------------------------------------------------ the draft as YAML
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./:-]*$")


#: Fields shown in hex besides identifiers (a format byte, a block's size beside its address).
_HEX_FIELDS = ("address_length_format", "blocks.size")


def _scalar(value: Any, path: str) -> str:
    """One value in YAML flow style (a list or a mapping inline: the update's blocks, the records' fields)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v, path) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_scalar(v, f'{path}.{k}')}" for k, v in value.items()) + "}"
    if isinstance(value, int):
        return hex_id(value) if is_identifier_path(path) or path.endswith(_HEX_FIELDS) else str(value)
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in ("null", "true", "false", "yes", "no", "on", "off"):
        return text
    return json.dumps(text)


def render(imported: Imported, tool: str = "hil profile import") -> str:
    """The draft profile as YAML, with what to fill in and what to check as comments."""
    import odxtools

    lines = [f"# Draft DUT profile made by `{tool}` from {imported.source.name} (variant {imported.variant}, "
             f"odxtools {odxtools.__version__}).",
             "# Review it against your board; docs/porting.md says what each section means."]
    if imported.todo:
        lines.append("# TO FILL IN - the profile does not load until each is given (the loader names the field):")
        lines += [f"#   {path}: {why}" for path, why in imported.todo.items()]
    if imported.check:
        lines.append("# TO CHECK - a default was kept:")
        lines += [f"#   {path}: {why}" for path, why in imported.check.items()]
    if imported.not_mapped:
        lines.append("# NOT MAPPED from the ODX (the profile cannot express these):")
        lines += [f"#   - {item}" for item in imported.not_mapped]

    def emit(node: dict[str, Any], indent: int, prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            note = imported.todo.get(path) or imported.check.get(path)
            comment = f"   # {'TODO' if path in imported.todo else 'CHECK'}: {note}" if note else ""
            if isinstance(value, dict) and value:
                lines.append(f"{' ' * indent}{key}:{comment}")
                emit(value, indent + 2, f"{path}.")
            else:
                shown = "{}" if isinstance(value, dict) else _scalar(value, path)
                lines.append(f"{' ' * indent}{key}: {shown}{comment}")

    order = [k for k in DutProfile.model_fields if k in imported.profile]
    emit({k: imported.profile[k] for k in order + [k for k in imported.profile if k not in order]}, 0, "")
    return "\n".join(lines) + "\n"


def summary(imported: Imported) -> str:
    """What `hil profile import` prints: mapped, not mapped, to fill in, to check."""
    out = [f"imported {imported.source} (variant {imported.variant}):", "  mapped:"]
    out += [f"    {m}" for m in imported.mapped]
    out.append(f"  not mapped ({len(imported.not_mapped)}; the profile cannot express these):")
    out += [f"    - {m}" for m in imported.not_mapped] or ["    none"]
    out.append(f"  to fill in ({len(imported.todo)}):")
    out += [f"    {p}: {w}" for p, w in imported.todo.items()] or ["    nothing"]
    out.append(f"  to check ({len(imported.check)}):")
    out += [f"    {p}: {w}" for p, w in imported.check.items()] or ["    nothing"]
    return "\n".join(out)
