"""The mesh's certificates (genmesh/meshtls.py): a CA and per-service certificates that verify,
name their service, are reused across restarts, and keep their keys private."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509

from genmesh import meshtls
from genmesh.settings import Settings


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_service_certificates_are_signed_by_the_mesh_ca_and_name_their_service(tmp_path: Path) -> None:
    certs = meshtls.ensure(tmp_path / "tls", ["router", "echo"])
    ca = _cert(certs["router"].ca_file)
    for name, files in certs.items():
        cert = _cert(files.cert_file)
        cert.verify_directly_issued_by(ca)  # raises when the signature does not verify
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert f"{name}.genmesh.internal" in sans.get_values_for_type(x509.DNSName)
        assert "localhost" in sans.get_values_for_type(x509.DNSName)
        assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)][0] == "127.0.0.1"
        assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == name
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_keys_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    meshtls.ensure(tls, ["billing"])
    for key in ("ca.key", "billing.key"):
        assert stat.S_IMODE((tls / key).stat().st_mode) == 0o600
    assert stat.S_IMODE(tls.stat().st_mode) == 0o700


def test_a_restart_reuses_the_ca_and_certificates_and_adds_missing_ones(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    meshtls.ensure(tls, ["router"])
    before = {p.name: p.read_bytes() for p in tls.iterdir() if p.suffix in (".crt", ".key")}
    meshtls.ensure(tls, ["router", "llm"])
    after = {p.name: p.read_bytes() for p in tls.iterdir() if p.suffix in (".crt", ".key")}
    assert {k: after[k] for k in before} == before
    _cert(tls / "llm.crt").verify_directly_issued_by(_cert(tls / "ca.crt"))


def test_a_certificate_from_another_ca_is_reissued(tmp_path: Path) -> None:
    mine, other = tmp_path / "mine", tmp_path / "other"
    meshtls.ensure(mine, ["echo"])
    meshtls.ensure(other, ["echo"])
    (mine / "echo.crt").write_bytes((other / "echo.crt").read_bytes())
    (mine / "echo.key").write_bytes((other / "echo.key").read_bytes())
    meshtls.ensure(mine, ["echo"])
    _cert(mine / "echo.crt").verify_directly_issued_by(_cert(mine / "ca.crt"))


def test_a_service_without_certificates_refuses_to_start_unless_plaintext_is_chosen(tmp_path: Path) -> None:
    with pytest.raises(meshtls.MeshTlsNotConfigured, match="GENMESH_TLS_CA_FILE"):
        meshtls.load(Settings(data_dir=tmp_path), "echo")
    with pytest.raises(meshtls.MeshTlsNotConfigured, match="not only some"):
        meshtls.load(Settings(data_dir=tmp_path, tls_ca_file=tmp_path / "ca.crt"), "echo")
    assert meshtls.load(Settings(data_dir=tmp_path, insecure_mesh=True), "echo") is None
    files = meshtls.ensure(tmp_path / "tls", ["echo"])["echo"]
    loaded = meshtls.load(Settings(data_dir=tmp_path, tls_ca_file=files.ca_file, tls_cert_file=files.cert_file,
                                   tls_key_file=files.key_file), "echo")
    assert loaded is not None and loaded.cert == files.cert_file.read_bytes()


def test_only_billing_admits_callers_beyond_the_router() -> None:
    assert meshtls.allowed_callers("echo") == {"router"}
    assert meshtls.allowed_callers("apps") == {"router"}
    assert meshtls.allowed_callers("billing") == {"router", "edge"}
