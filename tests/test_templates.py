"""Templates in memory: the model and its id, the host's index configuration for uv, the
kernel of a template (its command, its policy field), the pools' sizes."""

from __future__ import annotations

import json
import sys

import pytest
from pydantic import ValidationError

from codebox import Template
from codebox._template_kernel import (
    BOOTSTRAP,
    check_sandbox_field,
    kernelspec,
    sandbox_argv,
    site_of,
    template_of,
)
from codebox.local import _sandbox
from codebox.templates._index import pip_settings, translate

# -- the model ---------------------------------------------------------------------------


def test_equal_content_is_one_template_whatever_its_spelling():
    a = Template(packages=["Pandas>=2", "six"], preload=["pandas  as   pd"])
    b = Template(requirements="# data tools\nsix\n\npandas >= 2  # pinned low\n",
                 preload=["pandas as pd"], python="{}.{}.{}".format(*sys.version_info[:3]))
    assert a.id == b.id and a == b and hash(a) == hash(b)
    assert a.specifiers == ["pandas>=2", "six"]
    assert a.kernel_name == f"codebox-template-{a.id}"


@pytest.mark.parametrize("other", [
    Template(packages=["pandas>=2", "six", "idna"], preload=["pandas as pd"]),
    Template(packages=["pandas>=2", "six"], preload=["pandas"]),
    Template(packages=["pandas>=2", "six"], preload=["pandas as pd", "six"]),
    Template(packages=["pandas>=2", "six"], preload=["pandas as pd"], env={"A": "1"}),
    Template(packages=["pandas>=2", "six"], preload=["pandas as pd"], python="3.12"),
    Template(packages=["pandas>=3", "six"], preload=["pandas as pd"]),
])
def test_what_differs_in_content_is_another_template(other):
    assert Template(packages=["pandas>=2", "six"], preload=["pandas as pd"]).id != other.id


def test_preload_order_counts_and_is_kept():
    one = Template(preload=["six", "json as j"])
    assert one.imports == ["six", "json as j"]
    assert one.preload_code() == "import six\nimport json as j"
    assert one.id != Template(preload=["json as j", "six"]).id


@pytest.mark.parametrize("entry", ["", "pandas as", "as pd", "pandas as p d", "1pandas",
                                   "pandas.", "import pandas", "os; import sys",
                                   "pandas as class", "x as y as z", "a-b"])
def test_a_preload_entry_is_a_module_or_module_as_name(entry):
    with pytest.raises(ValidationError, match=r"preload|keyword"):
        Template(preload=[entry])


@pytest.mark.parametrize("text", ["-r other.txt", "--index-url https://evil.example/simple",
                                  "-e .", "pandas>>2", "not a requirement !"])
def test_requirements_are_specifiers_only(text):
    with pytest.raises(ValidationError):
        Template(requirements=f"six\n{text}\n")
    with pytest.raises(ValidationError):
        Template(packages=[text])


@pytest.mark.parametrize("env", [{"": "x"}, {"A=B": "x"}, {"A": "x\0y"}, {"1A": "x"}])
def test_env_names_are_variable_names(env):
    with pytest.raises(ValidationError):
        Template(env=env)


def test_a_template_is_frozen_and_takes_only_its_fields():
    with pytest.raises(ValidationError):
        Template(packges=["six"])
    template = Template(packages=["six"])
    with pytest.raises(ValidationError):
        template.packages = ["idna"]  # type: ignore[misc]


def test_templates_from_files(tmp_path):
    toml = tmp_path / "data.toml"
    toml.write_text('packages = ["six"]\npreload = ["six as s"]\n[env]\nMODE = "x"\n')
    doc = tmp_path / "data.json"
    doc.write_text(json.dumps({"packages": ["six"], "preload": ["six as s"],
                               "env": {"MODE": "x"}}))
    req = tmp_path / "requirements.txt"
    req.write_text("six\n")
    assert Template.from_file(toml) == Template.from_file(doc)
    assert Template.from_file(toml).env == {"MODE": "x"}
    assert Template.from_file(req).specifiers == ["six"]
    bad = tmp_path / "bad.toml"
    bad.write_text("packages = [")
    with pytest.raises(ValueError, match="not TOML"):
        Template.from_file(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"packages": ["six"], "pip": true}')
    with pytest.raises(ValueError, match="pip"):
        Template.from_file(wrong)
    with pytest.raises(ValueError, match="cannot read"):
        Template.from_file(tmp_path / "missing.txt")


# -- the host's index for uv ---------------------------------------------------------------


def test_pip_settings_follow_pips_precedence():
    global_conf = "[global]\nindex-url = https://global/simple\nfind-links = /g\n"
    user_conf = ("[global]\nextra-index-url = file:///opt/a/simple\n  file:///opt/b/simple\n"
                 "[install]\nfind-links = /u\n")
    settings = pip_settings([global_conf, user_conf], {"PIP_INDEX_URL": "https://env/simple"})
    assert settings == {"index-url": ["https://env/simple"],
                        "extra-index-url": ["file:///opt/a/simple", "file:///opt/b/simple"],
                        "find-links": ["/u"]}


def test_pips_index_becomes_uvs_with_pips_best_match_and_local_indexes_readable():
    pip = {"index-url": ["https://mirror.example/simple"],
           "extra-index-url": ["file:///opt/pypi/simple"], "find-links": ["/opt/wheels"],
           "trusted-host": ["mirror.example"], "constraint": ["/etc/c.txt"],
           "cert": ["/etc/ca.pem"], "timeout": ["180"]}
    config = translate(pip, {})
    assert config.args == [
        "--default-index", "https://mirror.example/simple", "--index", "file:///opt/pypi/simple",
        "--find-links", "/opt/wheels", "--index-strategy", "unsafe-best-match",
        "--allow-insecure-host", "mirror.example", "--constraint", "/etc/c.txt"]
    assert config.read_only == ["/opt/pypi", "/opt/wheels", "/etc/c.txt", "/etc/ca.pem"]
    assert config.env == {"SSL_CERT_FILE": "/etc/ca.pem", "UV_HTTP_TIMEOUT": "180"}


def test_uvs_own_index_settings_win_over_pips():
    pip = {"index-url": ["https://pip/simple"], "find-links": ["/w"]}
    assert translate(pip, {"UV_DEFAULT_INDEX": "https://uv/simple"}).args == []
    assert translate(pip, {}, uv_toml='[[index]]\nurl = "https://uv/simple"\n').args == []
    assert translate(pip, {"UV_INDEX_STRATEGY": "first-index"}).args == [
        "--default-index", "https://pip/simple", "--find-links", "/w"]


def test_no_index_and_proxies():
    config = translate({"no-index": ["yes"], "find-links": ["file:///srv/wheels"]},
                       {"HTTPS_PROXY": "http://proxy:3128", "no_proxy": "localhost"})
    assert config.args == ["--no-index", "--find-links", "file:///srv/wheels"]
    assert config.read_only == ["/srv/wheels"]
    assert config.env == {"HTTPS_PROXY": "http://proxy:3128", "no_proxy": "localhost"}


# -- a template's kernel -------------------------------------------------------------------


FIELD = {"id": "abc", "python": "/cache/envs/abc/bin/python", "paths": ["/cache/envs/abc", "/usr"],
         "preload": "import six as s", "env": {"MODE": "x"}}


def test_a_plain_template_kernel_runs_the_templates_python_and_preloads():
    spec = kernelspec("/cache/envs/abc/bin/python", "import six as s", {"MODE": "x"}, "abc")
    assert spec["argv"][:3] == ["/cache/envs/abc/bin/python", "-c", BOOTSTRAP]
    assert spec["argv"][3:] == ["-f", "{connection_file}",
                                "--IPKernelApp.exec_lines=import six as s"]
    assert spec["env"] == {"MODE": "x"}
    assert "ipykernel" in BOOTSTRAP  # the gateway keeps IPython's history in memory then
    assert site_of("/run/kernel-1.json") == "/run/codebox-site-kernel-1"


def test_a_sandboxed_template_kernel_runs_the_templates_python():
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "/c.json"]
    assert sandbox_argv(argv, FIELD) == ["/cache/envs/abc/bin/python", "-m",
                                         "ipykernel_launcher", "-f", "/c.json",
                                         "--IPKernelApp.exec_lines=import six as s"]


def test_which_template_a_pool_request_is_for():
    assert template_of("codebox-template-abc", None) == "abc"
    assert template_of("python3", None) is None
    assert template_of("python3", {"network": False, "template": FIELD}) == "abc"
    assert template_of("codebox-template-abc", {"network": False}) is None


@pytest.mark.parametrize("field", [
    "x", {**FIELD, "python": "bin/python"}, {**FIELD, "paths": ["relative"]},
    {**FIELD, "paths": "/usr"}, {**FIELD, "env": {"A": 1}}, {k: v for k, v in FIELD.items()
                                                             if k != "id"}])
def test_a_malformed_template_field_is_refused(field):
    with pytest.raises(ValueError, match="template"):
        check_sandbox_field(field)


def test_only_a_trusted_kernelspec_takes_a_template_from_a_request():
    raw = json.dumps({"template": FIELD})
    assert _sandbox.requested_policy({}, raw, trusted=True)["template"] == FIELD
    with pytest.raises(PermissionError, match="template"):
        _sandbox.requested_policy({}, raw, trusted=False)


def test_pools_are_sized_per_template_and_hand_out_only_preloaded_kernels():
    from codebox.local._gateway_app import KernelPool, Pools, _PoolEntry

    pools = Pools(km={"k1"}, size=1, idle_timeout=300, log=None,
                  template_sizes={"abc": 3, "off": 0})
    assert (pools.size_of("abc"), pools.size_of("zzz"), pools.size_of(None)) == (3, 1, 1)
    assert pools.take("codebox-template-off", None) is None and not pools.pools
    assert pools.get("codebox-template-abc", None).size == 3
    sandboxed = pools.get("python3", {"network": False, "template": FIELD})
    assert (sandboxed.kernel_name, sandboxed.template) == ("codebox-sandbox", "abc")

    # (size 0: a take starts no replacement here, where no event loop runs)
    pool = KernelPool(km={"k1"}, kernel_name="codebox-template-abc", size=0, idle_timeout=300,
                      log=None, template="abc")
    entry = _PoolEntry()
    entry.kernel_id = "k1"  # launched, but its preload has not run yet
    pool.entries.append(entry)
    assert pool.take() is None and pool.entries == [entry]
    entry.warm = True
    assert pool.take() == "k1"
