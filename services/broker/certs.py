"""A private CA, a broker certificate and client certificates, made with ``openssl``.

The CA is made once and reused, so adding a hostname or a client later does not
invalidate what devices already trust. Keys are ECDSA P-256: small, and cheap for a
Pi and for TLS stacks on microcontrollers.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Always in the broker certificate, so local tools and tests verify the hostname.
DEFAULT_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1")
DEFAULT_DAYS = 825  # the longest validity Apple and browsers still accept for a leaf
CA_DAYS = 3650
_NAME_RE = re.compile(r"^[A-Za-z0-9*][A-Za-z0-9_.*\-]{0,252}$")


class CertError(RuntimeError):
    """openssl failed, or a name cannot go into a certificate."""


@dataclass(frozen=True, slots=True)
class IssuedCerts:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    clients: dict[str, tuple[Path, Path]]


def _openssl(args: Sequence[str]) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise CertError("openssl not found (Debian: apt-get install openssl)")
    result = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CertError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _san(names: Sequence[str]) -> str:
    entries = []
    for name in dict.fromkeys(names):  # keep order, drop repeats
        try:
            entries.append(f"IP:{ipaddress.ip_address(name)}")
        except ValueError:
            if not _NAME_RE.match(name):
                raise CertError(f"{name!r} is not a hostname or an IP address") from None
            entries.append(f"DNS:{name}")
    return "subjectAltName=" + ",".join(entries)


def _new_key(path: Path) -> None:
    _openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-out", str(path)])
    os.chmod(path, 0o600)


def _serial() -> str:
    return "0x" + secrets.token_hex(16)


def ensure_ca(out: Path, *, subject: str = "/O=edgeloop/CN=edgeloop CA") -> tuple[Path, Path]:
    cert, key = out / "ca.crt", out / "ca.key"
    if cert.exists() and key.exists():
        return cert, key
    out.mkdir(parents=True, exist_ok=True)
    _new_key(key)
    _openssl([
        "req", "-x509", "-new", "-key", str(key), "-sha256", "-days", str(CA_DAYS),
        "-subj", subject, "-set_serial", _serial(),
        "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
        "-out", str(cert),
    ])
    return cert, key


def _issue(
    out: Path, stem: str, common_name: str, extensions: Sequence[str], days: int
) -> tuple[Path, Path]:
    ca_cert, ca_key = out / "ca.crt", out / "ca.key"
    cert, key = out / f"{stem}.crt", out / f"{stem}.key"
    _new_key(key)
    with tempfile.TemporaryDirectory() as tmp:
        csr, ext = Path(tmp) / "req.csr", Path(tmp) / "ext.cnf"
        ext.write_text("\n".join([
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "authorityKeyIdentifier=keyid",
            *extensions,
        ]) + "\n")
        _openssl(["req", "-new", "-key", str(key), "-subj", f"/O=edgeloop/CN={common_name}",
                  "-out", str(csr)])
        _openssl(["x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
                  "-set_serial", _serial(), "-days", str(days), "-sha256",
                  "-extfile", str(ext), "-out", str(cert)])
    return cert, key


def issue_all(
    out: Path,
    *,
    names: Sequence[str] = (),
    clients: Sequence[str] = (),
    days: int = DEFAULT_DAYS,
) -> IssuedCerts:
    """Make (or reuse) the CA in ``out``; issue a fresh server cert and client certs.

    The server certificate's SAN holds localhost, 127.0.0.1 and ``names`` (hostnames or
    IPs the broker is reached by: ``mqtt.example.org``, ``mosquitto.edgeloop.svc``...).
    """
    out.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = ensure_ca(out)
    all_names = [*DEFAULT_NAMES, *names]
    server_cert, server_key = _issue(
        out, "server", names[0] if names else "localhost",
        [_san(all_names), "extendedKeyUsage=serverAuth"], days,
    )
    issued: dict[str, tuple[Path, Path]] = {}
    for client in clients:
        if not _NAME_RE.match(client) or "*" in client:
            raise CertError(f"{client!r} cannot be a client certificate name")
        issued[client] = _issue(
            out, f"client-{client}", client, ["extendedKeyUsage=clientAuth"], days
        )
    return IssuedCerts(ca_cert, ca_key, server_cert, server_key, issued)
