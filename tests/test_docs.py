"""The documentation site builds with `mkdocs build --strict`, and every page is in it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def nav_pages() -> set[str]:
    return set(re.findall(r":\s*([\w/.-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(),
                          re.MULTILINE))


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    missing = nav_pages() - pages
    assert not missing, f"in mkdocs.yml's nav but not written yet: {sorted(missing)}"
    assert pages <= nav_pages(), f"pages outside the nav: {sorted(pages - nav_pages())}"


def test_the_site_builds_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The API reference was generated from the docstrings...
    tools = (tmp_path / "reference" / "tools" / "index.html").read_text()
    assert "execute_tool_call" in tools and "Carry out a tool call" in tools
    # ...and the examples were included from examples/, not copied by hand.
    examples = (tmp_path / "examples" / "index.html").read_text()
    assert "asyncio.gather" in examples and "CodeBox.from_id" in examples
