"""The front's TLS: a private CA and leaf certificate (self-signed mode) or ACME settings.

Self-signed: pulumi-tls makes a long-lived CA and a leaf for every registry hostname,
renewed `certEarlyRenewalDays` before it expires (the next `pulumi up` inside that window
replaces it). The CA stays, so hosts that trust it keep trusting the renewed leaf.

ACME (Let's Encrypt staging or production, or any ACME directory): the front obtains and
renews certificates itself and keeps them on its persistent data volume; this component
creates no resources and only carries the mode to the front.

It takes `TlsArgs` (components/args.py), validated before anything is created. No
`from __future__ import annotations`: Pulumi's component host reads the annotations at runtime.
"""

from dataclasses import dataclass

import pulumi
import pulumi_tls as tls

from .args import TlsArgs, TlsMode
from .config_schema import ConfigError, key

CA_VALIDITY_HOURS = 10 * 365 * 24


class Tls(pulumi.ComponentResource):
    """Certificates for the front's hostnames.

    Outputs: `ca_cert_pem` (None in ACME modes), `cert_pem`, `private_key_pem` (secret).
    """

    ca_cert_pem: pulumi.Output[str] | None
    """PEM of the private CA clients must trust (self-signed mode); none in the ACME modes."""
    cert_pem: pulumi.Output[str] | None
    """PEM of the leaf certificate for the hostnames (self-signed mode)."""
    private_key_pem: pulumi.Output[str] | None
    """PEM of the leaf certificate's private key, a secret (self-signed mode)."""

    def __init__(self, name: str, args: TlsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        plan = _validated(args)  # before anything registers
        super().__init__("registry-stack:index:Tls", name, {}, opts)
        self.ca_cert_pem = None
        self.cert_pem = None
        self.private_key_pem = None
        if plan.mode == TlsMode.SELF_SIGNED and plan.hostnames:
            self._make_self_signed(name, plan)
        self.register_outputs({"caCertPem": self.ca_cert_pem, "certPem": self.cert_pem})

    def _make_self_signed(self, name: str, plan: "_TlsPlan") -> None:
        child = pulumi.ResourceOptions(parent=self)
        ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        ca_cert = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=ca_key.private_key_pem,
            is_ca_certificate=True,
            validity_period_hours=CA_VALIDITY_HOURS,
            allowed_uses=["cert_signing", "crl_signing", "digital_signature"],
            subject=tls.SelfSignedCertSubjectArgs(
                common_name=plan.ca_common_name,
                organization="registry-stack",
            ),
            opts=child,
        )
        leaf_key = tls.PrivateKey(f"{name}-leaf-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        request = tls.CertRequest(
            f"{name}-leaf-request",
            private_key_pem=leaf_key.private_key_pem,
            dns_names=list(plan.hostnames),
            subject=tls.CertRequestSubjectArgs(common_name=plan.hostnames[0], organization="registry-stack"),
            opts=child,
        )
        leaf = tls.LocallySignedCert(
            f"{name}-leaf",
            cert_request_pem=request.cert_request_pem,
            ca_private_key_pem=ca_key.private_key_pem,
            ca_cert_pem=ca_cert.cert_pem,
            validity_period_hours=plan.validity_days * 24,
            early_renewal_hours=plan.early_renewal_days * 24,
            allowed_uses=["digital_signature", "key_encipherment", "server_auth"],
            opts=child,
        )
        self.ca_cert_pem = ca_cert.cert_pem
        self.cert_pem = leaf.cert_pem
        # The provider marks private keys secret; say so here too, so the front's upload of
        # the key is secret whatever the provider (or a test mock) reports.
        self.private_key_pem = pulumi.Output.secret(leaf_key.private_key_pem)


@dataclass(frozen=True)
class _TlsPlan:
    """TlsArgs, validated: plain values with their defaults."""

    mode: TlsMode
    hostnames: tuple[str, ...]
    ca_common_name: str
    validity_days: int
    early_renewal_days: int


def _validated(args: TlsArgs) -> _TlsPlan:
    """The same checks and messages as the stack's config (config_schema.py) for the shared keys."""
    for field, value in args.items():
        if isinstance(value, pulumi.Output):
            raise ConfigError(f"Tls {field}: expected a plain value, not an Output (it is checked before anything "
                              "is created)")
    mode_text = args.get("tlsMode", TlsMode.SELF_SIGNED)
    modes = [m.value for m in TlsMode]
    mode_value = mode_text.value if isinstance(mode_text, TlsMode) else mode_text
    if mode_value not in modes:
        raise key("tlsMode").invalid(mode_value, f"expected one of {', '.join(modes)}")
    hostnames = args.get("hostnames", [])
    if isinstance(hostnames, str) or not all(isinstance(h, str) and h for h in hostnames):  # type: ignore[union-attr]
        raise ConfigError(f"Tls hostnames={hostnames!r} is invalid: expected a list of DNS names")
    validity = key("certValidityDays").coerce(args.get("certValidityDays"))
    early = key("certEarlyRenewalDays").coerce(args.get("certEarlyRenewalDays"))
    if early >= validity:
        raise ConfigError(
            f"{key('certEarlyRenewalDays').ref}={early} must be smaller than "
            f"certValidityDays={validity}: otherwise every run would renew the certificate"
        )
    return _TlsPlan(
        mode=TlsMode(mode_value),
        hostnames=tuple(hostnames),  # type: ignore[arg-type]
        ca_common_name=str(args.get("caCommonName", "registry-stack CA")),
        validity_days=validity,
        early_renewal_days=early,
    )
