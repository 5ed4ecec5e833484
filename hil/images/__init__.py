"""Firmware images: MCUboot format, building, signing, verification, mutations."""
