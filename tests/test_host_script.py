"""The DaemonMirror host script, run for real (python3, script on stdin) against temp folders.

Each test builds a small fake root (etc/docker/daemon.json, etc/hosts, certs.d folders, a
state folder) and runs `python3 - apply|remove '<args>'` exactly as the hosts do. Reloads
go to a stand-in process that counts the SIGHUPs it gets, never to a real dockerd.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.daemon_mirror import HOST_SCRIPT, containerd_hosts_toml

MIRROR = "https://docker-cache.dev.internal.network:8443"
OTHER_MIRROR = "https://mirror.example.org"
CA = "-----BEGIN CERTIFICATE-----\nMIIBfakeCA\n-----END CERTIFICATE-----\n"
HOSTS_LINE = "10.0.0.5 docker-build.dev.internal.network docker-cache.dev.internal.network"
SYSTEM_PYTHON = "/usr/bin/python3"
ORIGINAL_HOSTS = b"127.0.0.1 localhost\n::1 localhost ip6-localhost\n"


class Host:
    """A fake host root and the args the component would send for it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.daemon_json = root / "etc/docker/daemon.json"
        self.certs_d = root / "etc/docker/certs.d"
        self.containerd_d = root / "etc/containerd/certs.d"
        self.etc_hosts = root / "etc/hosts"
        self.state_dir = root / "var/lib/registry-stack"
        self.daemon_json.parent.mkdir(parents=True)
        self.etc_hosts.write_bytes(ORIGINAL_HOSTS)

    @property
    def ca_path(self) -> Path:
        return self.certs_d / "docker-cache.dev.internal.network:8443/ca.crt"

    @property
    def hosts_toml(self) -> Path:
        return self.containerd_d / "docker.io/hosts.toml"

    def args(self, *, mirror: str = MIRROR, ca: str | None = CA, containerd: bool = False,
             etc_hosts: bool | str = False, docker: bool = True, reload: str = "none",
             stack_id: str = "registry-stack-dev",
             dockerd: str = "", settle_seconds: float = 1.0) -> dict[str, Any]:
        files = []
        if docker and ca:
            files.append({"path": str(self.ca_path), "content": ca})
        if containerd:
            toml = containerd_hosts_toml("https://registry-1.docker.io", mirror, None)
            files.append({"path": str(self.hosts_toml), "content": toml})
        return {
            "id": stack_id,
            "state_dir": str(self.state_dir),
            "reload": reload,
            "dockerd": dockerd,
            "docker_cli": "",
            "settle_seconds": settle_seconds,
            "daemon_json": {"path": str(self.daemon_json), "mirror": mirror} if docker else None,
            "files": files,
            "etc_hosts": {"path": str(self.etc_hosts), "line": etc_hosts if isinstance(etc_hosts, str) else HOSTS_LINE}
            if etc_hosts else None,
        }

    def snapshot(self) -> dict[str, bytes]:
        """Every file under the root (state folder excluded) with its bytes."""
        return {
            str(path.relative_to(self.root)): path.read_bytes()
            for path in sorted(self.root.rglob("*"))
            if path.is_file() and self.state_dir not in path.parents
        }


def run(action: str, args: dict[str, Any], python: str = sys.executable, **kwargs: Any) -> subprocess.CompletedProcess:
    """Exactly what the Command runs: the script on stdin, the args on the command line."""
    return subprocess.run(
        [python, "-", action, json.dumps(args)],
        input=HOST_SCRIPT.read_text(), capture_output=True, text=True, timeout=60, **kwargs,
    )


def ok(action: str, args: dict[str, Any]) -> dict[str, Any]:
    result = run(action, args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path / "root")


@pytest.fixture
def sighup_counter(tmp_path: Path, host: Host) -> Iterator[tuple[int, Any]]:
    """A stand-in dockerd: counts the SIGHUPs it receives and notes the daemon.json it would read."""
    log = tmp_path / "sighups"
    code = (
        "import json, signal, sys, time\n"
        "def reload(*_):\n"
        "    try:\n"
        f"        seen = open({str(host.daemon_json)!r}).read()\n"
        "    except FileNotFoundError:\n"
        "        seen = None\n"
        f"    open({str(log)!r}, 'a').write(json.dumps(seen) + '\\n')\n"
        "signal.signal(signal.SIGHUP, reload)\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"

    def count(expected: int | None = None) -> int:
        # Signals arrive asynchronously: give an expected one a moment to be written down.
        deadline = time.monotonic() + (3 if expected else 0.3)
        while True:
            seen = len(log.read_text().splitlines()) if log.exists() else 0
            if seen == expected or time.monotonic() > deadline:
                return seen
            time.sleep(0.05)

    count.seen = lambda: [json.loads(line) for line in log.read_text().splitlines()]  # type: ignore[attr-defined]
    yield process.pid, count
    process.kill()
    process.wait()


def write_json(path: Path, data: str) -> bytes:
    path.write_text(data)
    return path.read_bytes()


# ---------------------------------------------------------------------------------------
# daemon.json
# ---------------------------------------------------------------------------------------


def test_apply_keeps_foreign_keys_and_existing_mirrors(host: Host) -> None:
    write_json(host.daemon_json, json.dumps({
        "log-driver": "journald", "registry-mirrors": [OTHER_MIRROR], "insecure-registries": ["10.1.0.0/16"],
        "default-address-pools": [{"base": "172.30.0.0/16", "size": 24}],
    }))
    report = ok("apply", host.args())
    config = json.loads(host.daemon_json.read_text())
    assert config["registry-mirrors"] == [OTHER_MIRROR, MIRROR]
    assert config["log-driver"] == "journald"
    assert config["insecure-registries"] == ["10.1.0.0/16"]
    assert config["default-address-pools"] == [{"base": "172.30.0.0/16", "size": 24}]
    assert str(host.daemon_json) in report["changed"]
    assert report["configured"]["registry_mirror"] == MIRROR


def test_apply_keeps_the_files_indentation(host: Host) -> None:
    write_json(host.daemon_json, '{\n    "debug": true\n}\n')
    ok("apply", host.args())
    assert host.daemon_json.read_text().startswith('{\n    "debug": true,\n    "registry-mirrors": [\n')


def test_missing_daemon_json_is_created_and_removal_deletes_it(host: Host) -> None:
    host.daemon_json.parent.rmdir()
    ok("apply", host.args(ca=None))
    assert json.loads(host.daemon_json.read_text()) == {"registry-mirrors": [MIRROR]}
    assert stat.S_IMODE(host.daemon_json.stat().st_mode) == 0o644
    ok("remove", host.args(ca=None))
    assert not host.daemon_json.exists()
    assert not host.daemon_json.parent.exists(), "the folder we created goes too"


@pytest.mark.parametrize("content", ["{not json", '{"debug": true,}', "[1, 2]", '{"registry-mirrors": "x"}'])
def test_unusable_daemon_json_is_left_untouched_and_the_run_fails(host: Host, content: str) -> None:
    original = write_json(host.daemon_json, content)
    before = host.snapshot()
    result = run("apply", host.args(etc_hosts=True, containerd=True))
    assert result.returncode == 1
    assert str(host.daemon_json) in result.stderr
    assert "left untouched" in result.stderr
    assert host.daemon_json.read_bytes() == original
    assert host.snapshot() == before, "nothing else was written either (no CA, no hosts line)"
    assert not list(host.state_dir.glob("*.json"))


def test_blank_daemon_json_counts_as_empty(host: Host) -> None:
    original = write_json(host.daemon_json, "\n")
    ok("apply", host.args())
    assert json.loads(host.daemon_json.read_text()) == {"registry-mirrors": [MIRROR]}
    ok("remove", host.args())
    assert host.daemon_json.read_bytes() == original


def test_second_apply_changes_nothing_and_does_not_reload(host: Host, sighup_counter: Any) -> None:
    pid, sighups = sighup_counter
    write_json(host.daemon_json, '{"debug": true}')
    args = host.args(reload=f"pid:{pid}", containerd=True, etc_hosts=True)
    ok("apply", args)
    assert sighups(expected=1) == 1
    after_first = host.snapshot()
    state = (host.state_dir / "daemon-mirror-registry-stack-dev.json").read_bytes()
    inode = host.daemon_json.stat().st_ino

    report = ok("apply", args)
    assert report["changed"] == []
    assert report["reload"] == "reload: not needed"
    assert host.snapshot() == after_first
    assert (host.state_dir / "daemon-mirror-registry-stack-dev.json").read_bytes() == state
    assert host.daemon_json.stat().st_ino == inode, "not even rewritten with the same bytes"
    assert sighups() == 1


def test_remove_restores_the_original_bytes_exactly(host: Host, sighup_counter: Any) -> None:
    pid, sighups = sighup_counter
    # Odd formatting, no final newline: a rewrite by json.dumps could never reproduce it.
    original = write_json(host.daemon_json, '{ "debug":true,\t"registry-mirrors" : [ ] }')
    before = host.snapshot()
    ok("apply", host.args(reload=f"pid:{pid}", etc_hosts=True))
    assert sighups(expected=1) == 1
    ok("remove", host.args(reload=f"pid:{pid}", etc_hosts=True))
    assert host.daemon_json.read_bytes() == original
    assert host.snapshot() == before
    assert sighups(expected=2) == 2, "removal reloads dockerd too"
    assert not host.state_dir.exists(), "no record left behind"


@pytest.mark.parametrize("original", [None, '{"debug": true}'])
def test_removal_reloads_a_config_that_still_sets_the_mirrors(
    host: Host, sighup_counter: Any, original: str | None
) -> None:
    """dockerd's reload leaves the mirrors alone unless the file sets registry-mirrors."""
    pid, sighups = sighup_counter
    if original is not None:
        write_json(host.daemon_json, original)
    ok("apply", host.args(reload=f"pid:{pid}", ca=None))
    ok("remove", host.args(reload=f"pid:{pid}", ca=None))
    assert sighups(expected=2) == 2
    read_at_reload = json.loads(sighups.seen()[1])
    assert read_at_reload["registry-mirrors"] == []
    assert read_at_reload == {**json.loads(original or "{}"), "registry-mirrors": []}
    # ...and only then the original bytes (or no file) come back.
    assert (host.daemon_json.read_text() if host.daemon_json.exists() else None) == original


def test_remove_after_a_foreign_edit_keeps_the_edit(host: Host) -> None:
    write_json(host.daemon_json, json.dumps({"registry-mirrors": [OTHER_MIRROR]}, indent=2))
    ok("apply", host.args())
    config = json.loads(host.daemon_json.read_text())
    config["log-level"] = "warn"
    config["registry-mirrors"].append("https://third.example")
    host.daemon_json.write_text(json.dumps(config, indent=2))

    report = ok("remove", host.args())
    assert json.loads(host.daemon_json.read_text()) == {
        "registry-mirrors": [OTHER_MIRROR, "https://third.example"],
        "log-level": "warn",
    }
    assert any("removed only our mirror" in note for note in report["notes"])


def test_a_mirror_that_was_there_before_stays_after_remove(host: Host) -> None:
    original = write_json(host.daemon_json, json.dumps({"registry-mirrors": [MIRROR + "/"]}))
    report = ok("apply", host.args(ca=None))
    assert report["changed"] == []
    assert host.daemon_json.read_bytes() == original
    ok("remove", host.args(ca=None))
    assert host.daemon_json.read_bytes() == original


def test_a_removed_key_we_added_goes_but_a_key_we_found_stays(host: Host) -> None:
    write_json(host.daemon_json, json.dumps({"debug": True}))
    ok("apply", host.args(ca=None))
    host.daemon_json.write_text(json.dumps({"debug": False, "registry-mirrors": [MIRROR]}))  # foreign edit
    ok("remove", host.args(ca=None))
    assert json.loads(host.daemon_json.read_text()) == {"debug": False}

    write_json(host.daemon_json, json.dumps({"registry-mirrors": []}))
    ok("apply", host.args(ca=None))
    host.daemon_json.write_text(json.dumps({"debug": True, "registry-mirrors": [MIRROR]}))
    ok("remove", host.args(ca=None))
    assert json.loads(host.daemon_json.read_text()) == {"debug": True, "registry-mirrors": []}


def test_the_file_mode_and_a_symlink_survive(host: Host) -> None:
    real = host.root / "srv/docker-config.json"
    real.parent.mkdir()
    original = write_json(real, '{"debug": true}\n')
    real.chmod(0o600)
    host.daemon_json.symlink_to(real)
    ok("apply", host.args(ca=None))
    assert host.daemon_json.is_symlink(), "the link is kept, its target rewritten"
    assert json.loads(real.read_text())["registry-mirrors"] == [MIRROR]
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    ok("remove", host.args(ca=None))
    assert real.read_bytes() == original and host.daemon_json.is_symlink()


def test_a_new_mirror_url_replaces_ours_and_removal_still_restores(host: Host) -> None:
    original = write_json(host.daemon_json, json.dumps({"registry-mirrors": [OTHER_MIRROR]}))
    ok("apply", host.args())
    new_mirror = "https://docker-cache.prod.internal.network"
    ok("apply", host.args(mirror=new_mirror))
    assert json.loads(host.daemon_json.read_text())["registry-mirrors"] == [OTHER_MIRROR, new_mirror]
    ok("remove", host.args(mirror=new_mirror))
    assert host.daemon_json.read_bytes() == original


def test_two_stacks_share_a_daemon_json(host: Host) -> None:
    original = write_json(host.daemon_json, '{"debug": true}')
    dev = host.args(stack_id="registry-stack-dev", ca=None)
    prod = host.args(stack_id="registry-stack-prod", ca=None, mirror="https://docker-cache.prod.internal.network")
    ok("apply", dev)
    ok("apply", prod)
    assert len(json.loads(host.daemon_json.read_text())["registry-mirrors"]) == 2
    ok("remove", dev)  # not the last writer: takes out only its own mirror
    assert json.loads(host.daemon_json.read_text()) == {
        "debug": True, "registry-mirrors": ["https://docker-cache.prod.internal.network"]
    }
    ok("remove", prod)
    config = json.loads(host.daemon_json.read_text())
    # prod found the key (dev added it), so it leaves an empty list: the same as none to dockerd.
    assert config.pop("registry-mirrors", []) == [] and config == {"debug": True}
    # In reverse order each one finds its own bytes: the original comes back exactly.
    host.daemon_json.write_bytes(original)
    ok("apply", dev)
    ok("apply", prod)
    ok("remove", prod)
    ok("remove", dev)
    assert host.daemon_json.read_bytes() == original


def test_remove_without_a_state_file_takes_out_only_what_is_ours(host: Host) -> None:
    write_json(host.daemon_json, json.dumps({"registry-mirrors": [OTHER_MIRROR]}))
    ok("apply", host.args())
    for state in host.state_dir.iterdir():
        state.unlink()
    ok("remove", host.args())
    assert json.loads(host.daemon_json.read_text()) == {"registry-mirrors": [OTHER_MIRROR]}
    assert not host.ca_path.exists()


# ---------------------------------------------------------------------------------------
# CA file, containerd hosts.toml, /etc/hosts
# ---------------------------------------------------------------------------------------


def test_ca_file_is_written_and_removed_with_the_folders_we_made(host: Host) -> None:
    host.certs_d.mkdir()  # exists before us: must stay
    ok("apply", host.args())
    assert host.ca_path.read_text() == CA
    ok("remove", host.args())
    assert not host.ca_path.exists()
    assert not host.ca_path.parent.exists()
    assert host.certs_d.is_dir()


def test_a_ca_file_changed_by_someone_else_is_left_alone(host: Host) -> None:
    ok("apply", host.args())
    host.ca_path.write_text("their CA\n")
    report = ok("remove", host.args())
    assert host.ca_path.read_text() == "their CA\n"
    assert any("left as it is" in note for note in report["notes"])


def test_a_new_ca_replaces_the_file_without_a_reload(host: Host, sighup_counter: Any) -> None:
    pid, sighups = sighup_counter
    ok("apply", host.args(reload=f"pid:{pid}"))
    assert sighups(expected=1) == 1
    report = ok("apply", host.args(reload=f"pid:{pid}", ca=CA.replace("fake", "next")))
    assert report["changed"] == [str(host.ca_path)]
    assert "next" in host.ca_path.read_text()
    assert sighups() == 1, "dockerd reads certs.d on each connection: no reload for a CA"


def test_containerd_hosts_toml_is_written_and_removed(host: Host) -> None:
    original = write_json(host.daemon_json, "{}")
    ok("apply", host.args(containerd=True))
    text = host.hosts_toml.read_text()
    assert 'server = "https://registry-1.docker.io"' in text
    assert f'[host."{MIRROR}"]' in text
    ok("remove", host.args(containerd=True))
    assert not host.hosts_toml.exists()
    assert not host.containerd_d.exists()
    assert host.daemon_json.read_bytes() == original


def test_containerd_only_host_leaves_daemon_json_alone(host: Host) -> None:
    original = write_json(host.daemon_json, '{"debug": true}')
    ok("apply", host.args(docker=False, containerd=True))
    assert host.hosts_toml.exists()
    assert host.daemon_json.read_bytes() == original
    assert not host.ca_path.exists()


def test_a_foreign_hosts_toml_comes_back_on_remove(host: Host) -> None:
    host.hosts_toml.parent.mkdir(parents=True)
    theirs = b'server = "https://registry-1.docker.io"\n[host."https://their-mirror"]\n'
    host.hosts_toml.write_bytes(theirs)
    ok("apply", host.args(containerd=True))
    assert MIRROR in host.hosts_toml.read_text()
    ok("remove", host.args(containerd=True))
    assert host.hosts_toml.read_bytes() == theirs


def test_etc_hosts_line_is_added_marked_and_removed(host: Host) -> None:
    ok("apply", host.args(etc_hosts=True))
    lines = host.etc_hosts.read_text().splitlines()
    assert lines[:2] == ORIGINAL_HOSTS.decode().splitlines()
    assert lines[2] == f"{HOSTS_LINE}  # DaemonMirror registry-stack-dev"
    # Someone adds a line after ours: removal takes out only our line.
    with host.etc_hosts.open("a") as stream:
        stream.write("10.9.9.9 their.host\n")
    ok("remove", host.args(etc_hosts=True))
    assert host.etc_hosts.read_bytes() == ORIGINAL_HOSTS + b"10.9.9.9 their.host\n"


def test_several_addresses_are_one_marked_line_each_and_leave_together(host: Host) -> None:
    names = HOSTS_LINE.split(" ", 1)[1]
    two = f"10.0.0.6 {names}\n10.0.0.5 {names}"
    ok("apply", host.args(etc_hosts=two))
    marked = host.etc_hosts.read_text().splitlines()[2:]
    assert marked == [f"10.0.0.6 {names}  # DaemonMirror registry-stack-dev",
                      f"10.0.0.5 {names}  # DaemonMirror registry-stack-dev"]
    ok("apply", host.args(etc_hosts=HOSTS_LINE))  # back to one address: the other line goes
    assert host.etc_hosts.read_text().splitlines()[2:] == [f"{HOSTS_LINE}  # DaemonMirror registry-stack-dev"]
    ok("remove", host.args(etc_hosts=True))
    assert host.etc_hosts.read_bytes() == ORIGINAL_HOSTS


def test_etc_hosts_without_final_newline_comes_back_exactly(host: Host) -> None:
    host.etc_hosts.write_bytes(b"127.0.0.1 localhost")
    ok("apply", host.args(etc_hosts=True))
    assert host.etc_hosts.read_text().splitlines()[1].startswith(HOSTS_LINE)
    ok("remove", host.args(etc_hosts=True))
    assert host.etc_hosts.read_bytes() == b"127.0.0.1 localhost"


def test_dropping_a_flag_takes_back_what_it_added(host: Host) -> None:
    ok("apply", host.args(etc_hosts=True, containerd=True))
    ok("apply", host.args())
    assert host.etc_hosts.read_bytes() == ORIGINAL_HOSTS
    assert not host.hosts_toml.exists()
    assert host.ca_path.exists()


# ---------------------------------------------------------------------------------------
# Validation, reload, rollback, permissions
# ---------------------------------------------------------------------------------------


def fake_dockerd(folder: Path, *, validates: bool, accepts: bool = True) -> str:
    """A dockerd stand-in: with or without --validate (Docker 23+ vs 20.10)."""
    script = folder / "fake-dockerd"
    help_text = "--validate   Validate daemon configuration and exit" if validates else "--debug"
    verdict = "echo configuration OK; exit 0" if accepts else "echo bad key >&2; exit 1"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "--help" ]; then echo "{help_text}"; exit 0; fi\n'
        f'if [ "$1" = "--validate" ]; then {verdict}; fi\n'
        "exit 125\n"
    )
    script.chmod(0o755)
    return str(script)


def test_validation_failure_changes_nothing(host: Host) -> None:
    original = write_json(host.daemon_json, '{"debug": true}')
    args = host.args(dockerd=fake_dockerd(host.root, validates=True, accepts=False))
    result = run("apply", args)
    assert result.returncode == 1
    assert "dockerd --validate refuses" in result.stderr and "bad key" in result.stderr
    assert host.daemon_json.read_bytes() == original
    assert not host.ca_path.exists()


def test_validation_is_used_when_supported_and_skipped_on_docker_20(host: Host) -> None:
    report = ok("apply", host.args(dockerd=fake_dockerd(host.root, validates=True)))
    assert any("dockerd --validate accepted" in note for note in report["notes"])
    ok("remove", host.args())
    report = ok("apply", host.args(dockerd=fake_dockerd(host.root, validates=False)))
    assert any("Docker 23 or later" in note for note in report["notes"])


def test_a_failed_reload_rolls_every_change_back(host: Host) -> None:
    original = write_json(host.daemon_json, '{"debug": true}')
    before = host.snapshot()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs: the SIGHUP fails
    result = run("apply", host.args(reload=f"pid:{dead.pid}", etc_hosts=True, containerd=True))
    assert result.returncode == 1
    assert "rolled back" in result.stderr
    assert host.daemon_json.read_bytes() == original
    assert host.snapshot() == before
    assert not list(host.state_dir.glob("*.json"))


@pytest.mark.skipif(os.geteuid() != 0 or not Path(SYSTEM_PYTHON).exists(), reason="needs root and /usr/bin/python3")
def test_an_unprivileged_user_gets_a_clear_message(host: Host) -> None:
    original = write_json(host.daemon_json, "{}")
    host.state_dir.mkdir(parents=True)
    # The system python3 (a user could not run one under /root), as user "nobody".
    result = run("apply", host.args(), python=SYSTEM_PYTHON, cwd="/",
                 preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)))
    assert result.returncode == 1
    assert "permission denied" in result.stderr and "sudo=true" in result.stderr
    assert host.daemon_json.read_bytes() == original


def test_bad_usage_is_refused(host: Host) -> None:
    assert run("frobnicate", host.args()).returncode == 2
    assert run("apply", {"id": "x y"}).returncode == 1
    assert run("apply", {**host.args(), "settle_seconds": "soon"}).returncode == 2
    assert run("apply", [1, 2]).returncode == 2


# ---------------------------------------------------------------------------------------
# The script itself
# ---------------------------------------------------------------------------------------


def test_the_script_runs_on_python_3_7_and_uses_only_the_standard_library() -> None:
    source = HOST_SCRIPT.read_text()
    tree = ast.parse(source, feature_version=(3, 7))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(name=node.module or "")])
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
    assert "from __future__ import annotations" in source, "keeps 3.7 from evaluating the X | None hints"


def test_sighup_counter_sees_signals(sighup_counter: Any) -> None:
    """Guards the other tests: the stand-in really counts."""
    pid, sighups = sighup_counter
    os.kill(pid, signal.SIGHUP)
    assert sighups(expected=1) == 1


def test_state_records_the_original_bytes(host: Host) -> None:
    original = write_json(host.daemon_json, '{"debug": true}')
    ok("apply", host.args())
    state = json.loads((host.state_dir / "daemon-mirror-registry-stack-dev.json").read_text())
    record = state["items"][f"daemon_json:{host.daemon_json}"]
    assert record["original"] == {"text": original.decode()}
    assert record["written_sha256"] == hashlib.sha256(host.daemon_json.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------
# The machine a `local` entry means: the record names it, a remove elsewhere refuses
# ---------------------------------------------------------------------------------------

from components.host_scripts.daemon_mirror_host import same_machine, this_machine  # noqa: E402

LAPTOP = {"hostname": "laptop-7", "id": "9f" * 16}


def state_file(host: Host) -> dict[str, Any]:
    (path,) = host.state_dir.glob("daemon-mirror-*.json")
    return json.loads(path.read_text())


def test_the_record_on_the_host_names_the_machine_that_applied_it(host: Host) -> None:
    ok("apply", {**host.args(), "machine": this_machine()})
    recorded = state_file(host)["machine"]
    assert recorded == this_machine()
    assert recorded["hostname"] == os.uname().nodename
    # An ssh host's record names the machine too (the args carry none for ssh hosts).
    other = Host(host.root.parent / "other-root")
    ok("apply", other.args())
    assert state_file(other)["machine"] == this_machine()


def test_the_machine_is_named_by_an_app_specific_hash_not_its_machine_id(tmp_path: Path) -> None:
    machine_id = "4c4c4544004d3510804bb4c04f393432"
    first, second = tmp_path / "machine-id", tmp_path / "dbus-machine-id"
    second.write_text(machine_id + "\n")
    named = this_machine((str(first), str(second)))  # the first file is missing: the second counts
    assert len(named["id"]) == 32 and machine_id not in named["id"]
    first.write_text("0" * 32 + "\n")
    assert this_machine((str(first), str(second)))["id"] not in ("", named["id"])
    assert this_machine((str(tmp_path / "none"),))["id"] == ""


def test_same_machine_goes_by_machine_id_and_by_name_without_one() -> None:
    assert same_machine({"hostname": "old-name", "id": "ab"}, {"hostname": "new-name", "id": "ab"})
    assert not same_machine({"hostname": "ci", "id": "ab"}, {"hostname": "ci", "id": "cd"})
    assert same_machine({"hostname": "box", "id": ""}, {"hostname": "box", "id": "cd"})
    assert not same_machine({"hostname": "", "id": ""}, {"hostname": "", "id": ""})


def test_a_remove_from_another_machine_touches_nothing_and_says_why(host: Host) -> None:
    write_json(host.daemon_json, '{"debug": true}\n')
    ok("apply", {**host.args(etc_hosts=True), "machine": this_machine()})
    before = host.snapshot()
    state_before = state_file(host)

    # The same command, as pulumi-command would run it from laptop-7's record on this machine.
    result = run("remove", {**host.args(etc_hosts=True), "machine": LAPTOP})
    assert result.returncode == 1
    assert "'laptop-7'" in result.stderr and repr(os.uname().nodename) in result.stderr
    assert "Nothing was touched" in result.stderr and "pulumi state delete" in result.stderr
    assert host.snapshot() == before
    assert state_file(host) == state_before

    # From the machine that applied it, the same remove restores everything.
    ok("remove", {**host.args(etc_hosts=True), "machine": {**this_machine(), "hostname": "renamed-since"}})
    assert host.daemon_json.read_text() == '{"debug": true}\n'
    assert host.etc_hosts.read_bytes() == ORIGINAL_HOSTS


def test_an_apply_meant_for_another_machine_writes_nothing(host: Host) -> None:
    before = host.snapshot()
    result = run("apply", {**host.args(), "machine": LAPTOP})
    assert result.returncode == 1 and "planned for 'laptop-7'" in result.stderr
    assert host.snapshot() == before and not host.state_dir.exists()


@pytest.mark.parametrize("machine", [{"hostname": 7}, "laptop-7", {"hostname": "", "id": ""}])
def test_unusable_machine_args_are_refused(host: Host, machine: Any) -> None:
    result = run("apply", {**host.args(), "machine": machine})
    assert result.returncode == 2 and "machine" in result.stderr


# ---------------------------------------------------------------------------------------
# dockerd image stores: what the host reads decides what it gets (detect_docker)
# ---------------------------------------------------------------------------------------

HUB_CACHE = "https://docker-cache.dev.internal.network:8443"
GHCR_CACHE = "https://ghcr-cache.dev.internal.network:8443"
CONTAINERD_STORE = [["driver-type", "io.containerd.snapshotter.v1"]]
GRAPH_DRIVER = [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]]


def fake_program(folder: Path, name: str, output_by_argument: dict[str, str]) -> str:
    """A stand-in docker/dockerd CLI: prints the output of the first argument it was given."""
    script = folder / name
    cases = []
    for index, (argument, output) in enumerate(output_by_argument.items()):
        answer = folder / f"{name}.answer{index}"
        answer.write_text(output)
        cases.append(f"  *'{argument}'*) cat '{answer}'; exit 0 ;;\n")
    script.write_text(f'#!/bin/sh\ncase "$*" in\n{"".join(cases)}esac\nexit 1\n')
    script.chmod(0o755)
    return str(script)


def fake_docker_cli(folder: Path, version: str, driver_status: list[list[str]]) -> str:
    """`docker info --format '{{json .}}'` as a running daemon answers it (ServerVersion, DriverStatus)."""
    info = json.dumps({"ServerVersion": version, "Driver": "x", "DriverStatus": driver_status})
    return fake_program(folder, "docker", {"{{json .}}": info})


def store_args(host: Host, docker_cli: str = "", dockerd: str = "") -> dict[str, Any]:
    """What DaemonMirror sends a docker host caching Docker Hub and ghcr.io (the component's own rendering)."""
    from components.daemon_mirror import HostPaths, MirrorPlan, host_script_args
    from components.mirror_settings import MirrorHost

    paths = HostPaths(
        daemon_json=str(host.daemon_json), docker_certs_d=str(host.certs_d), containerd_certs_d=str(host.containerd_d),
        etc_hosts=str(host.etc_hosts), state_dir=str(host.state_dir),
    )
    args = MirrorPlan(
        host=MirrorHost(entry="ssh://root@node1", user="root", host="node1", host_key="ssh-ed25519 AAAA"),
        stack_id="registry-stack-dev", cache_url=HUB_CACHE, cache_address=HUB_CACHE.removeprefix("https://"),
        upstream_url="https://registry-1.docker.io",
        more_caches=(("https://ghcr.io", GHCR_CACHE, GHCR_CACHE.removeprefix("https://")),),
        paths=paths, reload="none",
    )
    script_args = host_script_args(args, CA)
    script_args.update({"docker_cli": docker_cli, "dockerd": dockerd})
    return script_args


def store_files(host: Host) -> set[str]:
    return {str(p.relative_to(host.certs_d)) for p in host.certs_d.rglob("*") if p.is_file()}


def test_graph_driver_gets_the_hub_mirror_and_each_caches_ca_no_hosts_toml(host: Host, tmp_path: Path) -> None:
    cli = fake_docker_cli(tmp_path, "28.5.2+dfsg4", GRAPH_DRIVER)
    report = ok("apply", store_args(host, docker_cli=cli))
    assert store_files(host) == {
        "docker-cache.dev.internal.network:8443/ca.crt", "ghcr-cache.dev.internal.network:8443/ca.crt",
    }
    docker = report["docker"]
    assert docker["image_store"] == "graph driver" and docker["detected_by"] == "docker info"
    assert docker["transparent"] == {"docker.io": HUB_CACHE}
    why = docker["not_transparent"]["ghcr.io"]
    assert "mirrors Docker Hub only" in why and "pull ghcr-cache.dev.internal.network:8443/<name> instead" in why
    assert any(note.startswith("not transparent on this host: ghcr.io") for note in report["notes"])


def test_docker_28_containerd_store_gets_a_hosts_toml_per_registry_docker_io_included(
    host: Host, tmp_path: Path
) -> None:
    write_json(host.daemon_json, json.dumps({"registry-mirrors": [OTHER_MIRROR]}))
    cli = fake_docker_cli(tmp_path, "28.5.2+dfsg4", CONTAINERD_STORE)
    report = ok("apply", store_args(host, docker_cli=cli))
    assert store_files(host) == {
        "docker-cache.dev.internal.network:8443/ca.crt", "ghcr-cache.dev.internal.network:8443/ca.crt",
        "docker.io/ca.crt", "docker.io/hosts.toml", "ghcr.io/hosts.toml",
    }
    ghcr = (host.certs_d / "ghcr.io/hosts.toml").read_text()
    assert 'server = "https://ghcr.io"' in ghcr
    assert f'[host."{GHCR_CACHE}"]' in ghcr
    assert f'ca = "{host.certs_d}/ghcr-cache.dev.internal.network:8443/ca.crt"' in ghcr
    hub = (host.certs_d / "docker.io/hosts.toml").read_text()
    assert 'server = "https://registry-1.docker.io"' in hub and f'[host."{HUB_CACHE}"]' in hub
    docker = report["docker"]
    assert docker["image_store"] == "containerd"
    assert docker["transparent"] == {"docker.io": HUB_CACHE, "ghcr.io": GHCR_CACHE}
    assert docker["not_transparent"] == {}
    assert any(OTHER_MIRROR in note and "takes precedence" in note for note in report["notes"])

    ok("remove", store_args(host, docker_cli=cli))
    assert store_files(host) == set()
    assert json.loads(host.daemon_json.read_text()) == {"registry-mirrors": [OTHER_MIRROR]}


def test_docker_26_containerd_store_gets_the_ca_under_docker_io_but_no_hosts_toml(host: Host, tmp_path: Path) -> None:
    cli = fake_docker_cli(tmp_path, "26.1.5+dfsg1", CONTAINERD_STORE)
    report = ok("apply", store_args(host, docker_cli=cli))
    assert "docker.io/ca.crt" in store_files(host)
    assert not any(name.endswith("hosts.toml") for name in store_files(host))
    assert "does not read certs.d/<registry>/hosts.toml" in report["docker"]["not_transparent"]["ghcr.io"]


@pytest.mark.parametrize(("features", "version", "hosts_toml"), [
    ({"containerd-snapshotter": True}, "28.5.2", True),
    ({"containerd-snapshotter": False}, "29.1.0", False),
    ({}, "29.1.0", True),  # Docker 29's default for a new install
    ({}, "28.5.2", False),
])
def test_without_a_running_daemon_the_store_comes_from_daemon_json_and_the_version(
    host: Host, tmp_path: Path, features: dict[str, bool], version: str, hosts_toml: bool
) -> None:
    write_json(host.daemon_json, json.dumps({"features": features} if features else {}))
    dockerd = fake_program(tmp_path, "dockerd", {"--version": f"Docker version {version}, build abc\n"})
    report = ok("apply", store_args(host, docker_cli=str(tmp_path / "no-such-docker"), dockerd=dockerd))
    assert ("ghcr.io/hosts.toml" in store_files(host)) == hosts_toml
    assert report["docker"]["version"] == version
    assert "dockerd is not running" in report["docker"]["detected_by"]


def test_a_store_switch_between_applies_adds_and_takes_back_the_store_files(host: Host, tmp_path: Path) -> None:
    graph = fake_docker_cli(tmp_path, "28.5.2", GRAPH_DRIVER)
    containerd_dir = tmp_path / "c"
    containerd_dir.mkdir()
    containerd = fake_docker_cli(containerd_dir, "28.5.2", CONTAINERD_STORE)
    ok("apply", store_args(host, docker_cli=graph))
    before = host.snapshot()
    switched = ok("apply", store_args(host, docker_cli=containerd))
    assert {"docker.io/hosts.toml", "ghcr.io/hosts.toml"} <= store_files(host)
    assert str(host.certs_d / "ghcr.io/hosts.toml") in switched["changed"]
    ok("apply", store_args(host, docker_cli=graph))
    assert host.snapshot() == before, "back on the graph driver, the hosts.toml files are gone again"


def test_remove_without_the_state_file_takes_only_store_files_that_are_still_ours(host: Host, tmp_path: Path) -> None:
    cli = fake_docker_cli(tmp_path, "28.5.2", CONTAINERD_STORE)
    ok("apply", store_args(host, docker_cli=cli))
    for state in host.state_dir.glob("daemon-mirror-*.json"):
        state.unlink()
    edited = host.certs_d / "docker.io/hosts.toml"
    edited.write_text(edited.read_text() + "# edited by the site\n")
    ok("remove", store_args(host, docker_cli=cli))
    assert store_files(host) == {"docker.io/hosts.toml"}, "the edited file is not ours any more"


def test_an_existing_hosts_toml_gets_its_bytes_back(host: Host, tmp_path: Path) -> None:
    theirs = host.certs_d / "ghcr.io/hosts.toml"
    theirs.parent.mkdir(parents=True)
    theirs.write_text('server = "https://ghcr.io"\n')
    cli = fake_docker_cli(tmp_path, "28.5.2", CONTAINERD_STORE)
    ok("apply", store_args(host, docker_cli=cli))
    assert GHCR_CACHE in theirs.read_text()
    ok("remove", store_args(host, docker_cli=cli))
    assert theirs.read_text() == 'server = "https://ghcr.io"\n'


# ---------------------------------------------------------------------------------------
# containerd's config.toml: config_path (containerd 2.1's default '' reads no hosts.toml)
# ---------------------------------------------------------------------------------------

# /etc/containerd/config.toml as Debian's containerd 2.1.9 package ships it.
DEBIAN_CONTAINERD_CONFIG = """version = 2
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
"""


def containerd_args(host: Host) -> dict[str, Any]:
    args = host.args(docker=False, containerd=True, ca=None)
    config = str(host.root / "etc/containerd/config.toml")
    args["containerd_config"] = {"path": config, "certs_d": str(host.containerd_d)}
    return args


def containerd_config(host: Host) -> Path:
    path = host.root / "etc/containerd/config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_config_path_is_added_to_debians_containerd_config_and_taken_back(host: Host) -> None:
    config = containerd_config(host)
    config.write_text(DEBIAN_CONTAINERD_CONFIG)
    report = ok("apply", containerd_args(host))
    parsed = tomllib.loads(config.read_text())
    assert parsed["plugins"]["io.containerd.grpc.v1.cri"]["registry"]["config_path"] == str(host.containerd_d)
    assert parsed["plugins"]["io.containerd.grpc.v1.cri"]["cni"]["bin_dir"] == "/usr/lib/cni", "the rest stays"
    assert "restart it to read config_path" in report["containerd"], "reload=none: not restarted, and it says so"
    assert ok("apply", containerd_args(host))["changed"] == []
    ok("remove", containerd_args(host))
    assert config.read_text() == DEBIAN_CONTAINERD_CONFIG


def test_an_empty_config_path_of_a_version_3_config_is_filled_in_place(host: Host) -> None:
    config = containerd_config(host)
    original = (
        "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = ''\n"
        "[plugins.'io.containerd.transfer.v1.local']\n  max_concurrent_downloads = 3\n  config_path = ''\n"
    )
    config.write_text(original)
    ok("apply", containerd_args(host))
    parsed = tomllib.loads(config.read_text())["plugins"]
    assert parsed["io.containerd.cri.v1.images"]["registry"] == {"config_path": str(host.containerd_d)}
    assert parsed["io.containerd.transfer.v1.local"] == {"max_concurrent_downloads": 3, "config_path": ""}
    ok("remove", containerd_args(host))
    assert config.read_text() == original


def test_a_config_path_already_including_the_folder_is_left_alone(host: Host) -> None:
    config = containerd_config(host)
    original = (
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n'
        f'  config_path = "{host.containerd_d}:/etc/docker/certs.d"\n'
    )
    config.write_text(original)
    report = ok("apply", containerd_args(host))
    assert config.read_text() == original
    assert str(config) not in report["changed"] and "containerd" not in report


def test_another_config_path_is_not_overridden_and_the_report_says_so(host: Host) -> None:
    config = containerd_config(host)
    config.write_text('version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/srv/certs"\n')
    report = ok("apply", containerd_args(host))
    assert 'config_path = "/srv/certs"' in config.read_text()
    assert any("/srv/certs" in note and "left as it is" in note for note in report["notes"])


def test_inline_registry_mirrors_are_refused_before_anything_changes(host: Host) -> None:
    config = containerd_config(host)
    config.write_text('version = 2\n[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\n'
                      '  endpoint = ["https://mirror.example"]\n')
    before = host.snapshot()
    result = run("apply", containerd_args(host))
    assert result.returncode == 1 and "move them to hosts.toml" in result.stderr
    assert host.snapshot() == before


@pytest.mark.parametrize("content", [None, "version = 1\n"])
def test_a_missing_config_is_created_and_an_old_one_refused(host: Host, content: str | None) -> None:
    config = containerd_config(host)
    if content is None:
        ok("apply", containerd_args(host))
        assert tomllib.loads(config.read_text())["version"] == 2
        ok("remove", containerd_args(host))
        assert not config.exists()
    else:
        config.write_text(content)
        result = run("apply", containerd_args(host))
        assert result.returncode == 1 and "containerd config migrate" in result.stderr
