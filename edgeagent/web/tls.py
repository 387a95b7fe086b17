"""HTTPS for the console on the LAN: a self-signed certificate the board makes once.

Browsers give a page the microphone only in a secure context: ``http://127.0.0.1`` is
one, ``http://192.168.1.20`` is not. So when the console listens beyond loopback
(``web.tls = "auto"``, or ``"on"``) it is served over HTTPS with a certificate made on
the first run and kept in the state directory (``web-tls.pem``, ``web-tls.key``, mode
0600). The browser warns about it once; its SHA-256 fingerprint is printed at start so
the owner can check it is the board's before accepting it.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import socket
import ssl
from pathlib import Path

from edgeagent.control.atomic import write_atomic

log = logging.getLogger(__name__)

CERT_FILE = "web-tls.pem"
KEY_FILE = "web-tls.key"
VALID_DAYS = 3650


def wants_tls(mode: str, host: str) -> bool:
    """``web.tls`` for ``host``: on, off, or auto (on unless it is a loopback address)."""
    if mode in ("on", "off"):
        return mode == "on"
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: not known to be loopback
        return True


def _make(cert: Path, key: Path, host: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"edgeagent {socket.gethostname()}")])
    alt: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.DNSName(socket.gethostname())]
    for address in {host, "127.0.0.1"}:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            alt.append(x509.DNSName(address))
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    key.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(key, private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()), mode=0o600)
    write_atomic(cert, certificate.public_bytes(serialization.Encoding.PEM), mode=0o600)


def fingerprint(cert: Path) -> str:
    """The certificate's SHA-256 fingerprint, as browsers show it (AB:CD:...)."""
    import hashlib

    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def server_context(state: Path, host: str) -> tuple[ssl.SSLContext, str]:
    """A TLS context with the board's certificate (made now when there is none), and its fingerprint."""
    cert, key = state / CERT_FILE, state / KEY_FILE
    if not (cert.is_file() and key.is_file()):
        _make(cert, key, host)
        log.warning("web console: made a self-signed certificate %s", cert)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx, fingerprint(cert)
