"""registry_verify (scripts/verify) against a fake registry front on 127.0.0.1, and the
program's outputs it relies on.

The fake serves both registry names over TLS with a certificate from its own CA, for names
under `.test` that no resolver knows: a run can only pass through `--resolve`/`--address`,
with the name in SNI and Host. The e2e suite runs verify against the real stack.
"""

from __future__ import annotations

import base64
import datetime
import http.server
import io
import json
import os
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import registry_verify
from tests.harness import SecretValue, declare

ROOT = Path(__file__).resolve().parent.parent
BUILD_HOST = "docker-build.verify.test"
CACHE_HOST = "docker-cache.verify.test"
GHCR_HOST = "ghcr-cache.verify.test"
USER, PASSWORD = "ci", "Verify-Pa55word-q81z"
DIGEST = "sha256:" + "ab" * 32


# ---------------------------------------------------------------------------------------
# A CA and a leaf for the fake's names
# ---------------------------------------------------------------------------------------


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _certificate(subject: str, issuer: x509.Name, key: Any, signer: Any, names: list[str], ca: bool):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    return builder.sign(signer, hashes.SHA256())


@dataclass(frozen=True)
class Pki:
    ca_pem: str
    cert_file: Path
    key_file: Path


def make_pki(folder: Path, names: list[str]) -> Pki:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "verify test CA")])
    ca = _certificate("verify test CA", ca_name, ca_key, ca_key, [], ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _certificate(names[0], ca.subject, leaf_key, ca_key, names, ca=False)
    cert_file, key_file = folder / "leaf.pem", folder / "leaf.key"
    cert_file.write_text(_pem(leaf))
    key_file.write_bytes(leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    return Pki(_pem(ca), cert_file, key_file)


# ---------------------------------------------------------------------------------------
# The fake front: both registries by Host, the answers the real stack gives
# ---------------------------------------------------------------------------------------


@dataclass
class Behaviour:
    """What the fake gets wrong on purpose."""

    build_open: bool = False  # /v2/ answers 200 without credentials
    cache_accepts_push: bool = False
    build_catalog: list[str] = field(default_factory=lambda: ["empty/repo", "team/app"])


class FakeFront(http.server.BaseHTTPRequestHandler):
    behaviour: ClassVar[Behaviour] = Behaviour()
    seen_hosts: ClassVar[list[str]] = []

    def log_message(self, *args: Any) -> None:  # keep pytest's output clean
        pass

    def _answer(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, code: str, headers: dict[str, str] | None = None) -> None:
        self._answer(status, {"errors": [{"code": code, "message": code.lower(), "detail": None}]}, headers)

    def _route(self) -> None:
        host = (self.headers.get("Host") or "").split(":")[0]
        self.seen_hosts.append(host)
        if host == BUILD_HOST:
            self._build()
        elif host in (CACHE_HOST, GHCR_HOST):
            self._cache()
        else:
            self._error(404, "NAME_UNKNOWN")

    do_GET = do_HEAD = do_POST = _route  # noqa: N815 (http.server's names)

    def _authorized(self) -> bool:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        return self.headers.get("Authorization") == expected

    def _build(self) -> None:
        if not (self._authorized() or (self.behaviour.build_open and self.path == "/v2/")):
            self._error(401, "UNAUTHORIZED", {"WWW-Authenticate": 'Basic realm="registry"'})
            return
        self._read(self.behaviour.build_catalog, {"team/app": ["1.0", "latest"]})

    def _cache(self) -> None:
        if self.command == "POST":
            if self.behaviour.cache_accepts_push:
                self._answer(202, headers={"Location": "/v2/x/blobs/uploads/1"})
            else:
                self._error(405, "UNSUPPORTED")
            return
        self._read(["library/alpine"], {"library/alpine": ["3.18"]})

    def _read(self, catalog: list[str], tags: dict[str, list[str]]) -> None:
        path = self.path.split("?")[0]
        if path == "/v2/":
            self._answer(200, {})
        elif path == "/v2/_catalog":
            self._answer(200, {"repositories": catalog})
        elif path.endswith("/tags/list"):
            name = path[len("/v2/"):-len("/tags/list")]
            self._answer(200, {"name": name, "tags": tags.get(name)})
        elif "/manifests/" in path:
            name, _, tag = path[len("/v2/"):].partition("/manifests/")
            if tag in tags.get(name, []):
                self._answer(200, {}, {"Docker-Content-Digest": DIGEST})
            else:
                self._error(404, "MANIFEST_UNKNOWN")
        else:
            self._error(404, "NOT_FOUND")


@dataclass
class Fake:
    port: int
    pki: Pki
    sni: list[str]
    folder: Path

    def outputs(self, **overrides: Any) -> dict[str, Any]:
        outputs = {
            "buildUrl": f"https://{BUILD_HOST}:{self.port}",
            "cacheUrl": f"https://{CACHE_HOST}:{self.port}",
            "caCertPem": self.pki.ca_pem,
            "dockerLogin": f"docker login {BUILD_HOST}:{self.port} -u {USER}",
            "hostnames": [BUILD_HOST, CACHE_HOST],
        }
        outputs.update(overrides)
        return outputs

    def resolve_args(self) -> list[str]:
        return [f"--resolve={host}:{self.port}:127.0.0.1" for host in (BUILD_HOST, CACHE_HOST, GHCR_HOST)]


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Fake]:
    pki = make_pki(tmp_path, [BUILD_HOST, CACHE_HOST, GHCR_HOST])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    sni: list[str] = []
    context.sni_callback = lambda _sock, name, _ctx: sni.append(name or "")  # type: ignore[assignment,misc,return-value]
    FakeFront.behaviour = Behaviour()
    FakeFront.seen_hosts = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeFront)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Fake(server.server_address[1], pki, sni, tmp_path)
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Run:
    code: int
    out: str

    def lines(self, status: str) -> list[str]:
        return [line for line in self.out.splitlines() if line.startswith(status)]

    def status_of(self, role: str, check: str) -> str:
        for line in self.out.splitlines():
            parts = line.split(None, 2)
            if len(parts) == 3 and parts[1] == role and parts[2].startswith(f"{check}:"):
                return parts[0]
        raise AssertionError(f"no line for {role} {check}:\n{self.out}")


class NotATerminal(io.StringIO):
    def isatty(self) -> bool:
        return False


def verify(fake: Fake, *args: str, outputs: dict[str, Any] | None = None, password: str | None = PASSWORD) -> Run:
    path = fake.folder / "outputs.json"
    path.write_text(json.dumps(outputs if outputs is not None else fake.outputs()))
    environ = {registry_verify.PASSWORD_ENV: password} if password is not None else {}
    out = io.StringIO()
    code = registry_verify.main(["--outputs", str(path), "--timeout", "10", *args], environ, NotATerminal(), out)
    return Run(code, out.getvalue())


# ---------------------------------------------------------------------------------------
# Checks against the fake
# ---------------------------------------------------------------------------------------


def test_a_healthy_stack_passes_every_check_through_resolve(fake: Fake) -> None:
    run = verify(fake, *fake.resolve_args())
    assert run.code == 0, run.out
    assert not run.lines("FAIL") and not run.lines("SKIP"), run.out
    assert len(run.lines("PASS")) == 13  # TLS + 6 build checks + TLS + 5 cache checks
    # The names, unknown to any resolver, travelled in SNI and Host.
    assert set(fake.sni) == {BUILD_HOST, CACHE_HOST}
    assert set(FakeFront.seen_hosts) == {BUILD_HOST, CACHE_HOST}
    # The first repository with a tag is the one looked at; empty ones are passed over.
    assert "team/app:1.0 is " + DIGEST in run.out
    assert "library/alpine:3.18 is " + DIGEST in run.out
    assert PASSWORD not in run.out
    assert run.out.rstrip().endswith("verify: PASS (13 PASS, 0 FAIL, 0 SKIP)")


def test_address_sends_every_name_to_one_address(fake: Fake) -> None:
    run = verify(fake, "--address", "127.0.0.1", "--image", "build=team/app:latest")
    assert run.code == 0, run.out
    assert "team/app:latest is " in run.out


def test_without_resolve_the_unknown_names_fail_to_connect(fake: Fake) -> None:
    run = verify(fake)
    assert run.code == 1
    assert run.status_of("build", "TLS") == "FAIL" and run.status_of("cache", "TLS") == "FAIL"
    assert run.status_of("build", "tags") == "SKIP"  # not run: TLS failed


def test_wrong_password_fails_the_authenticated_checks_only(fake: Fake) -> None:
    wrong = "not-the-Pa55word"
    run = verify(fake, *fake.resolve_args(), password=wrong)
    assert run.code == 1
    assert run.status_of("build", "/v2/ as the user") == "FAIL"
    assert run.status_of("build", "/v2/_catalog") == "FAIL"
    assert run.status_of("build", "/v2/ without credentials") == "PASS"
    assert run.status_of("build", "push without credentials") == "PASS"
    assert all(run.status_of("cache", check) == "PASS" for check in ("/v2/_catalog", "manifest", "push"))
    assert "'ci' or the password is wrong" in run.out
    assert wrong not in run.out


def test_no_password_and_no_terminal_fails_with_the_fix(fake: Fake) -> None:
    run = verify(fake, *fake.resolve_args(), password=None)
    assert run.code == 1
    assert run.status_of("build", "/v2/ as the user") == "FAIL"
    assert registry_verify.PASSWORD_ENV in run.out


def test_the_user_option_overrides_the_login_output(fake: Fake) -> None:
    run = verify(fake, *fake.resolve_args(), "--user", "someone-else")
    assert run.status_of("build", "/v2/ as the user") == "FAIL"
    assert "'someone-else'" in run.out


def test_an_untrusted_certificate_fails_tls_and_says_which_ca(fake: Fake) -> None:
    # Without caCertPem, verify trusts the system store, which does not know the fake's CA.
    run = verify(fake, *fake.resolve_args(), outputs=fake.outputs(caCertPem=None))
    assert run.code == 1
    assert run.status_of("build", "TLS") == "FAIL"
    assert "the system trust store" in run.out and "caCertPem" in run.out
    assert run.status_of("cache", "push") == "SKIP"


def test_ca_file_replaces_the_stack_ca(fake: Fake) -> None:
    ca_file = fake.folder / "ca.pem"
    ca_file.write_text(fake.pki.ca_pem)
    run = verify(fake, *fake.resolve_args(), "--ca-file", str(ca_file), outputs=fake.outputs(caCertPem=None))
    assert run.code == 0, run.out
    assert f"verified against the CA file {ca_file}" in run.out


def test_an_open_build_registry_and_a_writable_cache_fail(fake: Fake) -> None:
    FakeFront.behaviour = Behaviour(build_open=True, cache_accepts_push=True)
    run = verify(fake, *fake.resolve_args())
    assert run.code == 1
    assert run.status_of("build", "/v2/ without credentials") == "FAIL"
    assert run.status_of("cache", "push") == "FAIL"
    assert "HTTP 202, expected 405 UNSUPPORTED" in run.out


def test_an_empty_catalog_skips_tags_and_manifest_without_failing(fake: Fake) -> None:
    FakeFront.behaviour = Behaviour(build_catalog=[])
    run = verify(fake, *fake.resolve_args())
    assert run.code == 0, run.out
    assert run.status_of("build", "tags") == "SKIP" and run.status_of("build", "manifest") == "SKIP"


def test_a_named_image_that_is_missing_fails(fake: Fake) -> None:
    run = verify(fake, *fake.resolve_args(), "--image", "cache=library/alpine:9.9")
    assert run.code == 1
    assert run.status_of("cache", "tags") == "FAIL"


def test_every_cache_of_cache_urls_is_checked(fake: Fake) -> None:
    caches = {"docker": f"https://{CACHE_HOST}:{fake.port}", "ghcr": f"https://{GHCR_HOST}:{fake.port}"}
    run = verify(fake, *fake.resolve_args(), outputs=fake.outputs(cacheUrls=caches))
    assert run.code == 0, run.out
    for role in ("cache", "ghcr-cache"):
        assert run.status_of(role, "TLS") == "PASS" and run.status_of(role, "push") == "PASS"
    assert GHCR_HOST in FakeFront.seen_hosts


@pytest.mark.parametrize("spec", ["team/app:1.0", "nosuch=team/app", "build="])
def test_a_bad_image_option_is_a_usage_error(fake: Fake, capsys: pytest.CaptureFixture[str], spec: str) -> None:
    assert verify(fake, "--image", spec).code == 2
    assert "ROLE=REPO[:TAG] with ROLE one of build, cache" in capsys.readouterr().err


def test_only_the_registries_that_exist_are_checked(fake: Fake) -> None:
    run = verify(fake, *fake.resolve_args(), outputs=fake.outputs(buildUrl="", dockerLogin=""))
    assert run.code == 0, run.out
    assert " build " not in run.out
    assert run.status_of("cache", "push") == "PASS"


# ---------------------------------------------------------------------------------------
# Reading the outputs; the command-line wrapper
# ---------------------------------------------------------------------------------------


def test_stack_outputs_come_from_the_pulumi_cli(fake: Fake, tmp_path: Path) -> None:
    """`--stack` runs `pulumi stack output --json --stack NAME` in the project folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "stack-outputs.json").write_text(json.dumps(fake.outputs()))
    fake_pulumi = bin_dir / "pulumi"
    fake_pulumi.write_text(
        "#!/bin/sh\n"
        f'echo "$PWD $*" > {tmp_path}/pulumi-args\n'
        f"cat {tmp_path}/stack-outputs.json\n"
    )
    fake_pulumi.chmod(fake_pulumi.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", registry_verify.PASSWORD_ENV: PASSWORD}
    result = subprocess.run(
        [str(ROOT / "scripts" / "verify"), "--stack", "dev", *fake.resolve_args()],
        capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120, check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "pulumi-args").read_text().split() == [str(ROOT), "stack", "output", "--json", "--stack", "dev"]
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ({"cacheUrl": ""}, "no buildUrl"),
        ({"buildUrl": "[secret]", "cacheUrl": ""}, "is a secret"),
        ({"buildUrl": "", "cacheUrl": "", "cacheUrls": {"ghcr": "ghcr-cache.x"}}, "cacheUrls.ghcr='ghcr-cache.x'"),
        ({"buildUrl": "http://docker-build.x", "cacheUrl": ""}, "not an https URL"),
    ],
)
def test_unusable_outputs_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], outputs, message) -> None:
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    assert registry_verify.main(["--outputs", str(path)], {}, NotATerminal(), io.StringIO()) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("spec", ["docker-build.x:443", "docker-build.x:https:10.0.0.5", ":443:10.0.0.5"])
def test_a_bad_resolve_is_a_usage_error(spec: str) -> None:
    with pytest.raises(registry_verify.UsageError, match="HOST:PORT:ADDRESS"):
        registry_verify.parse_resolve(spec)


def test_resolve_takes_bracketed_ipv6_and_matches_host_and_port() -> None:
    resolves = [registry_verify.parse_resolve("Docker-Build.X:8443:[::1]")]
    build = registry_verify.Registry("build", "https://docker-build.x:8443")
    other_port = registry_verify.Registry("build", "https://docker-build.x")
    assert registry_verify.connect_address(build, resolves, "") == "::1"
    assert registry_verify.connect_address(other_port, resolves, "192.0.2.1") == "192.0.2.1"


def test_the_password_never_shows_in_a_repr() -> None:
    assert PASSWORD not in repr(registry_verify.Credentials(USER, PASSWORD))


def test_scripts_verify_runs_with_a_bare_python(tmp_path: Path) -> None:
    """The wrapper needs no virtualenv: registry_verify uses the standard library only."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "verify"), "--help"], capture_output=True, text=True, check=False,
        env={**os.environ, "REGISTRY_STACK_PYTHON": sys.executable, "PYTHONPATH": ""}, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "--resolve HOST:PORT:ADDRESS" in result.stdout
    source = "".join(path.read_text() for path in (ROOT / "tools" / "registry_verify").glob("*.py"))
    imported = {line.split()[1].split(".")[0] for line in source.splitlines() if line.startswith(("import ", "from "))}
    allowed = set(sys.stdlib_module_names) | {"__future__", "registry_verify"}
    assert imported <= allowed, imported - allowed


# ---------------------------------------------------------------------------------------
# The outputs a user copies (and verify reads) need no --show-secrets
# ---------------------------------------------------------------------------------------

SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----\n"


@pytest.mark.parametrize("stack", ["dev", "stage", "prod"])
def test_no_output_is_a_secret_even_with_every_secret_set(stack: str) -> None:
    domain = f"{stack}.internal.network"
    values = {
        "domain": domain,
        "tlsMode": "self-signed" if stack == "dev" else "letsencrypt",
        "acmeEmail": "ops@example.com",
        "users": [f"ci:{PASSWORD}"],
        "upstreamCredentials": ["docker=robot:upstream-token-5h2k"],
        "mirrorHosts": ["local", "ssh://root@node1.example?etcHosts=10.0.0.5&insecureIgnoreHostKey=true"],
        "mirrorSshPrivateKey": SSH_KEY,
    }
    declaration = declare(values, secret_keys=("users", "upstreamCredentials", "mirrorSshPrivateKey"), stack=stack)
    secret = sorted(key for key, value in declaration.outputs.items() if _holds_secret(value))
    assert secret == [], f"outputs {secret} would need --show-secrets"
    for key in ("buildUrl", "cacheUrl", "caCertPem", "daemonJson", "dockerLogin", "hostsLine"):
        assert key in declaration.outputs, key
    assert declaration.outputs["dockerLogin"] == f"docker login docker-build.{domain} -u ci"
    assert (declaration.outputs["caCertPem"] is None) == (stack != "dev")


def _holds_secret(value: Any) -> bool:
    if isinstance(value, SecretValue):
        return True
    if isinstance(value, dict):
        return any(_holds_secret(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_secret(v) for v in value)
    return False
