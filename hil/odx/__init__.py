"""ODX (ISO 22901) and the DUT profile: a vendor's diagnostic description becomes a draft profile
(`hil profile import`), a profile becomes a PDX (`hil profile export`). odxtools reads and writes the
files; this package maps between ODX services and the profile's roles.

- `layouts`: the records the framework reads (DID data layouts, the routine option record) and how
  each role is named in ODX;
- `export`: DutProfile -> odxtools Database -> PDX (deterministic bytes);
- `importer`: PDX / ODX-D (+ DBC) -> draft profile YAML, with what could not be mapped and what
  still has to be filled in.

Imports `hil.bench` and `hil.errors` only.
"""
