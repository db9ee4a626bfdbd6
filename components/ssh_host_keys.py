"""The SSH host key a mirror host must present: checked here, verified by pulumi-command.

pulumi-command's `remote.Command` checks the server only when its connection carries
`hostKey` (pulumi/pulumi-command `provider/pkg/provider/remote/connection.go`,
`connectionBase.SSHConfig`): it parses the value with `ssh.ParseAuthorizedKey` (the
authorized_keys form `<type> <base64> [comment]`), verifies the server with
`ssh.FixedHostKey` (the presented key must be byte-for-byte that key) and offers only that
key's algorithm (`HostKeyAlgorithms`). Without `hostKey` it uses
`ssh.InsecureIgnoreHostKey()`: any machine answering at the address gets the CA and the
daemon configuration. A key it cannot parse fails every command on the host, so the
program checks the value before anything is created and hands the provider exactly
`<type> <base64>`.

Accepted on an entry (`?hostKey=`): `ssh-ed25519 AAAA...` (with or without a comment), the
base64 blob alone (the type is read from the blob), or a line of `ssh-keyscan` /
known_hosts (`node1 ssh-ed25519 AAAA...`: the host names are dropped).
"""

from __future__ import annotations

import base64
import binascii

# Plain public key types golang.org/x/crypto/ssh parses and FixedHostKey can compare.
# Certificates (`*-cert-v01@openssh.com`) would need a CertChecker, which pulumi-command
# does not use.
HOST_KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)

HOW_TO_GET_IT = (
    "take it from the host itself (`cat /etc/ssh/ssh_host_ed25519_key.pub` there), or from "
    "`ssh-keyscan -t ed25519 <host>` after comparing its fingerprint (`ssh-keygen -lf -`) "
    "with the one the host shows"
)


class HostKeyError(ValueError):
    """The value is not a public host key pulumi-command can verify; the message says why."""


def normalize_host_key(value: str) -> str:
    """`<type> <base64>` as pulumi-command parses it, from any accepted form of the key."""
    words = value.split()
    if not words:
        raise HostKeyError(f"the host key is empty: {HOW_TO_GET_IT}")
    first = words[0]
    if first.upper().startswith(("SHA256:", "MD5:")):
        raise HostKeyError(
            "this is a fingerprint, but pulumi-command compares the whole key (ssh.FixedHostKey): "
            f"give the public key itself; {HOW_TO_GET_IT}"
        )
    if first.startswith("@"):
        raise HostKeyError(
            f"known_hosts markers ({first}) are not supported: give the host's own public key; {HOW_TO_GET_IT}"
        )
    if "PRIVATE KEY" in value:
        raise HostKeyError("this is a private key: give the host's public key (never its private key)")
    if len(words) >= 3 and first not in HOST_KEY_TYPES and words[1] in HOST_KEY_TYPES:
        words = words[1:]  # a known_hosts / ssh-keyscan line: host names first
    if words[0] in HOST_KEY_TYPES or "-cert-" in words[0] or len(words) > 1:
        key_type, blob_text = words[0], words[1] if len(words) > 1 else ""
    else:
        key_type, blob_text = "", words[0]
    if key_type and key_type not in HOST_KEY_TYPES:
        raise HostKeyError(
            f"key type {key_type!r} cannot be verified by pulumi-command; use one of "
            f"{', '.join(HOST_KEY_TYPES)} (the host's ssh-ed25519 key, usually)"
        )
    blob_type = _blob_type(blob_text)
    if key_type and blob_type != key_type:
        raise HostKeyError(f"the key says {key_type!r} but its base64 body is a {blob_type!r} key")
    if blob_type not in HOST_KEY_TYPES:
        raise HostKeyError(f"the base64 body is a {blob_type!r} key, which pulumi-command cannot verify")
    return f"{blob_type} {blob_text}"


def _blob_type(blob_text: str) -> str:
    """The key type named inside the SSH wire-format blob.

    Every public key blob is a sequence of length-prefixed fields (RFC 4253 6.6: the type
    name, then the key's own fields), so a blob cut short or joined from pieces fails here.
    """
    try:
        blob = base64.b64decode(blob_text, validate=True)
    except (binascii.Error, ValueError):
        blob = b""
    fields = _length_prefixed_fields(blob)
    if fields is None or len(fields) < 2 or not 0 < len(fields[0]) <= 64:
        raise HostKeyError(
            "the key's base64 body is not an SSH public key (was a '+' turned into a space, or the key cut "
            f"short?); {HOW_TO_GET_IT}"
        )
    try:
        return fields[0].decode("ascii")
    except UnicodeDecodeError:
        raise HostKeyError("the key's base64 body is not an SSH public key") from None


def _length_prefixed_fields(blob: bytes) -> list[bytes] | None:
    fields, offset = [], 0
    while offset < len(blob):
        if offset + 4 > len(blob):
            return None
        length = int.from_bytes(blob[offset : offset + 4], "big")
        offset += 4
        if offset + length > len(blob):
            return None
        fields.append(blob[offset : offset + length])
        offset += length
    return fields
