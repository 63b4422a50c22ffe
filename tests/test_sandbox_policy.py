"""The sandbox policy, its bubblewrap command line and its settings: pure, in memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from codebox import CodeBoxSettings, Sandbox
from codebox.local import _sandbox
from codebox.sandbox import resolve
from codebox.server import ServerSettings


def _argv(policy=None, **kw):
    return _sandbox.bwrap_argv(
        "/usr/bin/bwrap", _sandbox.normalize(policy), kernel_argv=["/py/bin/python", "-m", "k"],
        work_dir="/box/work", home="/box/home", ipc_dir="/box/ipc",
        connection_file="/rt/kernel-1.json", env={"PATH": "/usr/bin"}, python=["/py"], **kw)


def _pairs(argv, flag):
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_the_command_line_shares_nothing_it_does_not_name():
    argv = _argv()
    assert argv[:4] == ["/usr/bin/bwrap", "--unshare-all", "--unshare-user", "--disable-userns"]
    # Read-only but for the sized tmpfs and the bound dirs; / goes read-only last of all.
    assert _pairs(argv, "--remount-ro") == ["/dev", "/"]
    assert argv.index("--remount-ro", argv.index("/box/ipc")) > argv.index("/rt/kernel-1.json")
    assert _pairs(argv, "--tmpfs") == ["/dev/shm", "/tmp"] and _pairs(argv, "--size") == [
        str(2048 * 1024 * 1024)] * 2
    assert "/proc/sys" in _pairs(argv, "--ro-bind-try")
    assert "--share-net" not in argv and "--clearenv" in argv
    assert set(_pairs(argv, "--bind")) == {"/box/work", "/box/home", "/box/ipc"}
    ro = _pairs(argv, "--ro-bind") + _pairs(argv, "--ro-bind-try")
    assert "/py" in ro and "/rt/kernel-1.json" in ro
    assert str(Path.home()) not in ro and "/" not in ro and "/etc" not in ro
    assert not any(p.startswith("/etc/") and p.endswith(("shadow", "passwd", "resolv.conf"))
                   for p in ro)
    assert _pairs(argv, "--chdir") == ["/box/work"]
    tail = argv[argv.index("--") + 1:]
    assert tail[-3:] == ["/py/bin/python", "-m", "k"]
    assert "'NPROC': 256" in tail[4] and f"'FSIZE': {2048 * 1024 * 1024}" in tail[4]


def test_the_network_and_paths_are_shared_only_when_granted():
    argv = _argv({"network": True, "read_only_paths": ["/data"]})
    assert "--share-net" in argv and "/data" in _pairs(argv, "--ro-bind-try")
    assert "/etc/resolv.conf" in _pairs(argv, "--ro-bind-try") or not Path(
        "/etc/resolv.conf").exists()
    unlimited = _argv({"memory_mb": None, "max_processes": None, "disk_mb": None})
    assert "--size" not in unlimited and "'AS'" not in unlimited[-4]


@pytest.mark.parametrize("bad", [{"memory_mb": 0}, {"disk_mb": "1"}, {"network": "yes"},
                                 {"env": {"A=B": "x"}}, {"read_only_paths": "/x"},
                                 {"unknown": 1}])
def test_a_bad_policy_is_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        _sandbox.normalize(bad)


def test_policy_keys_are_canonical():
    assert _sandbox.policy_key({"network": False}) == _sandbox.policy_key({})
    assert _sandbox.policy_key({"network": True}) != _sandbox.policy_key({})


def test_the_kernelspec_names_the_provisioner(tmp_path):
    spec = json.loads((_sandbox.write_kernelspec(tmp_path, trusted=True) / "kernel.json")
                      .read_text())
    provisioner = spec["metadata"]["kernel_provisioner"]
    assert provisioner == {"provisioner_name": "codebox-sandbox", "config": {"trusted": True}}
    assert spec["interrupt_mode"] == "message" and "{connection_file}" in spec["argv"]


def test_the_sandbox_model():
    assert Sandbox().model_dump() == _sandbox.DEFAULTS
    assert resolve(None, False) is None and resolve(True, False) == Sandbox()
    assert resolve(None, Sandbox(network=True)).network
    assert resolve(False, True) is None
    for bad in ({"memory_mb": 0}, {"read_only_paths": ["relative"]}, {"env": {"": "x"}},
                {"extra": 1}):
        with pytest.raises(ValidationError):
            Sandbox(**bad)
    with pytest.raises(TypeError):
        resolve("yes", None)  # type: ignore[arg-type]


def test_settings_read_the_policy(monkeypatch):
    monkeypatch.setenv("CODEBOX_SANDBOX", "true")
    assert CodeBoxSettings().sandbox is True
    monkeypatch.setenv("CODEBOX_SANDBOX", '{"network": true, "memory_mb": 512}')
    assert CodeBoxSettings().sandbox == Sandbox(network=True, memory_mb=512)


def test_the_server_sandboxes_unless_told_otherwise(tmp_path):
    assert ServerSettings(api_keys=["k"]).sandbox_policy() == Sandbox()
    assert ServerSettings(api_keys=["k"], sandbox=False).sandbox_policy() is None
    # Another gateway's kernels are that gateway's business, unless asked for.
    assert ServerSettings(api_keys=["k"], gateway_url="http://g").sandbox_policy() is None
    assert ServerSettings(api_keys=["k"], gateway_url="http://g", sandbox=True,
                          sandbox_memory_mb=64).sandbox_policy().memory_mb == 64


def test_api_keys_come_from_a_file(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# the keys\nfirst\n\n second  # a comment\n")
    settings = ServerSettings(api_key_file=keys, api_keys=["third"])
    assert settings.api_keys == ["third", "first", "second"]
    with pytest.raises(ValidationError, match="cannot read"):
        ServerSettings(api_key_file=tmp_path / "missing")


def test_serving_without_a_sandbox_warns_loudly():
    from click.testing import CliRunner

    from codebox.cli import main

    # Refused later (no-auth beyond loopback), but the warning comes first.
    result = CliRunner().invoke(main, ["serve", "--no-sandbox", "--no-auth",
                                       "--host", "0.0.0.0"])
    assert result.exit_code != 0
    assert "WITHOUT a sandbox" in result.output


def test_serve_reads_keys_from_a_file_and_names_an_unreadable_one(tmp_path):
    from click.testing import CliRunner

    from codebox.cli import main

    result = CliRunner().invoke(main, ["serve", "--api-key-file", str(tmp_path / "none")])
    assert result.exit_code == 2 and "cannot read the API key file" in result.output
