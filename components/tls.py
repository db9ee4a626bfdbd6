"""The front's TLS: a private CA and leaf certificate (self-signed mode) or ACME settings.

Self-signed: pulumi-tls makes a long-lived CA and a leaf for every registry hostname,
renewed `certEarlyRenewalDays` before it expires (the next `pulumi up` inside that window
replaces it). The CA stays, so hosts that trust it keep trusting the renewed leaf.

ACME (Let's Encrypt staging or production, or any ACME directory): the front obtains and
renews certificates itself and keeps them on its persistent data volume; this component
creates no resources and only carries the mode to the front.
"""

from __future__ import annotations

import pulumi
import pulumi_tls as tls

from .settings import Settings

CA_VALIDITY_HOURS = 10 * 365 * 24


class Tls(pulumi.ComponentResource):
    """Certificates for the front's hostnames.

    Outputs: `ca_cert_pem` (None in ACME modes), `cert_pem`, `private_key_pem` (secret).
    """

    ca_cert_pem: pulumi.Output[str] | None
    cert_pem: pulumi.Output[str] | None
    private_key_pem: pulumi.Output[str] | None

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("registry-stack:index:Tls", name, {}, opts)
        self.ca_cert_pem = None
        self.cert_pem = None
        self.private_key_pem = None
        if not settings.tls.is_acme and settings.hostnames:
            self._make_self_signed(name, settings)
        self.register_outputs({"caCertPem": self.ca_cert_pem, "certPem": self.cert_pem})

    def _make_self_signed(self, name: str, settings: Settings) -> None:
        child = pulumi.ResourceOptions(parent=self)
        ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        ca_cert = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=ca_key.private_key_pem,
            is_ca_certificate=True,
            validity_period_hours=CA_VALIDITY_HOURS,
            allowed_uses=["cert_signing", "crl_signing", "digital_signature"],
            subject=tls.SelfSignedCertSubjectArgs(
                common_name=f"registry-stack {settings.stack} CA",
                organization="registry-stack",
            ),
            opts=child,
        )
        leaf_key = tls.PrivateKey(f"{name}-leaf-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        request = tls.CertRequest(
            f"{name}-leaf-request",
            private_key_pem=leaf_key.private_key_pem,
            dns_names=list(settings.hostnames),
            subject=tls.CertRequestSubjectArgs(common_name=settings.hostnames[0], organization="registry-stack"),
            opts=child,
        )
        leaf = tls.LocallySignedCert(
            f"{name}-leaf",
            cert_request_pem=request.cert_request_pem,
            ca_private_key_pem=ca_key.private_key_pem,
            ca_cert_pem=ca_cert.cert_pem,
            validity_period_hours=settings.tls.cert_validity_days * 24,
            early_renewal_hours=settings.tls.cert_early_renewal_days * 24,
            allowed_uses=["digital_signature", "key_encipherment", "server_auth"],
            opts=child,
        )
        self.ca_cert_pem = ca_cert.cert_pem
        self.cert_pem = leaf.cert_pem
        # The provider marks private keys secret; say so here too, so the front's upload of
        # the key is secret whatever the provider (or a test mock) reports.
        self.private_key_pem = pulumi.Output.secret(leaf_key.private_key_pem)
