"""Certificates and keys for the test bed's API servers: a CA, serving and client certs, and
the service-account signing key pair. Pure: it returns PEM bytes and writes nothing itself.

ECDSA P-256 everywhere (fast to generate, accepted by etcd, kube-apiserver and Go clients).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Names an in-cluster client uses for the API server (``kubernetes.default.svc`` etc.).
IN_CLUSTER_NAMES: tuple[str, ...] = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
#: Loopback names every test bed serving cert carries.
LOCAL_NAMES: tuple[str, ...] = ("localhost",)
LOCAL_IPS: tuple[str, ...] = ("127.0.0.1",)

_VALIDITY = datetime.timedelta(days=365)
# Certificates start an hour in the past: clocks of freshly started processes may disagree.
_BACKDATE = datetime.timedelta(hours=1)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


@dataclass(frozen=True)
class CertKey:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write ``<stem>.crt`` and ``<stem>.key`` (mode 0600) into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert.write_bytes(self.cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(self.key_pem)
        return cert, key


@dataclass(frozen=True)
class CertificateAuthority:
    """A self-signed CA that issues the test bed's serving and client certificates."""

    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def load_or_generate(cls, directory: Path, common_name: str) -> CertificateAuthority:
        """The CA stored in ``directory`` (ca.crt, ca.key), or a new one written there."""
        cert, key = directory / "ca.crt", directory / "ca.key"
        if cert.is_file() and key.is_file():
            return cls(cert.read_bytes(), key.read_bytes())
        ca = cls.generate(common_name)
        CertKey(ca.cert_pem, ca.key_pem).write(directory, "ca")
        return ca

    @classmethod
    def generate(cls, common_name: str = "hexabase-testbed-ca") -> CertificateAuthority:
        key = _new_key()
        now = datetime.datetime.now(datetime.UTC)
        name = _name(common_name)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def _issue(
        self,
        subject: x509.Name,
        usage: x509.ObjectIdentifier,
        sans: Sequence[x509.GeneralName] = (),
    ) -> CertKey:
        ca_cert = x509.load_pem_x509_certificate(self.cert_pem)
        ca_key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise TypeError("the CA key is not an EC key")
        key = _new_key()
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return CertKey(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def issue_serving(
        self,
        common_name: str,
        *,
        dns_names: Iterable[str] = (),
        ip_addresses: Iterable[str] = (),
    ) -> CertKey:
        """A server certificate for 127.0.0.1, localhost, the in-cluster names, and more."""
        dns = list(dict.fromkeys([*LOCAL_NAMES, *IN_CLUSTER_NAMES, *dns_names]))
        ips = list(dict.fromkeys([*LOCAL_IPS, *ip_addresses]))
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        return self._issue(_name(common_name), ExtendedKeyUsageOID.SERVER_AUTH, sans)

    def issue_client(self, common_name: str, *, organizations: Iterable[str] = ()) -> CertKey:
        """A client certificate: Kubernetes reads CN as the user, O as the groups."""
        return self._issue(_name(common_name, organizations), ExtendedKeyUsageOID.CLIENT_AUTH)

    def issue_admin(self) -> CertKey:
        """A cluster-admin client certificate (group ``system:masters``)."""
        return self.issue_client("hexabase-testbed-admin", organizations=["system:masters"])


@dataclass(frozen=True)
class ServiceAccountKeys:
    """The key pair kube-apiserver signs (and kube-controller-manager issues) SA tokens with."""

    private_pem: bytes
    public_pem: bytes

    @classmethod
    def load_or_generate(cls, directory: Path, stem: str = "sa") -> ServiceAccountKeys:
        """The pair stored in ``directory``, or a new one written there."""
        private, public = directory / f"{stem}.key", directory / f"{stem}.pub"
        if private.is_file() and public.is_file():
            return cls(private.read_bytes(), public.read_bytes())
        keys = cls.generate()
        keys.write(directory, stem)
        return keys

    @classmethod
    def generate(cls) -> ServiceAccountKeys:
        key = _new_key()
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(_key_pem(key), public)

    def write(self, directory: Path, stem: str = "sa") -> tuple[Path, Path]:
        """Write ``<stem>.key`` (0600) and ``<stem>.pub``; return (private, public)."""
        directory.mkdir(parents=True, exist_ok=True)
        private, public = directory / f"{stem}.key", directory / f"{stem}.pub"
        private.touch(mode=0o600)
        private.write_bytes(self.private_pem)
        public.write_bytes(self.public_pem)
        return private, public
