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
        "/usr/bin/bwrap", _sandbox.normalize(policy), program=["/py/bin/python", "-m", "k"],
        cwd="/box/work", env={"PATH": "/usr/bin"},
        writable=["/box/work", "/box/home", "/box/ipc"],
        files={_sandbox.CONNECTION_INSIDE: "/rt/kernel-1.json"}, python=["/py"], **kw)


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


def test_paths_are_shared_only_when_granted_and_the_network_never():
    argv = _argv({"network": True, "read_only_paths": ["/data"]}, hosts_file="/box/hosts",
                 net_dir="/box/net")
    assert "/data" in _pairs(argv, "--ro-bind-try")
    assert "--share-net" not in argv and "/etc/resolv.conf" not in argv
    hosts = argv.index("/box/hosts")
    assert argv[hosts - 1:hosts + 2] == ["--ro-bind", "/box/hosts", "/etc/hosts"]
    assert "/box/net" in _pairs(argv, "--ro-bind") and "/box/net" not in _pairs(argv, "--bind")
    unlimited = _argv({"memory_mb": None, "max_processes": None, "disk_mb": None})
    assert "--size" not in unlimited and "'AS'" not in unlimited[-4]


@pytest.mark.parametrize("bad", [{"memory_mb": 0}, {"disk_mb": "1"}, {"network": "yes"},
                                 {"env": {"A=B": "x"}}, {"read_only_paths": "/x"},
                                 {"unknown": 1}])
def test_a_bad_policy_is_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        _sandbox.normalize(bad)


def test_a_launch_with_egress_runs_the_kernel_behind_the_forwarder(tmp_path):
    box = tmp_path / "box"
    box.mkdir()
    for network, egress in ((False, False), (["pypi.org:443"], True), (True, True)):
        policy = _sandbox.normalize({"network": network})
        dirs = _sandbox.box_dirs(box, policy)
        launch = _sandbox.prepare_launch(
            "/usr/bin/bwrap", policy, box_dir=box, dirs=dirs,
            kernel_argv=["/py/bin/python", "-m", "ipykernel_launcher", "-f", "/rt/k.json"],
            info={"key": b"k", "ip": dirs["gw"] + "/k", "shell_port": 1, "iopub_port": 2,
                  "stdin_port": 3, "hb_port": 4, "control_port": 5},
            connection_file="/rt/k.json", cgroup_name="codebox-test-never-made")
        # bwrap's options are in a file (its pid 1 shows no host path), then the command.
        options = [o.decode() for o in (box / "bwrap.args").read_bytes().split(b"\0") if o]
        argv = [*options, *launch.cmd[launch.cmd.index("--"):]]
        assert "--share-net" not in argv and (box / "hosts").read_text().startswith(
            "127.0.0.1\tlocalhost")
        tail = argv[argv.index("--") + 1:]
        assert (dirs["net"] in _pairs(argv, "--ro-bind")) is egress
        assert ("HTTPS_PROXY" in argv) is egress and ("no_proxy" in argv) is egress
        if egress:
            assert "http://127.0.0.1:3128" in argv and "localhost,127.0.0.1,::1" in argv
            sock = tail.index(dirs["net"] + "/proxy.sock")
            assert tail[sock + 1:sock + 3] == ["3128", "--"]
        assert tail[-5:] == ["/py/bin/python", "-m", "ipykernel_launcher", "-f",
                             _sandbox.CONNECTION_INSIDE]
        launch.cgroups.remove()


def test_a_request_may_narrow_the_network_of_an_untrusting_kernelspec_not_widen_it():
    base = {"network": ["*.example.org", "10.0.0.0/8"]}
    ok = _sandbox.requested_policy(base, json.dumps({"network": ["a.example.org:443"]}),
                                   trusted=False)
    assert ok["network"] == ["a.example.org:443"]
    for wider in (True, ["example.org"], ["0.0.0.0/0"], ["host.codebox.internal"]):
        with pytest.raises(PermissionError, match="no network beyond"):
            _sandbox.requested_policy(base, json.dumps({"network": wider}), trusted=False)
    with pytest.raises(ValueError, match="not a host name"):
        _sandbox.requested_policy(base, json.dumps({"network": ["bad entry"]}), trusted=True)


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
    from codebox._limits import OUTPUT_LIMIT

    policy = ServerSettings(api_keys=["k"]).sandbox_policy()
    assert policy.model_dump() == {**Sandbox().model_dump(), "output_limit": OUTPUT_LIMIT}
    assert policy.policy()["own_work_dir"]  # its sessions' directories are the server's
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


@pytest.mark.parametrize("text, network", [
    ("true", True), ("false", False), ("", False),
    ("pypi.org, *.example.com:443", ["pypi.org", "*.example.com:443"]),
    ('["10.0.0.0/8", "host.codebox.internal:8080"]', ["10.0.0.0/8", "host.codebox.internal:8080"]),
])
def test_the_network_reads_from_settings_as_bool_json_or_commas(monkeypatch, text, network):
    monkeypatch.setenv("CODEBOX_SERVER_SANDBOX_NETWORK", text)
    assert ServerSettings(api_keys=["k"]).sandbox_policy().network == network
    monkeypatch.setenv("CODEBOX_SANDBOX", "true")
    monkeypatch.setenv("CODEBOX_SANDBOX_NETWORK", text)
    assert CodeBoxSettings().sandbox == Sandbox(network=network)
    monkeypatch.setenv("CODEBOX_SANDBOX", "false")  # no sandbox stays none
    assert CodeBoxSettings().sandbox is False


def test_a_bad_network_setting_is_refused_with_the_entry():
    for bad in ("pypi.org,not a host", "[1, 2]", "[not json"):
        with pytest.raises(ValidationError):
            ServerSettings(api_keys=["k"], sandbox_network=bad)


def test_serve_and_mcp_take_the_network_forms(monkeypatch):
    from click.testing import CliRunner

    import codebox.integrations.mcp
    import codebox.server
    from codebox.cli import main

    seen = {}
    monkeypatch.setattr(codebox.server, "serve",
                        lambda settings, **kw: seen.update(policy=settings.sandbox_policy()) or 0)
    for args, network in ((["--sandbox-network"], True), (["--no-sandbox-network"], False),
                          (["--sandbox-network", "a.example,10.0.0.0/8"],
                           ["a.example", "10.0.0.0/8"]), ([], False)):
        result = CliRunner().invoke(main, ["serve", "--api-key", "k", *args])
        assert result.exit_code == 0, result.output
        assert seen["policy"].network == network
    result = CliRunner().invoke(main, ["serve", "--api-key", "k", "--sandbox-network", "a b"])
    assert result.exit_code == 2 and "'a b' is not a host name" in result.output
    monkeypatch.setattr(codebox.integrations.mcp, "serve_stdio",
                        lambda settings: seen.update(mcp=settings.sandbox))
    result = CliRunner().invoke(main, ["mcp", "--sandbox-network", "pypi.org"])
    assert result.exit_code == 0, result.output
    assert seen["mcp"] == Sandbox(network=["pypi.org"])
    result = CliRunner().invoke(main, ["mcp", "--sandbox-network", "127.0.0.1"])
    assert result.exit_code == 2 and "loopback is never reachable" in result.output
def test_the_servers_defaults_fit_the_machines_memory():
    from codebox.server.settings import MOST_SESSIONS_PER_KEY, sessions_that_fit

    assert sessions_that_fit(2048, machine_mb=24_000) == 8  # 80 % less 1 GiB, in 2 GiB
    assert sessions_that_fit(2048, machine_mb=4_000) == 1  # at least one
    assert sessions_that_fit(512, machine_mb=512_000) == MOST_SESSIONS_PER_KEY
    assert sessions_that_fit(None, machine_mb=1_000) == MOST_SESSIONS_PER_KEY
    settings = ServerSettings(api_keys=["k"])
    machine = sessions_that_fit(settings.sandbox_memory_mb)
    assert settings.max_sessions_per_key == machine
    assert settings.max_sessions_per_key * settings.sandbox_memory_mb <= max(
        2048, (_memory_mb() or 0))
    assert ServerSettings(api_keys=["k"], max_sessions_per_key=3).max_sessions_per_key == 3


def _memory_mb():
    from codebox.server.settings import machine_memory_mb

    return machine_memory_mb()
