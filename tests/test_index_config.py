"""The host's package index configuration, as an installer sandbox takes it: pip's files and
``PIP_*``, uv's ``UV_*``. Pure: files in a temporary directory, an environment of our own."""

from __future__ import annotations

from codebox.local._installer import index_config


def _env(tmp_path, **extra):
    """An environment whose pip files are all under ``tmp_path``."""
    return {"HOME": str(tmp_path / "home"), "XDG_CONFIG_DIRS": str(tmp_path / "xdg"), **extra}


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_nothing_configured_is_pypi_and_its_files_host(tmp_path):
    config = index_config(_env(tmp_path), prefix=str(tmp_path / "prefix"), etc=str(tmp_path))
    assert config.entries == ["pypi.org:443", "files.pythonhosted.org:443"]
    assert config.env["PIP_INDEX_URL"] == "https://pypi.org/simple"
    assert config.env["PIP_CONFIG_FILE"] == "/dev/null"  # the installer reads no file itself
    assert config.env["UV_DEFAULT_INDEX"] == "https://pypi.org/simple"
    assert config.read_only == []


def test_files_and_variables_in_pips_order(tmp_path):
    local = tmp_path / "mirror" / "simple"
    local.mkdir(parents=True)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("six<2\n")
    _write(tmp_path / "xdg" / "pip" / "pip.conf",
           f"[global]\nindex-url = https://index.example/simple\nconstraint = {constraints}\n"
           "timeout = 5\n")
    _write(tmp_path / "home" / ".config" / "pip" / "pip.conf",
           f"[global]\nextra-index-url = file://{local}\n    http://localhost:3141/root/dev\n"
           f"find-links = {wheels}\n[install]\ntimeout = 7\n[freeze]\nindex-url = http://x.example\n")
    config = index_config(_env(tmp_path, PIP_TRUSTED_HOST="index.example"),
                          prefix=str(tmp_path / "prefix"), etc=str(tmp_path))
    assert config.entries == ["index.example:443", "host.codebox.internal:3141"]
    assert config.env["PIP_EXTRA_INDEX_URL"] == (
        f"file://{local} http://host.codebox.internal:3141/root/dev")
    assert config.env["PIP_TIMEOUT"] == "7"  # [install] over [global]
    assert config.env["PIP_TRUSTED_HOST"] == "index.example"
    # A local index is bound with its parent (its pages link to ../files), find-links and
    # the constraints file as they are.
    assert set(config.read_only) == {str(local.parent), str(wheels), str(constraints)}
    assert config.env["UV_INDEX"] == config.env["PIP_EXTRA_INDEX_URL"]
    assert config.env["UV_FIND_LINKS"] == str(wheels)


def test_variables_win_and_no_index_reaches_nothing(tmp_path):
    _write(tmp_path / "xdg" / "pip" / "pip.conf", "[global]\nindex-url = https://a.example\n")
    config = index_config(_env(tmp_path, PIP_INDEX_URL="https://b.example:8443/simple"),
                          prefix=str(tmp_path), etc=str(tmp_path))
    assert config.entries == ["b.example:8443"]
    config = index_config(_env(tmp_path, PIP_NO_INDEX="1"), prefix=str(tmp_path), etc=str(tmp_path))
    assert config.entries == [] and "PIP_INDEX_URL" not in config.env


def test_a_config_file_of_devnull_reads_no_file(tmp_path):
    _write(tmp_path / "xdg" / "pip" / "pip.conf", "[global]\nindex-url = https://a.example\n")
    config = index_config(_env(tmp_path, PIP_CONFIG_FILE="/dev/null"), prefix=str(tmp_path),
                          etc=str(tmp_path))
    assert config.entries == ["pypi.org:443", "files.pythonhosted.org:443"]


def test_uvs_own_variables_are_kept_and_reached(tmp_path):
    config = index_config(_env(tmp_path, UV_DEFAULT_INDEX="https://uv.example/simple",
                               UV_INDEX="internal=https://10.1.2.3:8080/simple",
                               UV_FIND_LINKS="https://links.example/a,https://links.example/b"),
                          prefix=str(tmp_path), etc=str(tmp_path))
    assert config.env["UV_DEFAULT_INDEX"] == "https://uv.example/simple"
    assert {"uv.example:443", "10.1.2.3:8080", "links.example:443"} <= set(config.entries)
