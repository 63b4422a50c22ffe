"""Bytecode for read-only environments, compiled once per machine and shared.

A template's environment is read-only, so Python can never write bytecode into it: what
is not compiled at build time is compiled again by every import of every box. Compiling
all of pandas and matplotlib takes ~5 s, though, and most of it is the same files as in
the last template built. So compiled files are kept in a cache beside uv's,
``<cache>/bytecode/<tag>/<digest of the source>.pyc``, and a build links them into its
environment (hard links: no copy, and a file no environment links any more is found by its
link count and removed by `prune`). Only the files nobody compiled yet are compiled, in
parallel.

The files are *unchecked-hash* pycs: valid whatever the source's timestamp (sources that
never change: the environment is read-only), so one cached file serves every environment
whose source has the same bytes. (Python corrects the file name a code object carries
when it loads it.)

`SCRIPT` runs with the template's interpreter as ``python -I -S``: no site, no ``.pth``
file, so no code of any package runs while it writes to the shared cache; it reads the
packages' sources as data and compiles them.
"""

from __future__ import annotations

import os
from pathlib import Path

SCRIPT = r"""
import glob, hashlib, os, py_compile, sys
from concurrent.futures import ProcessPoolExecutor
from importlib.util import cache_from_source

# (Without site, sys.prefix is not the environment's: its packages are named.)
cache = os.path.join(sys.argv[1], sys.implementation.cache_tag)
roots = {os.path.realpath(p) for p in glob.glob(os.path.join(sys.argv[2], "lib*", "python*",
                                                              "site-packages"))}

def place(target, cached):
    # Link a cached pyc in (or, after compiling, the new pyc into the cache).
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.link(cached, target)

def compile_one(job):
    source, target, cached = job
    try:
        py_compile.compile(source, cfile=target, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    except (py_compile.PyCompileError, SyntaxError, ValueError, OSError):
        return 0  # as uv and pip do: a file that does not compile is left as it is
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    try:
        os.link(target, cached)
    except FileExistsError:
        pass  # another build cached the same source meanwhile
    return 1

linked, missing = 0, []
for root in sorted(r for r in roots if r and os.path.isdir(r)):
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if not name.endswith(".py"):
                continue
            source = os.path.join(top, name)
            with open(source, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            cached = os.path.join(cache, digest[:2], digest + ".pyc")
            target = cache_from_source(source)
            try:
                place(target, cached)
                linked += 1
            except FileNotFoundError:
                missing.append((source, target, cached))
            except FileExistsError:
                pass
with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
    compiled = sum(pool.map(compile_one, missing, chunksize=64))
print("codebox-bytecode: %d linked, %d compiled" % (linked, compiled))
"""


def directory(cache_dir: str | os.PathLike[str]) -> Path:
    """The bytecode cache under a codebox cache directory."""
    return Path(cache_dir).expanduser().resolve() / "bytecode"


def prune_unlinked(root: Path) -> int:
    """Remove the cached files no environment links any more; how many."""
    removed = 0
    for top, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(top, name)
            try:
                if os.lstat(path).st_nlink <= 1:
                    os.unlink(path)
                    removed += 1
            except OSError:
                continue
    return removed
