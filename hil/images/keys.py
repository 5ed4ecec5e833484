"""Development signing keys, generated on first use into the bench's keys directory.

Private keys are never committed (firmware_images/keys/ is gitignored). Keys are written with
imgtool's own key classes so `imgtool sign -k` loads them exactly as a release pipeline would.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from filelock import FileLock, Timeout

from hil.errors import ImageBuildError

#: name -> imgtool key type. dev-* are trusted by benches/sim.yaml; untrusted-* is for the wrong-key fault.
DEV_KEYS: tuple[tuple[str, str], ...] = (
    ("dev-ecdsa-p256", "ecdsa-p256"),
    ("dev-ed25519", "ed25519"),
    ("untrusted-ecdsa-p256", "ecdsa-p256"),
)
#: How long a process waits for another one generating the same keys.
KEYGEN_LOCK_TIMEOUT_S = 30.0


#: imgtool key classes by our key type name.
KEY_TYPES = ("ecdsa-p256", "ed25519", "rsa-2048", "rsa-3072")


def _generate(kind: str, path: Path) -> None:
    """Write a new private key of `kind` to `path` atomically (temp file in the same dir, then rename)."""
    from imgtool import keys as imgkeys  # imported lazily: imgtool pulls in click, intelhex, cbor

    if kind == "ecdsa-p256":
        key = imgkeys.ECDSA256P1.generate()
    elif kind == "ed25519":
        key = imgkeys.Ed25519.generate()
    elif kind in ("rsa-2048", "rsa-3072"):
        key = imgkeys.RSA.generate(key_size=int(kind.split("-")[1]))
    else:
        raise ImageBuildError(f"key type {kind!r} cannot be generated; accepted: {', '.join(KEY_TYPES)}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o600)  # private key: owner only
        key.export_private(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def key_type(path: Path) -> str:
    """The type of the PEM key at `path` as KEY_TYPES names it (ImageBuildError for any other)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    pem = Path(path).read_bytes()
    try:
        key: object = (serialization.load_pem_private_key(pem, password=None) if b"PRIVATE KEY" in pem
                       else serialization.load_pem_public_key(pem))
    except (ValueError, TypeError) as exc:
        raise ImageBuildError(f"key {path}: not an unencrypted PEM key ({exc})") from None
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and isinstance(key.curve, ec.SECP256R1):
        return "ecdsa-p256"
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519"
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)) and key.key_size in (2048, 3072):
        return f"rsa-{key.key_size}"
    raise ImageBuildError(f"key {path}: unsupported key type {type(key).__name__}; accepted: {', '.join(KEY_TYPES)}")


def ensure_dev_keys(keys_dir: Path) -> dict[str, Path]:
    """Generate any missing development key in `keys_dir`; return {name: path} of all of them.

    Safe when several processes start at once: generation is serialised by a file lock and each
    key appears by an atomic rename, so no process ever reads a half-written PEM.
    """
    keys_dir = Path(keys_dir)
    keys_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: keys_dir / f"{name}.pem" for name, _ in DEV_KEYS}
    if all(p.is_file() for p in paths.values()):
        return paths
    lock = FileLock(str(keys_dir / ".keygen.lock"))
    try:
        with lock.acquire(timeout=KEYGEN_LOCK_TIMEOUT_S):
            for name, kind in DEV_KEYS:
                if not paths[name].is_file():  # another process may have made it while we waited
                    _generate(kind, paths[name])
    except Timeout:
        raise ImageBuildError(f"another process has held {keys_dir / '.keygen.lock'} for {KEYGEN_LOCK_TIMEOUT_S:.0f} s "
                       "while generating keys; keys present: "
                       f"{', '.join(n for n, p in paths.items() if p.is_file()) or 'none'}") from None
    return paths


def resolve_key(key: str, keys_dir: Path) -> Path:
    """A key given as a name in `keys_dir` ('dev-ed25519') or as a path to a PEM file."""
    candidate = Path(key)
    if candidate.suffix == ".pem" and candidate.is_file():
        return candidate
    path = Path(keys_dir) / f"{key}.pem"
    if not path.is_file() and key in dict(DEV_KEYS):
        ensure_dev_keys(Path(keys_dir))
    if not path.is_file():
        available = sorted(p.stem for p in Path(keys_dir).glob("*.pem")) if Path(keys_dir).is_dir() else []
        raise ImageBuildError(f"key {key!r} not found in {keys_dir}; available: {', '.join(available) or 'none'} "
                       f"(development keys: {', '.join(n for n, _ in DEV_KEYS)})")
    return path


def ensure_key(name: str, keys_dir: Path, kind: str = "ecdsa-p256") -> Path:
    """The key `name` in `keys_dir` (or a .pem path), generated as a `kind` key on first use.

    For the virtual benches' own release keys (e.g. vendor B's); a real board's key is the vendor's.
    A key that exists already must be of `kind` (ImageBuildError naming both otherwise).
    """
    candidate = Path(name)
    if candidate.suffix == ".pem" or candidate.is_absolute():
        path = candidate if candidate.suffix == ".pem" else candidate.with_suffix(".pem")
    else:
        path = Path(keys_dir) / f"{name}.pem"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(path.parent / ".keygen.lock")).acquire(timeout=KEYGEN_LOCK_TIMEOUT_S):
                if not path.is_file():
                    _generate(kind, path)
        except Timeout:
            raise ImageBuildError(f"another process has held {path.parent / '.keygen.lock'} for "
                                  f"{KEYGEN_LOCK_TIMEOUT_S:.0f} s while generating keys; {name} is not there yet") from None
    found = key_type(path)
    if found != kind:
        raise ImageBuildError(f"key {path} is {found}, the bench asks for {kind} (images.prebuild.key_type); "
                              "remove the file to generate a new one, or set key_type to the key's type")
    return path
