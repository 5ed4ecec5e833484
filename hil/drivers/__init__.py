"""Bench drivers: small typed classes behind the protocols tests ask for."""
