"""Mutual TLS between genmesh services: the mesh's CA and certificates, and the gRPC credentials,
channels and caller checks built from them.

One certificate per service, named `<service>.genmesh.internal` (and CN `<service>`), signed by one
CA. A server requires a client certificate from that CA and then checks, per call, that the
caller's certificate names a service allowed to call it (a worker: only the router). A client
dials with its own certificate and checks that the server's names the service it meant to reach,
whatever address it dialed (worker addresses come from heartbeats, so the name is what counts).

`genmesh up` keeps a set under `<data_dir>/tls`; Kubernetes mounts the same layout from the
`genmesh-tls` Secret (`ca.crt`, `<service>.crt`, `<service>.key`). `python -m genmesh.meshtls DIR`
writes a set for a deployment to load into that Secret.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import inspect
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Iterator

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from genmesh.settings import Settings

DOMAIN = "genmesh.internal"
CA_NAME = "ca"
# Who may call whom. A service not listed is a worker: it serves the router alone. The router's
# own port is public (clients authenticate with API keys), so it has no caller check.
PUBLIC_SERVICES = frozenset({"router"})
CALLERS: dict[str, frozenset[str]] = {"billing": frozenset({"edge", "router"})}
WORKER_CALLERS = frozenset({"router"})
# Any mesh certificate may ask a service whether it is serving (the supervisor's, a probe's).
OPEN_METHODS_PREFIX = "/grpc.health.v1.Health/"

CA_DAYS = 3650
CERT_DAYS = 825
RENEW_BEFORE = datetime.timedelta(days=30)


class MeshTlsNotConfigured(RuntimeError):
    """A service was started without mesh certificates and without opting out of them."""


def dns_name(service: str) -> str:
    return f"{service}.{DOMAIN}"


def allowed_callers(service: str) -> frozenset[str]:
    return CALLERS.get(service, WORKER_CALLERS)


# --- certificates -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServiceCert:
    """The files one service needs: the CA to trust, its certificate and its key."""

    name: str
    ca_file: Path
    cert_file: Path
    key_file: Path

    def env(self) -> dict[str, str]:
        """The settings (as `GENMESH_*` variables) that make a service use these files."""
        return {"GENMESH_TLS_CA_FILE": str(self.ca_file), "GENMESH_TLS_CERT_FILE": str(self.cert_file),
                "GENMESH_TLS_KEY_FILE": str(self.key_file)}


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically (a reader never sees half a key), with `mode` from the first byte on."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _fresh(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc - RENEW_BEFORE > _now()


def _new_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    # A random serial in the name: two meshes' CAs never look alike to a verifier.
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "genmesh"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"genmesh mesh CA {x509.random_serial_number():x}"[:64])])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _sans(service: str) -> list[x509.GeneralName]:
    # Loopback names too, so a certificate also verifies when dialed at 127.0.0.1 on one machine.
    return [x509.DNSName(dns_name(service)), x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]


def _new_service_cert(service: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
                      ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "genmesh"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, service)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(min(now + datetime.timedelta(days=CERT_DAYS), ca.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName(_sans(service)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def _load_pair(cert_file: Path, key_file: Path) -> tuple[x509.Certificate, Any] | None:
    if not (cert_file.exists() and key_file.exists()):
        return None
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except ValueError:
        return None
    if cert.public_key() != key.public_key():
        return None
    return cert, key


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # noqa: BLE001 - InvalidSignature, a wrong key type: reissue
        return False
    return True


def _names_service(cert: x509.Certificate, service: str) -> bool:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return dns_name(service) in sans.get_values_for_type(x509.DNSName)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Two supervisors sharing a data directory make one CA, not two. The lock is on the
    directory itself, so the directory holds only what a Secret should."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def ensure(directory: Path, services: Iterable[str]) -> dict[str, ServiceCert]:
    """The CA and a certificate per service in `directory`, made the first time and reused after;
    a certificate is reissued when it is near expiry, unreadable, or not from the current CA.
    Keys are mode 0600, the directory 0700."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca_file, ca_key_file = directory / f"{CA_NAME}.crt", directory / f"{CA_NAME}.key"
    out: dict[str, ServiceCert] = {}
    with _locked(directory):
        pair = _load_pair(ca_file, ca_key_file)
        if pair is None or not _fresh(pair[0]):
            pair = _new_ca()
            _write(ca_key_file, _key_pem(pair[1]), 0o600)
            _write(ca_file, pair[0].public_bytes(serialization.Encoding.PEM), 0o644)
        ca, ca_key = pair
        for service in services:
            cert_file, key_file = directory / f"{service}.crt", directory / f"{service}.key"
            have = _load_pair(cert_file, key_file)
            if have is None or not _fresh(have[0]) or not _issued_by(have[0], ca) \
                    or not _names_service(have[0], service):
                cert, key = _new_service_cert(service, ca, ca_key)
                _write(key_file, _key_pem(key), 0o600)
                _write(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
            out[service] = ServiceCert(service, ca_file, cert_file, key_file)
    return out


# --- credentials --------------------------------------------------------------------------------

@dataclass(frozen=True)
class MeshCredentials:
    """One service's certificate, key and the CA it trusts, as gRPC wants them."""

    ca: bytes
    cert: bytes
    key: bytes

    def server(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca,
                                           require_client_auth=True)

    def channel(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                            certificate_chain=self.cert)

    @classmethod
    def from_files(cls, ca_file: Path, cert_file: Path, key_file: Path) -> "MeshCredentials":
        return cls(Path(ca_file).read_bytes(), Path(cert_file).read_bytes(), Path(key_file).read_bytes())


def load(settings: Settings, service: str) -> MeshCredentials | None:
    """This service's mesh credentials; None only when the operator chose a plaintext mesh
    (`insecure_mesh`). Secure by default: with neither, the service refuses to start."""
    files = (settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file)
    if all(files):
        try:
            return MeshCredentials.from_files(*files)  # type: ignore[arg-type]
        except OSError as exc:
            raise MeshTlsNotConfigured(f"{service}: cannot read its mesh TLS files: {exc}") from None
    if any(files):
        raise MeshTlsNotConfigured(f"{service}: set all of GENMESH_TLS_CA_FILE, GENMESH_TLS_CERT_FILE "
                                   "and GENMESH_TLS_KEY_FILE, not only some")
    if settings.insecure_mesh:
        return None
    raise MeshTlsNotConfigured(
        f"{service}: service-to-service gRPC needs mutual TLS: set GENMESH_TLS_CA_FILE, "
        "GENMESH_TLS_CERT_FILE and GENMESH_TLS_KEY_FILE (`genmesh up` makes them; "
        "`python -m genmesh.meshtls DIR` writes a set), or GENMESH_INSECURE_MESH=1 for a "
        "plaintext mesh on a network you trust")


def channel(address: str, credentials: MeshCredentials | None, service: str,
            options: list[tuple[str, Any]]) -> grpc.aio.Channel:
    """A channel to `service` at `address`: mutual TLS, accepting only a server whose certificate
    names `service`, whatever the address (an advertised IP is not in any certificate)."""
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, credentials.channel(),
                                   options=[*options, ("grpc.ssl_target_name_override", dns_name(service))])


def add_port(server: grpc.aio.Server, address: str, credentials: MeshCredentials | None) -> int:
    """Binds an internal port: mutual TLS, or plaintext for a chosen plaintext mesh."""
    if credentials is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials.server())


def public_server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The router's client port: TLS with the public certificate when one is configured."""
    if not (settings.public_tls_cert_file and settings.public_tls_key_file):
        if settings.public_tls_cert_file or settings.public_tls_key_file:
            raise MeshTlsNotConfigured("set both GENMESH_PUBLIC_TLS_CERT_FILE and GENMESH_PUBLIC_TLS_KEY_FILE")
        return None
    return grpc.ssl_server_credentials([(Path(settings.public_tls_key_file).read_bytes(),
                                         Path(settings.public_tls_cert_file).read_bytes())])


def router_channel(address: str, ca_file: Path | str | None, options: list[tuple[str, Any]]) -> grpc.aio.Channel:
    """A client's channel to the router's public port: TLS trusting `ca_file` (router_tls_ca_file)
    when given, plaintext otherwise (as any client's)."""
    if not ca_file:
        return grpc.aio.insecure_channel(address, options=options)
    roots = Path(ca_file).read_bytes()
    return grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=roots), options=options)


# --- who is calling -----------------------------------------------------------------------------

def peer_service(context: grpc.aio.ServicerContext) -> str | None:
    """The mesh service named by the caller's verified certificate, or None (plaintext, or a
    certificate naming no single service). Only meaningful on a port that required the CA."""
    auth = context.auth_context()
    if auth.get("transport_security_type") != [b"ssl"]:
        return None
    suffix = ("." + DOMAIN).encode()
    names = [n[: -len(suffix)].decode() for n in auth.get("x509_subject_alternative_name", [])
             if n.endswith(suffix)]
    return names[0] if len(names) == 1 else None


class CallerCheck(grpc.aio.ServerInterceptor):
    """Refuses (PERMISSION_DENIED) every call whose certificate names a service that may not call
    this one; health checks are open to any mesh certificate. Per method the wrapped handler is
    built once."""

    def __init__(self, service: str, allowed: frozenset[str] | None = None) -> None:
        self.service = service
        self.allowed = allowed if allowed is not None else allowed_callers(service)
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                handler_call_details: grpc.HandlerCallDetails) -> Any:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(OPEN_METHODS_PREFIX):
            return handler
        wrapped = self._wrap(handler)
        self._wrapped[method] = wrapped
        return wrapped

    async def _check(self, context: grpc.aio.ServicerContext) -> None:
        caller = peer_service(context)
        if caller not in self.allowed:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"{self.service} accepts calls only from {', '.join(sorted(self.allowed))}"
                                f"{'' if caller is None else f', not {caller}'}")

    def _wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        check = self._check
        if handler.request_streaming and handler.response_streaming:
            behavior, make = handler.stream_stream, grpc.stream_stream_rpc_method_handler
        elif handler.request_streaming:
            behavior, make = handler.stream_unary, grpc.stream_unary_rpc_method_handler
        elif handler.response_streaming:
            behavior, make = handler.unary_stream, grpc.unary_stream_rpc_method_handler
        else:
            behavior, make = handler.unary_unary, grpc.unary_unary_rpc_method_handler

        if handler.response_streaming:
            async def guarded_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await check(context)
                result = behavior(request, context)
                if inspect.isawaitable(result):  # a handler that writes with context.write
                    await result
                    return
                async for item in result:
                    yield item
            guarded: Any = guarded_stream
        else:
            async def guarded_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await check(context)
                return await behavior(request, context)
            guarded = guarded_unary
        return make(guarded, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)


def main(argv: list[str]) -> int:
    """`python -m genmesh.meshtls DIR [SERVICE ...]`: a CA and certificates for a deployment."""
    if not argv or argv[0].startswith("-"):
        print("usage: python -m genmesh.meshtls DIR [SERVICE ...]  (default: every service)",
              file=sys.stderr)
        return 2
    from genmesh.up import ALL_SERVICES

    made = ensure(Path(argv[0]), argv[1:] or [*ALL_SERVICES, "supervisor"])
    print(f"{argv[0]}: {CA_NAME}.crt and {', '.join(made)} (.crt/.key); keep {CA_NAME}.key out of "
          "the Secret the services mount: only whoever issues certificates needs it")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
