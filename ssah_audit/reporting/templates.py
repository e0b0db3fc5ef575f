"""The jinja2 environment over the packaged templates; HTML templates autoescape every value."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

import jinja2


def template_folder():
    """The packaged templates; in a source checkout imported from the repo root, the top-level folder."""
    try:
        return resources.files("ssah_audit.templates")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "templates"


def _load(name: str) -> str:
    return template_folder().joinpath(name).read_text(encoding="utf-8")


@cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(_load),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2", "html"), default=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render(name: str, **context) -> str:
    return environment().get_template(name).render(**context)
