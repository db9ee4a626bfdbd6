"""Point this host's Docker daemon (and optionally containerd) at a registry cache, reversibly.

Sent by the DaemonMirror component to each host over stdin and run there as root:

    python3 - apply  '<json args>'     # make the host use the cache (idempotent)
    python3 - remove '<json args>'     # take back exactly what apply added

Needs only python3 (3.7 or later, standard library). The args (see `Args`) list what to
manage; every path is a parameter, so the tests run this script against temporary folders:

- `daemon_json`: {"path", "mirror"}: the mirror URL is merged into `registry-mirrors`,
  every other key and mirror is kept; a missing file is created; a file that is not valid
  JSON is left untouched and the run fails.
- `files`: [{"path", "content"}]: files that belong to us (the cache's CA, containerd's
  hosts.toml). A file someone else changed after us is left alone on remove.
- `etc_hosts`: {"path", "line"}: `<address> <name>...` lines (one per address, the preferred
  first), each marked with a comment, for hosts without DNS.
- `containerd_config`: {"path", "certs_d"}: containerd's config.toml gets `config_path =
  "<certs_d>"` for its CRI plugin (what kubelet and crictl pull with) when it has none:
  containerd 2.1's default is '', and then CRI pulls read no hosts.toml at all (`ctr
  --hosts-dir` and nerdctl read the folder themselves). A config.toml change is read at start only, so containerd
  is restarted (systemctl, "auto" mode; running containers keep running), else the report
  says to restart it. Removal restores the original bytes and restarts it again.
- `docker_store`: files that only some dockerd image stores read, installed when this
  host's dockerd uses one (see `detect_docker`, asked on every apply):
  `containerd_store_files` (the mirror's CA in certs.d/docker.io/, whose TLS settings moby
  gives `registry-mirrors` with that store) and `hosts_toml` ([{"registry", "cache",
  "path", "content"}]: certs.d/<registry>/hosts.toml, which dockerd 28+ with the
  containerd store reads for ANY registry on every pull, docker.io included, and whose
  `ca` it verifies; the graph-driver store and Docker 26 ignore them). The report's `docker` part says which
  registries this host now pulls through a cache transparently, and why not the others.
- `state_dir`: where the record of what was changed (with the original bytes) is kept.
- `reload`: "auto" (systemctl reload docker, else SIGHUP to dockerd), "none", or
  "pid:<n>" (SIGHUP to that process: for tests).
- `dockerd`: the binary for `dockerd --validate` (Docker 23+; skipped when unsupported).
- `docker_cli`: used in "auto" mode to check that dockerd took the change ("" = don't).
- `settle_seconds`: how long a reload is given when that check is not possible (2 s).
- `machine`: {"hostname", "id"} of the machine a `local` entry means (see `this_machine`):
  the one that ran `pulumi up`. pulumi-command runs a local command's remove on whatever
  machine runs the CLI at that moment, so both apply and remove refuse to run anywhere
  else. The state file records the machine that applied it, for every host.

Safety: every change is planned in memory first, so nothing is written unless every file
can be handled; writes are atomic (temp file + rename) and the original bytes are kept in
the state file; if a write, the reload or the check after it fails, every change of this
run is rolled back. Removal restores the original bytes when nobody edited a file since
our apply, and otherwise removes only our mirror entry / our lines. dockerd reloads its
mirrors only from a file that sets `registry-mirrors`, so when the restored file does not,
removal first has dockerd reload the same config with `"registry-mirrors": []`, then
writes the original bytes. The last line of stdout is a JSON report of what was done.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

STATE_VERSION = 1
HOSTS_MARKER_PREFIX = "# DaemonMirror "
DOCKER_SOCKET = "/var/run/docker.sock"
DOCKER_PID_FILE = "/var/run/docker.pid"
VERIFY_SECONDS = 15.0
NEW_FILE_MODE = 0o644
NEW_DIR_MODE = 0o755


class HostError(Exception):
    """A problem the operator must fix; the message says what and how. Exit status 1."""


# ---------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------


class Args:
    """The JSON the component passes on the command line, checked before anything is read."""

    def __init__(self, raw: dict) -> None:
        self.id = _require_str(raw, "id")
        if not re.match(r"^[A-Za-z0-9._-]{1,100}$", self.id):
            raise HostError("args: id must be letters, digits, '.', '_' or '-'")
        self.state_dir = _absolute(raw.get("state_dir") or "/var/lib/registry-stack", "state_dir")
        self.reload = str(raw.get("reload") or "auto")
        if self.reload not in ("auto", "none") and not re.match(r"^pid:\d+$", self.reload):
            raise HostError("args: reload must be auto, none or pid:<number>")
        self.dockerd = str(raw.get("dockerd", "dockerd"))
        # How long a reload is given when nothing can tell us it is done (see carry_out).
        self.settle_seconds = float(raw.get("settle_seconds", 2.0))
        self.docker_cli = str(raw.get("docker_cli", "docker"))
        self.machine = _machine_arg(raw.get("machine"))
        self.daemon_json: dict | None = None
        if raw.get("daemon_json"):
            self.daemon_json = {
                "path": _absolute(_require_str(raw["daemon_json"], "path"), "daemon_json.path"),
                "mirror": _require_str(raw["daemon_json"], "mirror"),
            }
            if not re.match(r"^https?://[^/\s]+/?$", self.daemon_json["mirror"]):
                raise HostError("args: daemon_json.mirror must be the root URL of the cache")
        self.files = [
            {"path": _absolute(_require_str(f, "path"), "files[].path"), "content": _require_str(f, "content")}
            for f in raw.get("files") or []
        ]
        self.docker_store = _docker_store_arg(raw.get("docker_store"))
        self.containerd_config: dict | None = None
        if raw.get("containerd_config"):
            self.containerd_config = {
                "path": _absolute(_require_str(raw["containerd_config"], "path"), "containerd_config.path"),
                "certs_d": _absolute(_require_str(raw["containerd_config"], "certs_d"), "containerd_config.certs_d"),
            }
        self.etc_hosts: dict | None = None
        if raw.get("etc_hosts"):
            line = _require_str(raw["etc_hosts"], "line").strip()
            if "#" in line or any(len(one.split()) < 2 for one in line.split("\n")):
                raise HostError("args: etc_hosts.line must be '<address> <name>...' lines")
            self.etc_hosts = {"path": _absolute(_require_str(raw["etc_hosts"], "path"), "etc_hosts.path"), "line": line}

    @property
    def hosts_marker(self) -> str:
        return HOSTS_MARKER_PREFIX + self.id

    @property
    def state_path(self) -> str:
        return os.path.join(self.state_dir, "daemon-mirror-" + self.id + ".json")

    @property
    def lock_path(self) -> str:
        # One lock per host, not per stack: two stacks may edit the same daemon.json.
        return os.path.join(self.state_dir, "daemon-mirror.lock")

    def desired_items(self, docker: dict | None = None) -> dict:
        """key -> spec of everything apply must put in place.

        `docker`: what `detect_docker` found; None = every file this host could get (for a
        remove without a state file: only files still holding our content are touched).
        """
        items = {}
        if self.daemon_json:
            items["daemon_json:" + self.daemon_json["path"]] = {
                "kind": "daemon_json", "path": self.daemon_json["path"], "mirror": self.daemon_json["mirror"],
            }
        for entry in self.files + docker_store_files(self.docker_store, docker):
            items["file:" + entry["path"]] = {"kind": "file", "path": entry["path"], "content": entry["content"]}
        if self.containerd_config:
            items["containerd_config:" + self.containerd_config["path"]] = {
                "kind": "containerd_config", "path": self.containerd_config["path"],
                "certs_d": self.containerd_config["certs_d"],
            }
        if self.etc_hosts:
            items["hosts:" + self.etc_hosts["path"]] = {
                "kind": "hosts", "path": self.etc_hosts["path"], "line": self.etc_hosts["line"],
            }
        return items


def _machine_arg(value: object) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(value.get(k, ""), str) for k in ("hostname", "id")):
        raise ValueError('machine must be {"hostname": "...", "id": "..."}')
    if not value.get("hostname") and not value.get("id"):
        raise ValueError("machine names no machine")
    return {"hostname": value.get("hostname", ""), "id": value.get("id", "")}


def _docker_store_arg(value: object) -> dict:
    if not value:
        return {"containerd_store_files": [], "hosts_toml": []}
    if not isinstance(value, dict):
        raise ValueError("docker_store must be an object")
    files = [
        {"path": _absolute(_require_str(f, "path"), "docker_store.containerd_store_files[].path"),
         "content": _require_str(f, "content")}
        for f in value.get("containerd_store_files") or []
    ]
    hosts_toml = [
        {"registry": _require_str(h, "registry"), "cache": _require_str(h, "cache"),
         "path": _absolute(_require_str(h, "path"), "docker_store.hosts_toml[].path"),
         "content": _require_str(h, "content")}
        for h in value.get("hosts_toml") or []
    ]
    return {"containerd_store_files": files, "hosts_toml": hosts_toml}


def _require_str(raw: dict, key: str) -> str:
    value = raw.get(key) if isinstance(raw, dict) else None
    if not isinstance(value, str) or not value:
        raise HostError("args: " + key + " must be a non-empty string")
    return value


def _absolute(path: str, what: str) -> str:
    if not path.startswith("/") or "\n" in path:
        raise HostError("args: " + what + " must be an absolute path")
    return os.path.normpath(path)


# ---------------------------------------------------------------------------------------
# Bytes on disk
# ---------------------------------------------------------------------------------------


def read_bytes(path: str) -> bytes | None:
    """The file's bytes, or None when it does not exist."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except PermissionError:
        raise HostError("cannot read " + path + ": permission denied. " + _ROOT_HINT) from None


def sha256(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def encode_bytes(data: bytes | None) -> dict | None:
    """Original bytes for the state file: as text when they are UTF-8 (readable), else base64."""
    if data is None:
        return None
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def decode_bytes(stored: dict | None) -> bytes | None:
    if stored is None:
        return None
    if "text" in stored:
        return stored["text"].encode("utf-8")
    return base64.b64decode(stored["base64"])


_ROOT_HINT = "Run as root: connect as root, or add ?sudo=true to the host's mirrorHosts entry"


def write_atomically(path: str, data: bytes) -> None:
    """Temp file in the same folder + rename: readers see the old or the new bytes, never half.

    Keeps the mode and owner of the file it replaces; follows a symlink to its target.
    """
    target = os.path.realpath(path)
    folder = os.path.dirname(target)
    try:
        previous = os.stat(target)
    except FileNotFoundError:
        previous = None
    handle, temp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp, (previous.st_mode & 0o7777) if previous else NEW_FILE_MODE)
        if previous is not None:
            with contextlib.suppress(PermissionError):
                os.chown(temp, previous.st_uid, previous.st_gid)
        try:
            os.replace(temp, target)
        except OSError as error:
            # A bind-mounted file (/etc/hosts in a container) cannot be renamed over.
            if error.errno not in (errno.EBUSY, errno.EXDEV):
                raise
            os.unlink(temp)
            with open(target, "r+b") as stream:
                stream.truncate(0)
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            return
        _fsync_folder(folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def _fsync_folder(folder: str) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def missing_folders(path: str) -> list:
    """Parent folders of path that do not exist yet, outermost first."""
    folders: list = []
    folder = os.path.dirname(path)
    while folder and folder != "/" and not os.path.isdir(folder):
        folders.insert(0, folder)
        folder = os.path.dirname(folder)
    return folders


# ---------------------------------------------------------------------------------------
# daemon.json
# ---------------------------------------------------------------------------------------


def parse_daemon_json(path: str, data: bytes | None) -> dict:
    """The config as a dict ({} for a missing or blank file); HostError when it is not usable."""
    if data is None or not data.strip():
        return {}
    try:
        config = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise HostError(
            path + " is not valid JSON (" + str(error) + "). It was left untouched: fix or remove it "
            "(dockerd itself refuses to start with it), then run pulumi up again"
        ) from None
    if not isinstance(config, dict):
        raise HostError(path + " must hold a JSON object ({...}). It was left untouched: fix it, then run again")
    mirrors = config.get("registry-mirrors", [])
    if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
        raise HostError(
            path + ': "registry-mirrors" must be a list of URLs. It was left untouched: fix it, then run again'
        )
    return config


def same_mirror(a: str, b: str) -> bool:
    """dockerd treats https://host:port and https://host:port/ as one mirror."""
    return a.rstrip("/").lower() == b.rstrip("/").lower()


def render_daemon_json(config: dict, previous: bytes | None) -> bytes:
    """JSON with the indentation the file already used (2 spaces for a new file)."""
    indent = "  "
    if previous:
        match = re.search(rb'^\{\s*?\n([ \t]+)"', previous)
        if match:
            indent = match.group(1).decode()
    return (json.dumps(config, indent=indent, ensure_ascii=False) + "\n").encode("utf-8")


def interim_daemon_json(final: bytes | None) -> bytes | None:
    """What dockerd must read before `final` when `final` no longer sets registry-mirrors.

    dockerd's reload only touches the mirrors when the file sets the key
    (`IsValueSet("registry-mirrors")`): after a reload of a file without it (or of no
    file) the daemon keeps our mirror until it restarts. So removal first writes the final
    config with the key set, reloads, and only then writes the final bytes; the daemon
    runs with the same mirrors either way, so that last write needs no reload.
    """
    try:
        config = json.loads(final.decode("utf-8")) if final and final.strip() else {}
    except ValueError:
        return None
    if not isinstance(config, dict) or "registry-mirrors" in config:
        return None
    config["registry-mirrors"] = []
    return render_daemon_json(config, final)


def apply_daemon_json(spec: dict, current: bytes | None, record: dict | None) -> tuple:
    """(new bytes, record) with spec's mirror in registry-mirrors; record None = first apply."""
    config = parse_daemon_json(spec["path"], current)
    mirrors = list(config.get("registry-mirrors", []))
    present = any(same_mirror(m, spec["mirror"]) for m in mirrors)
    if record is None:
        record = new_record(spec, current)
        record.update({"mirror": spec["mirror"], "added_mirror": not present,
                       "added_key": "registry-mirrors" not in config})
    else:
        record = dict(record, restorable=record["restorable"] and sha256(current) == record["written_sha256"])
        record["added_mirror"] = record["added_mirror"] or not present
    if present:
        new = current
    else:
        config["registry-mirrors"] = [*mirrors, spec["mirror"]]
        new = render_daemon_json(config, current)
    record["written_sha256"] = sha256(new)
    return new, record


def undo_daemon_json(record: dict, current: bytes | None) -> tuple:
    """(bytes without our mirror, note): the original bytes when nobody edited the file since."""
    if record["restorable"] and sha256(current) == record["written_sha256"]:
        return decode_bytes(record["original"]), None
    if not record["added_mirror"] or current is None:
        return current, None
    try:
        config = parse_daemon_json(record["path"], current)
    except HostError as error:
        raise HostError("cannot take our mirror out: " + str(error)) from None
    mirrors = [m for m in config.get("registry-mirrors", []) if not same_mirror(m, record["mirror"])]
    if mirrors or not record["added_key"]:
        config["registry-mirrors"] = mirrors
    else:
        config.pop("registry-mirrors", None)
    if not config and not record["existed"]:
        return None, None
    note = record["path"] + " was edited after our apply: removed only our mirror entry"
    return render_daemon_json(config, current), note


# ---------------------------------------------------------------------------------------
# Files that are ours (CA, hosts.toml) and /etc/hosts lines
# ---------------------------------------------------------------------------------------


def apply_file(spec: dict, current: bytes | None, record: dict | None) -> tuple:
    new = spec["content"].encode("utf-8")
    if record is None:
        record = new_record(spec, current)
    record = dict(record, written_sha256=sha256(new))
    return new, record


def undo_file(record: dict, current: bytes | None) -> tuple:
    if sha256(current) == record["written_sha256"]:
        return decode_bytes(record["original"]), None
    if current is None:
        return None, None
    return current, record["path"] + " was changed after our apply: left as it is"


def strip_marked_lines(data: bytes | None, marker: str) -> bytes:
    lines = (data or b"").decode("utf-8", errors="surrogateescape").splitlines(keepends=True)
    kept = [line for line in lines if not line.rstrip("\r\n").endswith(marker)]
    return "".join(kept).encode("utf-8", errors="surrogateescape")


def apply_hosts(spec: dict, current: bytes | None, record: dict | None, marker: str) -> tuple:
    base = strip_marked_lines(current, marker)
    if base and not base.endswith(b"\n"):
        base += b"\n"
    new = base + "".join(f"{line}  {marker}\n" for line in spec["line"].split("\n")).encode("utf-8")
    if record is None:
        record = new_record(spec, current)
    else:
        record = dict(record, restorable=record["restorable"] and sha256(current) == record["written_sha256"])
    record["written_sha256"] = sha256(new)
    return new, record


def undo_hosts(record: dict, current: bytes | None, marker: str) -> tuple:
    if record["restorable"] and sha256(current) == record["written_sha256"]:
        return decode_bytes(record["original"]), None
    if current is None:
        return None, None
    return strip_marked_lines(current, marker), None


def new_record(spec: dict, current: bytes | None) -> dict:
    """What a first apply knows about a file: its original bytes (None = it did not exist)."""
    record = {key: value for key, value in spec.items() if key not in ("content", "line")}
    record.update({
        "existed": current is not None,
        "original": encode_bytes(current),
        "restorable": True,
        "created_folders": missing_folders(spec["path"]),
    })
    return record


# ---------------------------------------------------------------------------------------
# containerd's config.toml: config_path, so that containerd itself reads the hosts.toml files
# ---------------------------------------------------------------------------------------

# The tables that hold config_path, by config version (containerd 1.7 reads version 2;
# 2.x reads 3 and migrates 2, so a new file is written as version 2).
CONTAINERD_TABLES = {
    2: ('plugins."io.containerd.grpc.v1.cri".registry',),
    3: ('plugins."io.containerd.cri.v1.images".registry',),
}
_TABLE_HEADER = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")
_CONFIG_PATH = re.compile(r"^(\s*)config_path\s*=\s*(.*?)\s*(#.*)?$")
_VERSION = re.compile(r"^\s*version\s*=\s*(\d+)\s*(#.*)?$", re.MULTILINE)


def _table_name(header: str) -> str:
    """`plugins.'io.containerd.cri.v1.images'.registry` and the double-quoted form compare equal."""
    return re.sub(r"\s+", "", header).replace("'", '"')


def _toml_value(raw: str) -> str | None:
    """The string a `key = "..."` / `'...'` line holds; None for anything else."""
    match = re.match(r"^(\"(?:[^\"\\\\]|\\\\.)*\"|'[^']*')$", raw)
    if not match:
        return None
    text = match.group(1)
    return json.loads(text) if text.startswith('"') else text[1:-1]


def with_config_path(path: str, current: bytes | None, certs_d: str) -> tuple:
    """(new config.toml bytes, notes): config_path set to certs_d where it is unset or ''."""
    text = (current or b"").decode("utf-8")
    version_match = _VERSION.search(text)
    version = int(version_match.group(1)) if version_match else (2 if not text.strip() else 1)
    if version not in CONTAINERD_TABLES:
        raise HostError(
            path + " is a version " + str(version) + " containerd config: DaemonMirror sets config_path in "
            "version 2 or 3 configs only. Nothing was changed: migrate it (containerd config migrate), then run again"
        )
    lines = text.splitlines(keepends=True)
    notes = []
    for table in CONTAINERD_TABLES[version]:
        wanted = _table_name(table)
        inline = [n for n in _table_names(lines) if n and n.startswith((wanted + ".mirrors", wanted + ".configs"))]
        if version == 2 and inline:
            raise HostError(
                path + " still configures registries inline (" + table + ".mirrors/.configs), which containerd "
                "refuses together with config_path. Nothing was changed: move them to hosts.toml files under "
                + certs_d + ", then run again"
            )
        lines, note = _set_config_path(lines, wanted, table, certs_d)
        if note:
            notes.append(path + ": " + note)
    if not text.strip():
        lines.insert(0, "version = 2\n")
    return "".join(lines).encode("utf-8"), notes


def _table_names(lines: list) -> list:
    """The table name of each line that opens a [table] (None for the other lines)."""
    names = []
    for line in lines:
        match = _TABLE_HEADER.match(line)
        names.append(_table_name(match.group(1)) if match else None)
    return names


def _set_config_path(lines: list, wanted: str, table: str, certs_d: str) -> tuple:
    names = _table_names(lines)
    start = names.index(wanted) if wanted in names else None
    assignment = "config_path = " + json.dumps(certs_d) + "  # DaemonMirror: containerd reads hosts.toml here\n"
    if start is None:
        tail = [] if not lines or lines[-1].endswith("\n") else ["\n"]
        return [*lines, *tail, "\n[" + table + "]\n", "  " + assignment], None
    opens_table = [names[i] is not None or lines[i].lstrip().startswith("[[") for i in range(len(lines))]
    end = next((i for i in range(start + 1, len(lines)) if opens_table[i]), len(lines))
    for index in range(start + 1, end):
        match = _CONFIG_PATH.match(lines[index].rstrip("\r\n"))
        if not match:
            continue
        value = _toml_value(match.group(2))
        if value is None:
            return lines, "config_path of [" + table + "] is not a plain string: left as it is"
        if certs_d in value.split(":"):
            return lines, None
        if value:
            return lines, ("[" + table + "] config_path is " + json.dumps(value) + ", not " + certs_d
                           + ": left as it is, so containerd does not read the hosts.toml files written there")
        return [*lines[:index], match.group(1) + assignment, *lines[index + 1:]], None
    return [*lines[:start + 1], "  " + assignment, *lines[start + 1:]], None


def apply_containerd_config(spec: dict, current: bytes | None, record: dict | None) -> tuple:
    new, notes = with_config_path(spec["path"], current, spec["certs_d"])
    if record is None:
        record = new_record(spec, current)
    else:
        record = dict(record, restorable=record["restorable"] and sha256(current) == record["written_sha256"])
    record["written_sha256"] = sha256(new)
    record["notes"] = notes
    return new, record


def undo_containerd_config(record: dict, current: bytes | None) -> tuple:
    if record["restorable"] and sha256(current) == record["written_sha256"]:
        return decode_bytes(record["original"]), None
    return current, record["path"] + " was changed after our apply: its config_path was left as it is"


def validate_containerd_config(path: str, data: bytes | None) -> str:
    """`containerd --config <new> config dump`: containerd itself must accept the new bytes."""
    if data is None or shutil.which("containerd") is None:
        return "validation: skipped (no containerd binary or no file)"
    folder = tempfile.mkdtemp(prefix="daemon-mirror-validate.")
    try:
        candidate = os.path.join(folder, "config.toml")
        with open(candidate, "wb") as stream:
            stream.write(data)
        result = subprocess.run(["containerd", "--config", candidate, "config", "dump"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if result.returncode != 0:
        raise HostError("containerd refuses the new " + path + ", so nothing was changed: "
                        + result.stdout.decode(errors="replace").strip()[-800:])
    return "validation: containerd config dump accepted " + path


def systemd_runs(unit: str) -> bool:
    if not os.path.isdir("/run/systemd/system") or shutil.which("systemctl") is None:
        return False
    return subprocess.run(["systemctl", "is-active", "--quiet", unit], timeout=30).returncode == 0


def restart_containerd(mode: str) -> str:
    """containerd reads config.toml at start only. Its containers run on in their shims."""
    if mode != "auto":
        return "containerd: not restarted (reload=" + mode + "): restart it to read config_path"
    if not systemd_runs("containerd"):
        return ("containerd: not run by systemd here, so not restarted: restart it to read config_path "
                "(until then CRI pulls ignore the hosts.toml files; ctr --hosts-dir and nerdctl read them anyway)")
    result = subprocess.run(["systemctl", "restart", "containerd"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, timeout=180)
    if result.returncode != 0:
        raise HostError("systemctl restart containerd failed: " + result.stdout.decode(errors="replace").strip())
    return "containerd: restarted (systemctl restart containerd) to read config_path"


# ---------------------------------------------------------------------------------------
# Planning: the new bytes of every file, computed before anything is written
# ---------------------------------------------------------------------------------------


class Plan:
    def __init__(self) -> None:
        self.writes: dict = {}  # path -> new bytes, None = delete
        self.interim: dict = {}  # daemon.json path -> bytes dockerd must reload before `writes`
        self.before: dict = {}  # path -> bytes before this run, None = absent
        self.records: dict = {}  # key -> record after this run (what the state file keeps)
        self.folders_to_create: list = []
        self.folders_to_prune: list = []
        self.notes: list = []
        self.daemon_json_paths: list = []
        self.containerd_config_paths: list = []
        # (mirror, should dockerd list it) once daemon.json changed: checked after the reload
        self.mirror_check: tuple | None = None

    @property
    def changed_paths(self) -> list:
        return sorted(path for path, data in self.writes.items() if data != self.before[path])

    @property
    def containerd_config_changed(self) -> bool:
        return any(path in self.changed_paths for path in self.containerd_config_paths)

    @property
    def daemon_json_changed(self) -> bool:
        return any(path in self.changed_paths for path in self.daemon_json_paths)


def make_plan(args: Args, state_items: dict, desired: dict) -> Plan:
    """Undo what is recorded but no longer desired (or desired differently), apply the rest."""
    plan = Plan()
    contents = {}  # path -> bytes as this plan leaves them so far

    def current(path: str) -> bytes | None:
        if path not in contents:
            contents[path] = read_bytes(path)
            plan.before[path] = contents[path]
        return contents[path]

    for key, record in sorted(state_items.items()):
        spec = desired.get(key)
        if spec is not None and _same_spec(record, spec):
            continue
        new, note = _undo(args, record, current(record["path"]))
        contents[record["path"]] = new
        if note:
            plan.notes.append(note)
        if record["kind"] == "containerd_config":
            plan.containerd_config_paths.append(record["path"])
        if record["kind"] == "daemon_json":
            plan.daemon_json_paths.append(record["path"])
            if record["added_mirror"]:
                plan.mirror_check = (record["mirror"], False)
        plan.folders_to_prune.extend(reversed(record.get("created_folders", [])))

    for key, spec in sorted(desired.items()):
        record = state_items.get(key)
        if record is not None and not _same_spec(record, spec):
            record = None  # undone above: start again from what the undo left
        new, record = _apply(args, spec, current(spec["path"]), record)
        contents[spec["path"]] = new
        plan.records[key] = record
        if spec["kind"] == "containerd_config":
            plan.containerd_config_paths.append(spec["path"])
            plan.notes.extend(record.pop("notes", []))
        if spec["kind"] == "daemon_json":
            plan.daemon_json_paths.append(spec["path"])
            plan.mirror_check = (spec["mirror"], True)
        for folder in record.get("created_folders", []):
            if not os.path.isdir(folder) and folder not in plan.folders_to_create:
                plan.folders_to_create.append(folder)

    plan.writes = {path: data for path, data in contents.items() if data != plan.before[path]}
    for path in plan.daemon_json_paths:
        if path in plan.writes:
            interim = interim_daemon_json(plan.writes[path])
            if interim is not None:
                plan.interim[path] = interim
    return plan


def _same_spec(record: dict, spec: dict) -> bool:
    if record["kind"] == "daemon_json":
        return record["mirror"] == spec["mirror"]
    if record["kind"] == "hosts":
        return record.get("line") == spec["line"]
    if record["kind"] == "containerd_config":
        return record.get("certs_d") == spec["certs_d"]
    return True  # our own file: new content simply replaces the old


def _apply(args: Args, spec: dict, current: bytes | None, record: dict | None) -> tuple:
    if spec["kind"] == "daemon_json":
        return apply_daemon_json(spec, current, record)
    if spec["kind"] == "hosts":
        new, record = apply_hosts(spec, current, record, args.hosts_marker)
        record["line"] = spec["line"]
        return new, record
    if spec["kind"] == "containerd_config":
        return apply_containerd_config(spec, current, record)
    return apply_file(spec, current, record)


def _undo(args: Args, record: dict, current: bytes | None) -> tuple:
    if record["kind"] == "daemon_json":
        return undo_daemon_json(record, current)
    if record["kind"] == "hosts":
        return undo_hosts(record, current, args.hosts_marker)
    if record["kind"] == "containerd_config":
        return undo_containerd_config(record, current)
    return undo_file(record, current)


def records_without_state(args: Args) -> dict:
    """For remove when the state file is gone: take out only what is unmistakably ours."""
    items = {}
    for key, spec in args.desired_items().items():
        record = {key_: value for key_, value in spec.items() if key_ not in ("content", "line")}
        record.update({"existed": True, "original": None, "restorable": False, "written_sha256": None})
        if spec["kind"] == "daemon_json":
            # The mirror URL names this stack's cache: nobody else adds it.
            record.update({"added_mirror": True, "added_key": False})
        if spec["kind"] == "file":
            # Only a file that still holds exactly our content is ours to delete.
            record.update({"written_sha256": sha256(spec["content"].encode("utf-8")), "original": None})
        items[key] = record
    return items


# ---------------------------------------------------------------------------------------
# Docker daemon: validate, reload, check
# ---------------------------------------------------------------------------------------


def dockerd_supports_validate(dockerd: str) -> bool:
    if not dockerd or shutil.which(dockerd) is None:
        return False
    try:
        result = subprocess.run([dockerd, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return b"--validate" in result.stdout


def validate_daemon_json(dockerd: str, path: str, data: bytes | None) -> str:
    """`dockerd --validate` on the new bytes (Docker 23+); a note when the daemon cannot."""
    if data is None:
        return "validation: not needed (file removed)"
    if not dockerd or shutil.which(dockerd) is None:
        return "validation: skipped (no dockerd binary on this host)"
    if not dockerd_supports_validate(dockerd):
        return "validation: skipped (this dockerd has no --validate; it needs Docker 23 or later)"
    folder = tempfile.mkdtemp(prefix="daemon-mirror-validate.")
    try:
        candidate = os.path.join(folder, "daemon.json")
        with open(candidate, "wb") as stream:
            stream.write(data)
        result = subprocess.run(
            [dockerd, "--validate", "--config-file", candidate],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if result.returncode != 0:
        raise HostError(
            "dockerd --validate refuses the new " + path + ", so nothing was changed: "
            + result.stdout.decode(errors="replace").strip()
        )
    return "validation: dockerd --validate accepted " + path


def dockerd_pids() -> list:
    """Running dockerd processes: the pid file first, else pidof."""
    with contextlib.suppress(OSError, ValueError):
        with open(DOCKER_PID_FILE) as stream:
            pid = int(stream.read().strip())
        if _process_name(pid) == "dockerd":
            return [pid]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result = subprocess.run(["pidof", "dockerd"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10)
        return [int(pid) for pid in result.stdout.split()]
    return []


def _process_name(pid: int) -> str:
    try:
        with open("/proc/" + str(pid) + "/comm") as stream:
            return stream.read().strip()
    except OSError:
        return ""


def reject_mirror_flag(pids: list) -> None:
    """dockerd refuses a config that sets registry-mirrors both as a flag and in the file."""
    for pid in pids:
        try:
            with open("/proc/" + str(pid) + "/cmdline", "rb") as stream:
                arguments = stream.read().split(b"\0")
        except OSError:
            continue
        if any(argument.startswith(b"--registry-mirror") for argument in arguments):
            raise HostError(
                "dockerd (pid " + str(pid) + ") runs with --registry-mirror on its command line, so it "
                "would refuse registry-mirrors in daemon.json. Nothing was changed: move those mirrors "
                "into daemon.json and drop the flag (systemd unit or /etc/default/docker), then run again"
            )


def systemd_runs_docker() -> bool:
    if not os.path.isdir("/run/systemd/system") or shutil.which("systemctl") is None:
        return False
    result = subprocess.run(["systemctl", "is-active", "--quiet", "docker"], timeout=30)
    return result.returncode == 0


def reload_docker(mode: str) -> tuple:
    """(what was done, whether a running dockerd was asked to reload)."""
    if mode == "none":
        return "reload: skipped (reload=none)", False
    if mode.startswith("pid:"):
        pid = int(mode[4:])
        os.kill(pid, signal.SIGHUP)
        return "reload: SIGHUP sent to pid " + str(pid), False
    if systemd_runs_docker():
        result = subprocess.run(["systemctl", "reload", "docker"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, timeout=120)
        if result.returncode != 0:
            raise HostError("systemctl reload docker failed: " + result.stdout.decode(errors="replace").strip())
        return "reload: systemctl reload docker", True
    pids = dockerd_pids()
    if not pids:
        return "reload: dockerd is not running; it reads the new config when it starts", False
    for pid in pids:
        os.kill(pid, signal.SIGHUP)
    return "reload: SIGHUP sent to dockerd (pid " + ", ".join(str(p) for p in pids) + ")", True


def daemon_mirrors(docker_cli: str) -> list | None:
    """The mirrors the running daemon uses, or None when it cannot be asked."""
    if not docker_cli or shutil.which(docker_cli) is None or not os.path.exists(DOCKER_SOCKET):
        return None
    answered, mirrors = ask_daemon(docker_cli, "{{json .RegistryConfig.Mirrors}}")
    if not answered:
        return None
    return mirrors if isinstance(mirrors, list) else []


def ask_daemon(docker_cli: str, template: str) -> tuple[bool, object]:
    """`docker info --format TEMPLATE` of the local daemon, parsed as JSON: (answered, value)."""
    # Ask the local daemon, whatever DOCKER_HOST or docker context the caller's shell has.
    command = [docker_cli, "--host", "unix://" + DOCKER_SOCKET, "info", "--format", template]
    try:
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False, None
    if result.returncode != 0:
        return False, None
    try:
        return True, json.loads(result.stdout.decode() or "null")
    except ValueError:
        return False, None


def wait_for_daemon(docker_cli: str, mirror: str, expect_present: bool) -> bool | None:
    """True once the daemon's mirror list agrees; False on timeout; None when it cannot be asked."""
    deadline = time.monotonic() + VERIFY_SECONDS
    while True:
        mirrors = daemon_mirrors(docker_cli)
        if mirrors is None:
            return None
        if any(same_mirror(m, mirror) for m in mirrors) == expect_present:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


# ---------------------------------------------------------------------------------------
# Which image store dockerd uses, and what that store reads
# ---------------------------------------------------------------------------------------

CONTAINERD_SNAPSHOTTER = "io.containerd.snapshotter.v1"
# First Docker release measured to read certs.d/<registry>/hosts.toml with the containerd
# image store (28.5.2); 26.1.5 ignores them. 27.x is not claimed.
HOSTS_TOML_MIN_DOCKER = 28
# From Docker 29 on, a new install uses the containerd image store unless told otherwise.
CONTAINERD_STORE_DEFAULT_FROM = 29


def docker_major(version: str) -> int:
    match = re.match(r"^v?(\d+)\.", version or "")
    return int(match.group(1)) if match else 0


def docker_info(docker_cli: str) -> dict | None:
    """`docker info` of the local daemon as JSON, or None when it cannot be asked."""
    if not docker_cli or shutil.which(docker_cli) is None:
        return None
    _, info = ask_daemon(docker_cli, "{{json .}}")
    return info if isinstance(info, dict) and info.get("ServerVersion") else None


def dockerd_version(dockerd: str) -> str:
    """`dockerd --version` ("Docker version 28.5.2+dfsg4, build ...") -> "28.5.2+dfsg4"; "" unknown."""
    if not dockerd or shutil.which(dockerd) is None:
        return ""
    try:
        result = subprocess.run([dockerd, "--version"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    match = re.search(rb"version\s+v?([0-9][^\s,]*)", result.stdout)
    return match.group(1).decode() if match else ""


def detect_docker(args: Args, daemon_json: bytes | None) -> dict:
    """{"version", "containerd_store", "detected_by"} of this host's dockerd.

    The running daemon says it best (`docker info`: DriverStatus names the containerd
    snapshotter). When it is not running, what it will use when it starts: daemon.json's
    `features.containerd-snapshotter`, else the default of its version.
    """
    info = docker_info(args.docker_cli)
    if info is not None:
        statuses = info.get("DriverStatus") or []
        containerd_store = any(
            isinstance(pair, list) and len(pair) == 2 and pair[1] == CONTAINERD_SNAPSHOTTER for pair in statuses
        )
        return {"version": str(info["ServerVersion"]), "containerd_store": containerd_store,
                "detected_by": "docker info"}
    version = dockerd_version(args.dockerd)
    feature = None
    with contextlib.suppress(ValueError, AttributeError, UnicodeDecodeError):
        config = json.loads(daemon_json.decode("utf-8")) if daemon_json and daemon_json.strip() else {}
        feature = (config.get("features") or {}).get("containerd-snapshotter")
    default = docker_major(version) >= CONTAINERD_STORE_DEFAULT_FROM
    containerd_store = feature if isinstance(feature, bool) else default
    return {"version": version, "containerd_store": containerd_store,
            "detected_by": "daemon.json and dockerd --version (dockerd is not running)"}


def reads_hosts_toml(docker: dict) -> bool:
    return docker["containerd_store"] and docker_major(docker["version"]) >= HOSTS_TOML_MIN_DOCKER


def docker_store_files(store: dict, docker: dict | None) -> list:
    """The files of `docker_store` this dockerd reads; all of them when `docker` is None."""
    files = []
    if docker is None or docker["containerd_store"]:
        files += store["containerd_store_files"]
    if docker is None or reads_hosts_toml(docker):
        files += [{"path": h["path"], "content": h["content"]} for h in store["hosts_toml"]]
    return files


def docker_transparency(args: Args, docker: dict, daemon_json: bytes | None) -> dict:
    """For the report: which registries this dockerd now pulls through a cache by their own
    names (and how), and for the others why not and what to pull instead."""
    assert args.daemon_json is not None
    mirror = args.daemon_json["mirror"]
    store = "containerd" if docker["containerd_store"] else "graph driver"
    version = docker["version"] or "(unknown version)"
    transparent = {"docker.io": mirror}
    not_transparent = {}
    notes = []
    for entry in args.docker_store["hosts_toml"]:
        if reads_hosts_toml(docker):
            transparent[entry["registry"]] = entry["cache"]
            continue
        if entry["registry"] == "docker.io":
            continue  # registry-mirrors covers Docker Hub
        instead = "pull " + re.sub(r"^https?://", "", entry["cache"]).rstrip("/") + "/<name> instead"
        if docker["containerd_store"]:
            why = ("dockerd " + version + " does not read certs.d/<registry>/hosts.toml (Docker "
                   + str(HOSTS_TOML_MIN_DOCKER) + "+ with the containerd image store does)")
        else:
            why = ("dockerd " + version + " with the graph-driver image store mirrors Docker Hub only "
                   "(registry-mirrors); the containerd image store of Docker " + str(HOSTS_TOML_MIN_DOCKER)
                   + "+ reads hosts.toml for every registry")
        not_transparent[entry["registry"]] = why + ": " + instead
    if reads_hosts_toml(docker) and any(e["registry"] == "docker.io" for e in args.docker_store["hosts_toml"]):
        others = [m for m in _mirrors_in(daemon_json) if not same_mirror(m, mirror)]
        if others:
            notes.append(
                "certs.d/docker.io/hosts.toml takes precedence over registry-mirrors with the containerd image "
                "store, so Docker Hub pulls no longer try " + ", ".join(others)
            )
    return {"version": docker["version"], "image_store": store, "detected_by": docker["detected_by"],
            "transparent": transparent, "not_transparent": not_transparent, "notes": notes}


def _mirrors_in(daemon_json: bytes | None) -> list:
    with contextlib.suppress(ValueError, AttributeError, UnicodeDecodeError):
        config = json.loads(daemon_json.decode("utf-8")) if daemon_json and daemon_json.strip() else {}
        mirrors = config.get("registry-mirrors") or []
        return [m for m in mirrors if isinstance(m, str)]
    return []


# ---------------------------------------------------------------------------------------
# Carrying out a plan, with rollback
# ---------------------------------------------------------------------------------------


class Transaction:
    """Writes that can be undone: the bytes before each change are kept until commit."""

    def __init__(self) -> None:
        self._undo: list = []

    def write(self, path: str, data: bytes | None, before: bytes | None) -> None:
        self._undo.append(("file", path, before))
        if data is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        else:
            write_atomically(path, data)

    def make_folder(self, folder: str) -> None:
        os.mkdir(folder, NEW_DIR_MODE)
        self._undo.append(("folder", folder, None))

    def rollback(self) -> list:
        problems = []
        for kind, path, before in reversed(self._undo):
            try:
                if kind == "folder":
                    os.rmdir(path)
                elif before is None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                else:
                    write_atomically(path, before)
            except OSError as error:
                problems.append("could not restore " + path + ": " + str(error))
        self._undo = []
        return problems


def carry_out(args: Args, plan: Plan, state_before: bytes | None, new_state: bytes | None) -> dict:
    """Write the plan (state first), reload dockerd if daemon.json changed, check, or roll back."""
    report: dict = {"changed": plan.changed_paths, "notes": list(plan.notes), "reload": "reload: not needed"}
    if not plan.changed_paths and new_state == state_before:
        return report
    transaction = Transaction()
    daemon_reloaded = False
    try:
        if new_state != state_before:
            transaction.write(args.state_path, new_state, state_before)
        for folder in plan.folders_to_create:
            transaction.make_folder(folder)
        for path in plan.changed_paths:
            transaction.write(path, plan.interim.get(path, plan.writes[path]), plan.before[path])
        confirmed = False
        if plan.daemon_json_changed:
            report["reload"], daemon_reloaded = reload_docker(args.reload)
            confirmed = check_daemon(args, plan, daemon_reloaded, report)
        if plan.interim and plan.daemon_json_changed and not confirmed and args.reload != "none":
            # The reload runs asynchronously: the daemon must have read the interim file
            # before the final bytes replace it, and nothing told us it has.
            time.sleep(args.settle_seconds)
        for path, interim in sorted(plan.interim.items()):
            transaction.write(path, plan.writes[path], interim)
        if plan.containerd_config_changed:
            report["containerd"] = restart_containerd(args.reload)
            report["notes"].append(report["containerd"])
    except BaseException as error:
        problems = transaction.rollback()
        if daemon_reloaded:
            with contextlib.suppress(Exception):
                reload_docker(args.reload)
        if plan.containerd_config_changed:
            with contextlib.suppress(Exception):
                restart_containerd(args.reload)
        message = _describe(error) + ". Every change of this run was rolled back"
        if problems:
            message += " except: " + "; ".join(problems)
        raise HostError(message) from None
    prune_folders(plan.folders_to_prune)
    return report


def check_daemon(args: Args, plan: Plan, daemon_reloaded: bool, report: dict) -> bool:
    """After a reload the running daemon must list our mirror (apply), or no longer (remove).

    A daemon that did not take a new mirror fails the apply (and rolls it back); one that
    still lists a removed mirror only earns a note: the file is right, a restart fixes it.
    True when the daemon confirmed it runs with the new mirrors.
    """
    if not daemon_reloaded or plan.mirror_check is None:
        return False
    mirror, expect_present = plan.mirror_check
    outcome = wait_for_daemon(args.docker_cli, mirror, expect_present)
    if outcome is None:
        report["daemon_check"] = "not checked (no docker CLI or socket)"
    elif outcome:
        report["daemon_check"] = "dockerd " + ("lists " if expect_present else "no longer lists ") + mirror
        return True
    elif expect_present:
        raise HostError(
            "dockerd did not take " + mirror + " as a registry mirror within " + str(int(VERIFY_SECONDS))
            + " s after the reload (its log says why: journalctl -u docker, or dockerd's output)"
        )
    else:
        report["daemon_check"] = "dockerd still lists " + mirror + " after the reload: restart it to drop it"
        report["notes"].append(report["daemon_check"])
    return False


def prune_folders(folders: list) -> None:
    """Remove folders we created, deepest first, when nothing else lives in them."""
    for folder in folders:
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def _describe(error: BaseException) -> str:
    if isinstance(error, HostError):
        return str(error)
    if isinstance(error, PermissionError):
        return "permission denied on " + str(error.filename) + ". " + _ROOT_HINT
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return type(error).__name__ + ": " + str(error)


# ---------------------------------------------------------------------------------------
# The machine: `local` means whichever machine runs pulumi, so a remove may arrive elsewhere
# ---------------------------------------------------------------------------------------

MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")
# machine-id(5) asks that the ID itself not be shown; like systemd's
# sd_id128_get_machine_app_specific(), an HMAC keyed with it names the machine instead.
MACHINE_APP_ID = b"registry-stack DaemonMirror machine"


def this_machine(id_files: tuple = MACHINE_ID_FILES) -> dict:
    """{"hostname", "id"} of the machine this runs on; id "" when it has no machine-id."""
    machine_id = ""
    for path in id_files:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            with open(path) as stream:
                raw = stream.read().strip()
            if raw:
                machine_id = hmac.new(raw.encode(), MACHINE_APP_ID, hashlib.sha256).hexdigest()[:32]
                break
    return {"hostname": socket.gethostname(), "id": machine_id}


def same_machine(a: dict, b: dict) -> bool:
    """By machine-id when both have one (a renamed host stays the same machine), else by name."""
    if a.get("id") and b.get("id"):
        return a["id"] == b["id"]
    return bool(a.get("hostname")) and a.get("hostname") == b.get("hostname")


def describe_machine(machine: dict) -> str:
    name = repr(machine.get("hostname") or "?")
    return name + (" (machine " + machine["id"][:12] + ")" if machine.get("id") else "")


def refuse_other_machine(action: str, args: Args, current: dict) -> None:
    """Stop before anything is read or written when the args name another machine."""
    expected = args.machine
    if expected is None or same_machine(expected, current):
        return
    here, there = describe_machine(current), describe_machine(expected)
    if action == "remove":
        raise HostError(
            "this mirror host is `local`, and it was applied on " + there + ", but this remove runs on "
            + here + ": pulumi-command runs a local command wherever the CLI runs, so going on would change "
            "this machine's daemon.json, not that one's. Nothing was touched. Run pulumi from " + there
            + "; if that machine is gone, drop the command from the stack (`pulumi state delete` with the "
            "URN of its registry-mirror-local-apply command) and clean that machine by hand"
        )
    raise HostError(
        "this apply was planned for " + there + " but runs on " + here + ". Nothing was touched: run "
        "pulumi up again on the machine that should use the cache"
    )


# ---------------------------------------------------------------------------------------
# State file and lock
# ---------------------------------------------------------------------------------------


def load_state(args: Args) -> tuple:
    """(raw bytes, items) of this stack's record on the host."""
    raw = read_bytes(args.state_path)
    if raw is None:
        return None, None
    try:
        state = json.loads(raw.decode("utf-8"))
    except ValueError:
        raise HostError(
            args.state_path + " is damaged (not JSON): restore it from a backup, or delete it to let "
            "remove take out only what is unmistakably ours"
        ) from None
    if state.get("version") != STATE_VERSION:
        raise HostError(args.state_path + " was written by another version of this script")
    return raw, state.get("items", {})


def render_state(args: Args, items: dict, machine: dict) -> bytes | None:
    if not items:
        return None
    state = {"version": STATE_VERSION, "id": args.id, "items": items, "machine": machine,
             "note": "Written by registry-stack's DaemonMirror: what it changed on this host and the "
                     "original bytes it restores on removal. Do not edit."}
    return (json.dumps(state, indent=2, sort_keys=True) + "\n").encode("utf-8")


@contextlib.contextmanager
def host_lock(args: Args, create: bool):
    """One DaemonMirror run at a time on this host (several stacks may share daemon.json)."""
    if not os.path.isdir(args.state_dir):
        if not create:
            yield
            return
        try:
            os.makedirs(args.state_dir, NEW_DIR_MODE, exist_ok=True)
        except PermissionError:
            raise HostError("cannot create " + args.state_dir + ": permission denied. " + _ROOT_HINT) from None
    import fcntl

    try:
        descriptor = os.open(args.lock_path, os.O_CREAT | os.O_RDWR, 0o600)
    except PermissionError:
        raise HostError("cannot open " + args.lock_path + ": permission denied. " + _ROOT_HINT) from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def drop_empty_state_dir(args: Args) -> None:
    """After the last removal, leave no trace: the lock file and the folder go too."""
    with contextlib.suppress(OSError):
        if [name for name in os.listdir(args.state_dir) if name != "daemon-mirror.lock"]:
            return
        os.unlink(args.lock_path)
        os.rmdir(args.state_dir)


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------


def run(action: str, args: Args) -> dict:
    machine = this_machine()
    refuse_other_machine(action, args, machine)
    with host_lock(args, create=action == "apply"):
        state_raw, state_items = load_state(args)
        docker = None
        daemon_json_before = None
        if action == "apply":
            if args.daemon_json:
                daemon_json_before = read_bytes(args.daemon_json["path"])
                docker = detect_docker(args, daemon_json_before)
            desired = args.desired_items(docker)
        else:
            desired = {}
            if state_items is None:
                state_items = records_without_state(args)
        plan = make_plan(args, state_items or {}, desired)
        if args.daemon_json and action == "apply":
            new = plan.writes.get(args.daemon_json["path"], plan.before.get(args.daemon_json["path"]))
            if args.daemon_json["path"] in plan.changed_paths:
                if args.reload == "auto":
                    reject_mirror_flag(dockerd_pids())
                plan.notes.append(validate_daemon_json(args.dockerd, args.daemon_json["path"], new))
        if args.containerd_config and action == "apply" and args.containerd_config["path"] in plan.changed_paths:
            path = args.containerd_config["path"]
            plan.notes.append(validate_containerd_config(path, plan.writes[path]))
        new_state = render_state(args, plan.records, machine)
        report = carry_out(args, plan, state_raw, new_state)
    if action == "remove":
        drop_empty_state_dir(args)
    report.update({"action": action, "id": args.id, "configured": _configured(plan)})
    if docker is not None:
        report["docker"] = docker_transparency(args, docker, daemon_json_before)
        report["notes"].extend(report["docker"].pop("notes"))
        report["notes"].extend(
            "not transparent on this host: " + registry + ": " + why
            for registry, why in sorted(report["docker"]["not_transparent"].items())
        )
    return report


def _configured(plan: Plan) -> dict:
    configured: dict = {"registry_mirror": None, "files": [], "etc_hosts_line": None}
    for record in plan.records.values():
        if record["kind"] == "daemon_json":
            configured["registry_mirror"] = record["mirror"]
        elif record["kind"] == "file":
            configured["files"].append(record["path"])
        else:
            configured["etc_hosts_line"] = record.get("line")
    return configured


def main(argv: list) -> int:
    if len(argv) != 3 or argv[1] not in ("apply", "remove"):
        sys.stderr.write("usage: python3 - apply|remove '<json args>'\n")
        return 2
    try:
        raw = json.loads(argv[2])
    except ValueError as error:
        sys.stderr.write("daemon-mirror: the args are not valid JSON: " + str(error) + "\n")
        return 2
    try:
        if not isinstance(raw, dict):
            raise TypeError("expected a JSON object")
        args = Args(raw)
    except (AttributeError, TypeError, ValueError) as error:
        sys.stderr.write("daemon-mirror: the args are not usable: " + str(error) + "\n")
        return 2
    try:
        report = run(argv[1], args)
    except HostError as error:
        sys.stderr.write("daemon-mirror " + argv[1] + " failed: " + str(error) + "\n")
        return 1
    for note in report["notes"] + [report["reload"]]:
        sys.stderr.write("daemon-mirror: " + note + "\n")
    sys.stdout.write(json.dumps(report, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
