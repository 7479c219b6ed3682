"""The test bed's PKI: serving certs carry the loopback and in-cluster names, the admin client
cert is in system:masters, everything chains to the CA, and kubeconfigs embed the certs."""

from __future__ import annotations

import base64
import ipaddress

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from api.testbed.cluster import render_kubeconfig
from api.testbed.pki import CertificateAuthority, ServiceAccountKeys


def test_serving_cert_names_loopback_in_cluster_and_extra_names() -> None:
    ca = CertificateAuthority.generate()
    pair = ca.issue_serving(
        "kube-apiserver", dns_names=["vcluster.acme--dev.svc"], ip_addresses=["10.0.0.1"]
    )
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {
        "localhost",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "vcluster.acme--dev.svc",
    } <= set(san.get_values_for_type(x509.DNSName))
    assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.0.0.1")} <= set(
        san.get_values_for_type(x509.IPAddress)
    )
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage


def test_admin_client_cert_is_in_system_masters_and_signed_by_the_ca() -> None:
    ca = CertificateAuthority.generate()
    cert = x509.load_pem_x509_certificate(ca.issue_admin().cert_pem)
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["system:masters"]
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    cert.verify_directly_issued_by(ca_cert)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage


def test_service_account_keys_are_a_matching_pair() -> None:
    keys = ServiceAccountKeys.generate()
    private = serialization.load_pem_private_key(keys.private_pem, password=None)
    public = serialization.load_pem_public_key(keys.public_pem)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.public_key().public_numbers() == public.public_numbers()  # type: ignore[union-attr]


def test_kubeconfig_embeds_every_certificate() -> None:
    ca = CertificateAuthority.generate()
    admin = ca.issue_admin()
    config = yaml.safe_load(
        render_kubeconfig(
            server="https://127.0.0.1:6443", ca_pem=ca.cert_pem, client=admin, name="t"
        )
    )
    cluster = config["clusters"][0]["cluster"]
    user = config["users"][0]["user"]
    assert cluster["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == ca.cert_pem
    assert base64.b64decode(user["client-certificate-data"]) == admin.cert_pem
    assert base64.b64decode(user["client-key-data"]) == admin.key_pem
    assert config["current-context"] == "t"
