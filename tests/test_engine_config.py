"""What the program receives from the CLI, and how its errors and warnings reach the user.

The first half checks the harness's model of the CLI (tests/harness.py engine_config, read
from pulumi/pulumi: see the comment above `Encrypted`), since every config test relies on
it. The second half checks the program against it: a bad config reaches the user as a
message, not a traceback, and keys that look like this project's but are not are warned
about.
"""

from __future__ import annotations

import json

import pulumi
import pytest

import components.registry_stack
from components.config_schema import ConfigError
from tests import harness
from tests.harness import CliError, Encrypted, engine_config

P = "registry-stack"
USERS = ["alice:correct-horse-1"]


# ---------------------------------------------------------------------------------------
# The CLI's config, as the harness builds it
# ---------------------------------------------------------------------------------------


def test_defaults_reach_the_program_as_text_and_compact_json():
    config = engine_config({}).config
    assert config[f"{P}:enableBuild"] == "true"
    assert config[f"{P}:retainData"] == "false"
    assert config[f"{P}:httpsPort"] == "443"
    assert config[f"{P}:domain"] == ""
    assert config[f"{P}:users"] == "[]"
    assert config[f"{P}:upstreams"] == '["docker=https://registry-1.docker.io"]'


def test_stack_file_values_reach_the_program_as_text():
    config = engine_config({"httpsPort": 8443, "enableBuild": False, "httpPort": "8080",
                            "cacheClientNetworks": ["10.0.0.0/8", "fd00::/8"]}).config
    assert (config[f"{P}:httpsPort"], config[f"{P}:httpPort"]) == ("8443", "8080")
    assert config[f"{P}:enableBuild"] == "false"
    assert config[f"{P}:cacheClientNetworks"] == '["10.0.0.0/8","fd00::/8"]'


def test_json_of_lists_escapes_html_characters_as_go_does():
    text = engine_config({"mirrorHosts": ["local?containerd=true&etcHosts=true"]}).config[f"{P}:mirrorHosts"]
    assert "&" not in text and "\\u0026" in text
    assert json.loads(text) == ["local?containerd=true&etcHosts=true"]


def test_a_key_is_secret_when_any_entry_is_encrypted():
    engine = engine_config({"users": [Encrypted("alice:correct-horse-1"), "bob:battery-staple-2"]})
    assert f"{P}:users" in engine.secret_keys
    # The program sees both entries, and cannot tell which one sits in plain text.
    assert json.loads(engine.config[f"{P}:users"]) == ["alice:correct-horse-1", "bob:battery-staple-2"]
    assert engine_config({"users": ["alice:correct-horse-1"]}).secret_keys == ()


def test_secret_keys_are_encrypted_entry_by_entry():
    stored = harness.stack_file_values({"users": USERS, "domain": "x.example"}, ["users"])
    assert stored[f"{P}:users"] == [Encrypted("alice:correct-horse-1")]
    assert stored[f"{P}:domain"] == "x.example"


@pytest.mark.parametrize(
    ("value", "accepted"),
    [(True, True), ("true", True), ("false", True), ("True", False), ("yes", False), ("", False), (1, False)],
)
def test_booleans_are_real_booleans_or_the_words_true_and_false(value, accepted):
    if accepted:
        engine_config({"enableBuild": value})
    else:
        with pytest.raises(CliError, match="'enableBuild' must be of type 'boolean'"):
            engine_config({"enableBuild": value})


@pytest.mark.parametrize(
    ("value", "accepted"),
    [(8443, True), ("8443", True), ("-1", True), ("+5", True), (8443.0, True), ("8443.0", False), ("", False),
     (True, False), ("0x1bb", False)],
)
def test_integers_are_what_strconv_atoi_reads(value, accepted):
    if accepted:
        engine_config({"httpsPort": value})
    else:
        with pytest.raises(CliError, match="'httpsPort' must be of type 'integer'"):
            engine_config({"httpsPort": value})


def test_the_first_failing_key_in_sorted_order_is_reported():
    with pytest.raises(CliError) as caught:
        engine_config({"httpsPort": "x", "enableBuild": "x"})
    assert "'enableBuild'" in str(caught.value)  # enableBuild sorts before httpsPort


def test_declared_secret_keys_must_be_encrypted_and_required_keys_set(monkeypatch):
    declared = {
        "password": {"type": "string", "secret": True},
        "size": {"type": "integer", "default": 1},
    }
    monkeypatch.setattr(harness, "project_config", lambda: declared)
    with pytest.raises(CliError) as missing:
        engine_config({})
    assert str(missing.value) == "validating stack config: Stack 'dev' is missing configuration value 'password'"
    with pytest.raises(CliError) as plain:
        engine_config({"password": "hunter2"})
    assert str(plain.value) == (
        "validating stack config: Stack 'dev' with configuration key 'password' must be encrypted as it's secret"
    )
    assert engine_config({"password": Encrypted("hunter2")}).config == {f"{P}:password": "hunter2", f"{P}:size": "1"}


# ---------------------------------------------------------------------------------------
# What the user sees when the program refuses its config
# ---------------------------------------------------------------------------------------


def test_config_error_is_a_run_error():
    assert issubclass(ConfigError, pulumi.RunError)


@pytest.mark.parametrize(
    ("values", "secret_keys", "message"),
    [
        ({"enableBuild": True}, (), f"{P}:users is empty"),
        ({"enableBuild": False, "httpsPort": 99999}, (), f"{P}:httpsPort='99999' is invalid"),
        ({"enableBuild": False, "upstreamCredentials": ["docker=robot:tok-XYZZY-4242"]}, (),
         f"{P}:upstreamCredentials is stored in plain text"),
    ],
)
def test_a_bad_config_reaches_the_user_as_its_message_alone(values, secret_keys, message):
    run = harness.run_like_language_host(values, secret_keys)
    assert not run.successful
    assert len(run.errors) == 1
    assert run.errors[0].startswith(message)
    assert "Traceback" not in run.errors[0] and "File \"" not in run.errors[0]


def test_the_language_host_stand_in_shows_a_traceback_for_other_errors(monkeypatch):
    # The check above can fail: an exception that is not a RunError comes out as a traceback.
    def broken(values, stack):
        raise KeyError("not a config problem")

    monkeypatch.setattr(components.registry_stack, "settings_from_values", broken)
    run = harness.run_like_language_host({"enableBuild": False})
    assert not run.successful
    assert run.errors[0].startswith("Traceback (most recent call last)")


def test_a_good_config_runs_to_the_end_under_the_language_host_stand_in():
    assert harness.run_like_language_host({"enableBuild": False}).successful


# ---------------------------------------------------------------------------------------
# Keys that look like this project's
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("namespace", ["registry-stak", "registry_stack", "Registry-Stack", "regsitry-stack"])
def test_a_key_in_a_misspelt_namespace_is_warned_about(namespace):
    declaration = harness.declare({"enableBuild": False, f"{namespace}:domain": "corp.example"})
    warnings = [line for line in declaration.logs if line.startswith("warn:") and f"{namespace}:domain" in line]
    assert len(warnings) == 1, declaration.logs
    assert "did you mean" not in warnings[0]
    assert f"If you meant {P}:domain" in warnings[0] and "pulumi config rm" in warnings[0]


def test_keys_of_other_packages_are_not_warned_about():
    declaration = harness.declare({"enableBuild": False, "docker:host": "unix:///var/run/docker.sock",
                                   "command:dummy": "x"})
    assert not [line for line in declaration.logs if line.startswith("warn:")], declaration.logs


def test_an_unknown_key_of_this_project_names_the_key_it_is_close_to():
    with pytest.raises(ConfigError) as caught:
        harness.settings({"enableBuild": False, "httpsport": "443"})
    assert f"unknown config key {P}:httpsport: did you mean {P}:httpsPort?" in str(caught.value)
    with pytest.raises(ConfigError) as far:
        harness.settings({"enableBuild": False, "colour": "blue"})
    assert "did you mean" not in str(far.value)
