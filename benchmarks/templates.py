"""codebox benchmarks for templates: each figure beside its reference, in the same run.

    python benchmarks/templates.py [--json results-templates.json] [--quick]

- A further box of a template with ``packages=["pandas"]``, ``preload=["pandas as pd"]``,
  from its start to the result of ``pd.DataFrame({'a': [1, 2]})['a'].sum()``, against a raw
  `jupyter_client` kernel start, ``import pandas`` and that line: goal at most 0.1x.
- A sandboxed `codebox serve` session, after a warm-up session, from its start to the
  result of ``1+1``, against a raw `jupyter_client` kernel start: goal at most 0.15x.
- Building a pandas + matplotlib template with uv's cache warm (goal at most 3 s), against
  uv alone making the same environment (no sandbox, no bytecode); and with caches cold.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import Figure, _raw_kernel_start, _serve, _wait_for_warm_pool, median_ms, report

from codebox import CodeBox, CodeBoxSettings, LocalBox, Template, build_template
from codebox.templates import remove_template
from codebox.templates._model import KERNEL_REQUIREMENTS

PANDAS = Template(packages=["pandas"], preload=["pandas as pd"])
LINE = "pd.DataFrame({'a': [1, 2]})['a'].sum()"
DATA = Template(packages=["pandas", "matplotlib"])
REFILL_PAUSE = 3.0
"""Seconds between two server sessions: the server's pool refills meanwhile (its gateway
is not ours to ask)."""


def _raw_pandas_start() -> float:
    """Seconds for a raw `jupyter_client` kernel start, ``import pandas`` and `LINE`."""
    from jupyter_client.manager import start_new_kernel

    t = time.perf_counter()
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        reply = kc.execute_interactive(f"import pandas as pd\n{LINE}", timeout=60,
                                       output_hook=lambda msg: None)
        assert reply["content"]["status"] == "ok", reply
        return time.perf_counter() - t
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def template_box(n: int, repeat: int) -> list[Figure]:
    from codebox.local._gateway import shared_gateway

    build_template(PANDAS)
    samples = []
    with LocalBox(template=PANDAS) as first:  # makes the template's pool
        assert "3" in first.run(LINE).content  # 3, or np.int64(3)
        for _ in range(n):
            _wait_for_warm_pool(shared_gateway, timeout=120,
                                pool=PANDAS.kernel_name)
            t = time.perf_counter()
            with LocalBox(template=PANDAS) as box:
                out = box.run(LINE)
                samples.append(time.perf_counter() - t)
            assert out.error is None and "3" in out.content, out
    ours = median_ms(samples)
    raw = statistics.median(_raw_pandas_start() for _ in range(repeat)) * 1000
    return [Figure("a further box of a pandas template: start to the result of a pandas line",
                   ours, raw, "ms", "<= 0.1x a raw kernel start + import pandas",
                   ours <= 0.1 * raw,
                   f"reference: jupyter_client start_new_kernel, `import pandas` and the line "
                   f"(median of {repeat}); ours: median of {n}, the pool's preloaded kernel "
                   "ready")]


def server_session(n: int, repeat: int) -> list[Figure]:
    proc, url, key = _serve()  # sandboxed: it spawns its gateway
    samples = []
    try:
        with CodeBox(api_key=key, base_url=url) as warm_up:
            assert warm_up.run("1+1").content == "2"
        for _ in range(n):
            time.sleep(REFILL_PAUSE)
            t = time.perf_counter()
            with CodeBox(api_key=key, base_url=url) as box:
                out = box.run("1+1")
                samples.append(time.perf_counter() - t)
            assert out.content == "2", out
    finally:
        proc.terminate()
        proc.wait(30)
    ours = median_ms(samples)
    raw = statistics.median(_raw_kernel_start() for _ in range(repeat)) * 1000
    return [Figure("a sandboxed `codebox serve` session: start to the result of 1+1", ours,
                   raw, "ms", "<= 0.15x a raw kernel start", ours <= 0.15 * raw,
                   f"after a warm-up session, {REFILL_PAUSE:g} s apart (the pool refills); "
                   f"median of {n}; reference: jupyter_client start_new_kernel until ready "
                   f"(median of {repeat})")]


def _uv_alone(uv_cache: Path) -> float:
    """Seconds for uv alone to make `DATA`'s environment (no sandbox, no bytecode), with
    the host's index and the same cache: the floor of a build."""
    from codebox.templates._build import uv_binary
    from codebox.templates._index import host_index

    uv, index = uv_binary(), host_index()
    env = {**os.environ, **index.env, "UV_CACHE_DIR": str(uv_cache)}
    with tempfile.TemporaryDirectory(dir=uv_cache.parent) as tmp:
        t = time.perf_counter()
        for argv in ([uv, "venv", "--quiet", "--python", sys.executable, f"{tmp}/env"],
                     [uv, "pip", "install", "--quiet", "--python", f"{tmp}/env/bin/python",
                      "--link-mode", "hardlink", *index.args, *DATA.specifiers,
                      *KERNEL_REQUIREMENTS]):
            subprocess.run(argv, check=True, env=env, capture_output=True)
        return time.perf_counter() - t


def _build(settings: CodeBoxSettings) -> float:
    t = time.perf_counter()
    build_template(DATA, settings=settings)
    return time.perf_counter() - t


def builds(repeat: int) -> list[Figure]:
    """Builds in a cache directory of their own (uv's cache in it, as by default)."""
    saved = os.environ.pop("UV_CACHE_DIR", None)
    try:
        with tempfile.TemporaryDirectory(dir=Path.home() / ".cache") as tmp:
            settings = CodeBoxSettings(cache_dir=tmp)
            cold = _build(settings)  # downloads, and compiles every file
            warm = []
            for _ in range(repeat):
                remove_template(DATA.id, settings=settings)
                warm.append(_build(settings))
            alone = statistics.median(_uv_alone(Path(tmp) / "uv") for _ in range(repeat))
    finally:
        if saved is not None:
            os.environ["UV_CACHE_DIR"] = saved
    return [
        Figure("building a pandas + matplotlib template, uv's cache warm",
               statistics.median(warm), alone, "s", "<= 3 s", statistics.median(warm) <= 3.0,
               f"median of {repeat}, each after removing the last; codebox's bytecode cache "
               "warm too; reference: uv alone making the same environment (no sandbox, no "
               "bytecode)"),
        Figure("building a pandas + matplotlib template, caches cold", cold, None, "s",
               "report", None, "downloads from the host's index, every file compiled"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="benchmarks/results-templates.json")
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--only", help="template_box, server_session, builds (comma-separated)")
    args = parser.parse_args()
    n, repeat = (5, 2) if args.quick else (15, 3)
    groups = {"template_box": lambda: template_box(n, repeat),
              "server_session": lambda: server_session(n, repeat),
              "builds": lambda: builds(repeat)}
    chosen = args.only.split(",") if args.only else list(groups)
    report([figure for name in chosen for figure in groups[name]()], args.json)


if __name__ == "__main__":
    main()
