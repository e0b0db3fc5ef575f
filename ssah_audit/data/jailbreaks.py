"""Jailbreak templates: published wrappers that put a harmful request inside text meant to talk a model out of
refusing (Wei et al. 2023 name the families: refusal suppression, prefix injection, role play, distractors). They
are data, not code: the built-in set `jailbreaks` (data/builtin/jailbreaks.jsonl, each row with its source), or a
user's CSV/JSON/JSONL file with a `template` column holding `{prompt}` where the request goes (and optionally `id`,
`family`, `source`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

BUILTIN = "jailbreaks"
SLOT = "{prompt}"
NONE = ("", "none")  # no template attack


@dataclass(frozen=True)
class Template:
    id: str
    family: str
    source: str
    text: str

    def wrap(self, prompt: str) -> str:
        """The request inside the template (a plain replace: a template's other braces are its own text)."""
        return self.text.replace(SLOT, prompt)


@dataclass(frozen=True)
class TemplateSet:
    name: str
    source: str
    templates: tuple[Template, ...]


def _templates(rows: list[dict], where: str) -> tuple[Template, ...]:
    out, seen = [], set()
    for index, row in enumerate(rows):
        text = row.get("template")
        if not isinstance(text, str) or SLOT not in text:
            raise UserError(f"{where}: row {index + 1} needs a 'template' text with {SLOT} where the request goes")
        name = str(row.get("id") or f"template-{index + 1}")
        if name in seen:
            raise UserError(f"{where}: template id {name!r} is given twice")
        seen.add(name)
        out.append(Template(name, str(row.get("family") or name), str(row.get("source") or where), text))
    if not out:
        raise UserError(f"{where} holds no templates")
    return tuple(out)


def load_templates(spec: str) -> TemplateSet | None:
    """The built-in set (`jailbreaks`), a template file, or None for "" / "none" (no template attack)."""
    if spec.strip().lower() in NONE:
        return None
    if spec == BUILTIN:
        import json
        from importlib import resources

        text = resources.files("ssah_audit.data.builtin").joinpath("jailbreaks.jsonl").read_text(encoding="utf-8")
        return TemplateSet(BUILTIN, "builtin", _templates([json.loads(line) for line in text.splitlines() if line],
                                                          "built-in jailbreaks"))
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"templates '{spec}' is neither the built-in set ({BUILTIN}), 'none', nor a file")
    from .loaders import read_rows

    return TemplateSet(path.stem, f"file {path}", _templates(read_rows(path), str(path)))
