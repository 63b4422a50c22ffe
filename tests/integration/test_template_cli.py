"""``codebox template build | list | remove | prune`` on real builds."""

from __future__ import annotations

import json
import os
import time

from click.testing import CliRunner

from codebox import Template
from codebox.cli import main
from codebox.templates._store import Layout

SIX_TOML = 'packages = ["six"]\npreload = ["six as tpl_six"]\n'


def codebox(*args: str, cache=None):
    env = {"CODEBOX_CACHE_DIR": str(cache)} if cache is not None else None
    return CliRunner().invoke(main, ["template", *args], env=env)


def test_build_list_remove(template_cache, tmp_path):
    spec = tmp_path / "six.toml"
    spec.write_text(SIX_TOML)
    template = Template.from_file(spec)
    built = codebox("build", "--progress", str(spec))
    assert built.exit_code == 0, built.output
    assert built.stdout.splitlines()[-1] == template.id
    assert f"template {template.id}" in built.stderr  # the progress bar
    assert "MB" in built.stderr and "Python " in built.stderr
    again = codebox("build", str(spec))
    assert again.exit_code == 0 and "already built" in again.stderr
    listed = [json.loads(line) for line in codebox("list", "--json").stdout.splitlines()]
    mine = next(item for item in listed if item["id"] == template.id)
    assert mine["size"] > 10_000_000 and mine["template"]["packages"] == ["six"]
    assert template.id in codebox("list").stdout

    fresh = tmp_path / "requirements.txt"
    fresh.write_text("six\n# another template: built here, then removed\nidna\n")
    fresh_id = codebox("build", str(fresh)).stdout.splitlines()[-1]
    assert codebox("remove", fresh_id).exit_code == 0
    assert fresh_id not in codebox("list").stdout
    assert not Layout.under(template_cache).env(fresh_id).exists()
    gone = codebox("remove", fresh_id)
    assert gone.exit_code == 1 and "no template" in gone.output


def test_prune_removes_what_no_box_used_for_n_days(template_cache, tmp_path):
    # (template_cache: uv's cache is the run's; the template cache is this test's own)
    cache = tmp_path / "cache"
    spec = tmp_path / "six.toml"
    spec.write_text(SIX_TOML)
    template_id = codebox("build", str(spec), cache=cache).stdout.splitlines()[-1]
    kept = codebox("prune", "--unused-days", "1", cache=cache)
    assert kept.exit_code == 0 and kept.stdout == ""
    two_days_ago = time.time() - 2 * 86400
    os.utime(Layout.under(cache).used(template_id), (two_days_ago, two_days_ago))
    assert codebox("prune", "--unused-days", "3", cache=cache).stdout == ""
    pruned = codebox("prune", "--unused-days", "1", cache=cache)
    assert pruned.stdout.split() == [template_id]
    assert codebox("list", "--json", cache=cache).stdout == ""
    assert list((Layout.under(cache).root / "envs").iterdir()) == []
    # The bytecode it alone used is gone too.
    assert not [p for p in (cache / "bytecode").rglob("*") if p.is_file()]


def test_a_bad_template_file_is_a_usage_error(tmp_path):
    spec = tmp_path / "bad.json"
    spec.write_text('{"preload": ["import os"]}')
    result = codebox("build", str(spec))
    assert result.exit_code == 2 and "preload" in result.output
