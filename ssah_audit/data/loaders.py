"""Prompt files in the formats users bring, recognised by their columns.

AdvBench (`goal`,`target`), HarmBench (`Behavior`), XSTest (`prompt`,`label`,`type`), StrongREJECT
(`forbidden_prompt`), Alpaca (`instruction`,`input`,`output`, or seed tasks with `instances`), and
generic CSV/JSON/JSONL with a `prompt`-like column or `--prompt-field`.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..inputs import MiB, read_text
from ..progress import notice
from .prompt import Prompt, PromptSet


@dataclass(frozen=True)
class FileFormat:
    name: str
    signature: tuple[str, ...]  # columns that must all be present
    prompt: str
    category: str | None = None
    answer: str | None = None
    target: str | None = None
    label: str | None = None
    id: str | None = None


FORMATS = (
    FileFormat("advbench", ("goal", "target"), prompt="goal", target="target"),
    FileFormat("harmbench", ("Behavior",), prompt="Behavior", category="SemanticCategory", id="BehaviorID"),
    FileFormat("strongreject", ("forbidden_prompt",), prompt="forbidden_prompt", category="category"),
    FileFormat("xstest", ("prompt", "label", "type"), prompt="prompt", category="type", label="label", id="id"),
    FileFormat("alpaca", ("instruction",), prompt="instruction", answer="output", category="category"),
)
GENERIC_PROMPT_FIELDS = ("prompt", "question", "instruction", "query", "input", "text", "goal")
GENERIC_ANSWER_FIELDS = ("response", "answer", "output", "completion", "reference")


def _json_line(path: Path, line: str, number: int):
    """One JSONL record; an error names the file's line, not line 1 of the record (the parser sees one line)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSONL: line {number}, column {exc.colno}: {exc.msg}") from None


PROMPT_FILE_BYTES = 512 * MiB  # AdvBench is 0.1 MB, XSTest's completions a few MB; more would not fit in memory


def read_rows(path: Path) -> list[dict]:
    """Rows of a CSV, JSON (a list, or an object holding one list) or JSONL file."""
    suffix = path.suffix.lower()
    text = read_text(path, "prompt file", PROMPT_FILE_BYTES, encoding="utf-8-sig")
    if not text.strip():
        raise UserError(f"{path} is empty")
    try:
        if suffix == ".csv":
            # newline="" keeps newlines inside quoted fields; strict: an unclosed quote is an error, not one
            # giant field that swallows the rest of the file
            reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
            twice = sorted({name for name in reader.fieldnames or [] if reader.fieldnames.count(name) > 1})
            if twice:  # DictReader would silently keep the last of them
                raise UserError(f"{path} has the column(s) {', '.join(twice)} more than once")
            rows = list(reader)
        elif suffix == ".jsonl":
            # split on "\n" only: str.splitlines also splits at U+2028 and friends, which JSON allows inside strings
            rows = [_json_line(path, line, number) for number, line in enumerate(text.split("\n"), 1) if line.strip()]
        elif suffix == ".json":
            data = json.loads(text)
            if isinstance(data, dict):
                lists = [v for v in data.values() if isinstance(v, list)]
                data = lists[0] if len(lists) == 1 else None
            rows = data if isinstance(data, list) else None
            if rows is None:
                raise UserError(f"{path} is JSON but not a list of records (nor an object holding one)")
        else:
            raise UserError(f"{path}: unsupported prompt file type '{suffix}' (use .csv, .json or .jsonl)")
    except (json.JSONDecodeError, csv.Error) as exc:
        raise UserError(f"{path} is not valid {suffix[1:].upper()}: {exc}") from exc
    except RecursionError:
        raise UserError(f"{path} is nested too deeply to be a file of records") from None
    if not rows:
        raise UserError(f"{path} has no rows")
    if not all(isinstance(row, dict) for row in rows):
        raise UserError(f"{path}: every record must be an object with named fields")
    if suffix != ".csv":  # only JSON can spell a lone surrogate ("\ud800"), which no file or tokenizer takes
        for index, row in enumerate(rows):
            try:
                json.dumps(row, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise UserError(f"{path}: record {index + 1} holds a lone surrogate escape (like \\ud800), "
                                "which is not text") from None
    return rows


ROW_FORMATS = (".csv", ".jsonl", ".json")


def rows_text(path: Path, rows: list[dict], columns: list[str]) -> str:
    """`rows` (restricted to `columns`) as the text of a file in the format `path`'s suffix names: what read_rows
    reads back. The caller checks the suffix first (check_row_format), so nothing is computed for a bad name."""
    records = [{column: row.get(column) for column in columns} for row in rows]
    if path.suffix.lower() == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)
        return buffer.getvalue()
    if path.suffix.lower() == ".jsonl":
        return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    return json.dumps(records, ensure_ascii=False, indent=2) + "\n"


def check_row_format(path: Path) -> None:
    if path.suffix.lower() not in ROW_FORMATS:
        raise UserError(f"{path}: write .csv, .jsonl or .json (the format follows the file name)")


def detect_format(columns: set[str], prompt_field: str | None, path: Path) -> FileFormat:
    if prompt_field:
        if prompt_field not in columns:
            raise UserError(f"{path} has no column '{prompt_field}' (columns: {', '.join(sorted(columns))})")
        answer = next((c for c in GENERIC_ANSWER_FIELDS if c in columns and c != prompt_field), None)
        return FileFormat("generic", (prompt_field,), prompt=prompt_field, answer=answer, category="category")
    for fmt in FORMATS:
        if all(column in columns for column in fmt.signature):
            return fmt
    prompt = next((c for c in GENERIC_PROMPT_FIELDS if c in columns), None)
    if prompt is None:
        raise UserError(f"{path} has no prompt column (columns: {', '.join(sorted(columns))}); "
                        "name one with --prompt-field")
    answer = next((c for c in GENERIC_ANSWER_FIELDS if c in columns and c != prompt), None)
    return FileFormat("generic", (prompt,), prompt=prompt, answer=answer, category="category")


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def _alpaca_fields(row: dict) -> tuple[str, str]:
    """Alpaca puts an optional `input` under the instruction; seed tasks keep input/output in `instances`."""
    instance = (row.get("instances") or [{}])[0] if isinstance(row.get("instances"), list) else row
    extra = _text(instance.get("input"))
    prompt = _text(row.get("instruction"))
    return (f"{prompt}\n\n{extra}" if extra else prompt), _text(instance.get("output"))


def to_prompt(row: dict, fmt: FileFormat, index: int) -> Prompt:
    if fmt.name == "alpaca":
        text, answer = _alpaca_fields(row)
    else:
        text, answer = _text(row.get(fmt.prompt)), _text(row.get(fmt.answer)) if fmt.answer else ""
    return Prompt(
        id=_text(row.get(fmt.id)) if fmt.id and _text(row.get(fmt.id)) else f"row-{index + 1}",
        text=text,
        category=_text(row.get(fmt.category)) if fmt.category else "",
        answer=answer or None,
        target=_text(row.get(fmt.target)) or None if fmt.target else None,
        label=_text(row.get(fmt.label)) or None if fmt.label else None,
    )


def load_file(path: Path, prompt_field: str | None = None) -> PromptSet:
    rows = read_rows(path)
    columns = set().union(*(row.keys() for row in rows))
    fmt = detect_format(columns, prompt_field, path)
    prompts = tuple(p for i, row in enumerate(rows) if (p := to_prompt(row, fmt, i)).text)
    if not prompts:
        raise UserError(f"{path}: every '{fmt.prompt}' value is empty")
    if len(prompts) < len(rows):
        notice(f"note: {path}: skipped {len(rows) - len(prompts)} of {len(rows)} rows with an empty or missing "
               f"'{fmt.prompt}'")
    return PromptSet(path.stem, f"{fmt.name} file {path}", prompts)
