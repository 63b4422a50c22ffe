"""``codebox template``: build, list, remove and prune the templates built on this machine."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import click


def human_size(size: int) -> str:
    """``size`` bytes for a person: ``"81.3 MB"``."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _ago(when: datetime) -> str:
    seconds = (datetime.now(UTC) - when).total_seconds()
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f} {unit} ago"
    return "just now"


@click.group()
def template() -> None:
    """Templates: environments built once with uv, that boxes start from.

    FILE is a requirements file, or a TOML or JSON file with the fields of a Template
    (packages, requirements, python, preload, env). Templates live under CODEBOX_CACHE_DIR.
    """


@template.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--timeout", type=float, default=None, metavar="SECONDS",
              help="Longest the build may take.  [default: 1800]")
@click.option("--progress/--no-progress", default=None,
              help="A progress bar.  [default: on a terminal]")
def build(file: str, timeout: float | None, progress: bool | None) -> None:
    """Build the template FILE describes (a no-op when it is built); print its id."""
    from tqdm import tqdm

    from ..errors import CodeBoxError
    from ..templates import STEPS, Template
    from ..templates._build import BUILD_TIMEOUT, ensure

    try:
        tpl = Template.from_file(file)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    show = progress if progress is not None else sys.stderr.isatty()
    bar = tqdm(total=len(STEPS), desc=f"template {tpl.id}", unit="step", disable=not show,
               file=sys.stderr, leave=False)

    def on_step(step: str) -> None:
        bar.n = STEPS.index(step)
        bar.set_postfix_str(step)

    try:
        built, made = ensure(tpl, timeout=timeout or BUILD_TIMEOUT, on_step=on_step)
    except CodeBoxError as exc:
        bar.close()
        raise click.ClickException(str(exc)) from None
    bar.update(len(STEPS) - bar.n)
    bar.close()
    verb = "built" if made else "already built"
    click.echo(f"{built.id}  {verb}  {human_size(built.size)}  {built.files} files  "
               f"Python {built.python_version}", err=True)
    click.echo(built.id)


@template.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per template.")
def list_(as_json: bool) -> None:
    """The templates built on this machine, most recently used first."""
    import json

    from ..templates import Template, list_templates

    built = list_templates()
    if as_json:
        for item in built:
            click.echo(json.dumps(_record(item)))
        return
    if not built:
        click.echo("no templates built", err=True)
        return
    total = 0
    for item in built:
        total += item.size
        what = " ".join(Template.model_validate(item.template).specifiers) or "(no packages)"
        click.echo(f"{item.id}  {human_size(item.size):>9}  used {_ago(item.last_used):<12}  "
                   f"Python {item.python_version}  {what}")
    click.echo(f"{len(built)} template(s), {human_size(total)}", err=True)


def _record(item: Any) -> dict[str, Any]:
    return {"id": item.id, "size": item.size, "files": item.files, "path": item.path,
            "python": item.python_version, "built": item.built.isoformat(),
            "last_used": item.last_used.isoformat(), "template": item.template}


@template.command()
@click.argument("template_id", metavar="ID")
def remove(template_id: str) -> None:
    """Remove the built template ID (boxes running on it lose it)."""
    from ..templates import remove_template

    if not remove_template(template_id):
        raise click.ClickException(f"no template {template_id} is built here")
    click.echo(f"removed {template_id}", err=True)


@template.command()
@click.option("--unused-days", type=click.FloatRange(min=0), required=True, metavar="N",
              help="Remove the templates no box used for N days.")
def prune(unused_days: float) -> None:
    """Remove the templates no box used for a while; print their ids."""
    from ..templates import prune_templates

    gone = prune_templates(unused_days)
    for template_id in gone:
        click.echo(template_id)
    click.echo(f"removed {len(gone)} template(s)", err=True)
