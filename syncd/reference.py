"""docs/reference.md, generated from the code so it cannot drift from it.

Every key of config.toml (syncd.config and each connector type's settings model), every key of the
mapping files (syncd.mapping.model, the `[rules]` models of syncd.rules.config), every transform
(syncd.mapping.transforms) and every canonical field (syncd.schema). A key's description is its
pydantic `description`, else the comment on (or just above) its line in the model's source.

    python -m syncd.reference            # write docs/reference.md
    python -m syncd.reference --check    # exit 1 when docs/reference.md differs from the code
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import sys
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

DOC = Path(__file__).resolve().parent.parent / "docs" / "reference.md"


# -- reading the models ---------------------------------------------------------------------------


def source_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment on its line(s), or the comment lines right above it."""
    try:
        src = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = src.splitlines()
    comments: dict[int, tuple[int, str, bool]] = {}  # row -> (col, text, alone on its line)
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            alone = not lines[row - 1][:col].strip()
            comments[row] = (col, tok.string.lstrip("#").strip(), alone)
    out: dict[str, str] = {}
    body = ast.parse(src).body[0]
    assert isinstance(body, ast.ClassDef)
    for node in body.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        name, first, last = node.target.id, node.lineno, node.end_lineno or node.lineno
        text: list[str] = []
        for row in range(first, last + 1):
            c = comments.get(row)
            if c and not c[2]:
                text.append(c[1])
                # continuation comments aligned under the trailing one
                nxt = row + 1
                while nxt in comments and comments[nxt][2] and comments[nxt][0] == c[0] and nxt > last:
                    text.append(comments[nxt][1])
                    nxt += 1
                break
        if not text:
            row = first - 1
            above: list[str] = []
            while row in comments and comments[row][2] and comments[row][0] == node.col_offset:
                above.insert(0, comments[row][1])
                row -= 1
            text = above
        if text:
            out[name] = " ".join(text)
    return out


@dataclass(frozen=True)
class Key:
    name: str
    type: str
    default: str
    doc: str


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _anchor(model: type) -> str:
    return model.__name__.lower()


def type_name(tp: Any) -> str:
    """A reader's name for an annotation: string, list of …, table of …, a link to a model."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None):
        return "none"
    if origin is Literal:
        return " \\| ".join(json.dumps(a, ensure_ascii=False) for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [type_name(a) for a in args if a is not type(None)]
        return " \\| ".join(parts)
    if origin in (list, tuple, set, frozenset):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"table of {type_name(args[1])}" if len(args) == 2 else "table"
    if origin is typing.Annotated:
        return type_name(args[0])
    if _is_model(tp):
        return f"[{tp.__name__}](#{_anchor(tp)})"
    names = {str: "string", int: "integer", float: "number", bool: "boolean", Any: "any"}
    if tp in names:
        return names[tp]
    if getattr(tp, "__name__", "") == "SecretStr":
        return "string (secret)"
    return getattr(tp, "__name__", str(tp))


def _default(info: Any) -> str:
    if info.is_required():
        return "required"
    value = info.default_factory() if info.default_factory is not None else info.default
    if value is PydanticUndefined or value is None:
        return "—"
    if isinstance(value, BaseModel):
        return "(its defaults)"
    if hasattr(value, "get_secret_value"):
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (dict, list)) and not value:
        return "—"
    return f"`{json.dumps(value, ensure_ascii=False, default=str)}`"


def model_comments(model: type[BaseModel]) -> dict[str, str]:
    """source_comments of the model and the models it inherits fields from (its own win)."""
    notes: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if isinstance(cls, type) and issubclass(cls, BaseModel) and cls is not BaseModel:
            notes.update(source_comments(cls))
    return notes


def model_keys(model: type[BaseModel]) -> list[Key]:
    notes = model_comments(model)
    out = []
    for name, info in model.model_fields.items():
        if info.exclude:
            continue
        key = info.alias or name
        out.append(
            Key(key, type_name(info.annotation), _default(info), info.description or notes.get(name, ""))
        )
    return out


def nested_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """The models a model's fields refer to, depth first, each once."""
    seen: list[type[BaseModel]] = []

    def walk(tp: Any) -> None:
        if _is_model(tp):
            if tp not in seen:
                seen.append(tp)
                for info in tp.model_fields.values():
                    walk(info.annotation)
            return
        for a in typing.get_args(tp):
            walk(a)

    for info in model.model_fields.values():
        walk(info.annotation)
    return [m for m in seen if m is not model]


# -- writing ------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(keys: Iterable[Key]) -> list[str]:
    out = ["| key | type | default | what |", "|---|---|---|---|"]
    for k in keys:
        out.append(f"| `{k.name}` | {k.type} | {_cell(k.default)} | {_cell(k.doc)} |")
    return out


def model_section(title: str, model: type[BaseModel], level: int = 3, intro: str = "") -> list[str]:
    out = [f"{'#' * level} {title}", f'<a id="{_anchor(model)}"></a>', ""]
    doc = inspect.cleandoc(model.__dict__.get("__doc__") or "")  # its own, not a base class's
    if doc:
        out += [" ".join(doc.split()), ""]
    if intro:
        out += [intro, ""]
    return out + table(model_keys(model)) + [""]


def undocumented(models: Iterable[type[BaseModel]]) -> list[str]:
    """Keys without a description (the test requires none for syncd's own models)."""
    return [f"{m.__name__}.{k.name}" for m in models for k in model_keys(m) if not k.doc]


def own_models() -> list[type[BaseModel]]:
    from syncd import config
    from syncd.mapping import model

    return [
        config.Settings,
        config.DaemonSettings,
        config.PushSettings,
        config.JobSettings,
        config.SystemSettings,
        model.MappingSet,
        model.EntityMap,
        model.FieldMap,
        model.ValueMap,
        model.IdentityRule,
        model.ConflictRule,
    ]


def render() -> str:
    from syncd import config, schema
    from syncd.mapping import model
    from syncd.mapping.transforms import TRANSFORMS
    from syncd.registry import BUILTIN, connector_type
    from syncd.rules.config import ALIASES, RulesConfig

    out = [
        "# syncd reference",
        "",
        "Generated from the code by `python -m syncd.reference` (`make reference`); a test fails when "
        "this file and the code disagree. Prose and examples: `config.example.toml`, `mappings/*.toml`, "
        "the [README](../README.md).",
        "",
        "- [config.toml](#configtoml)",
        "- [Mapping files](#mapping-files)",
        "- [Transforms](#transforms)",
        "- [Rules](#rules)",
        "- [Canonical fields](#canonical-fields)",
        "",
    ]

    out += [
        "## config.toml",
        "",
        "Strings may read the environment: `${NAME}` or `${NAME:-default}`; every value read that way "
        "is masked in logs, errors and pages. An unknown key or a bad value stops the daemon at start "
        "naming the file, the key and the reason.",
        "",
    ]
    out += model_section("Top level", config.Settings)
    out += model_section("[daemon]", config.DaemonSettings)
    out += model_section("[push]", config.PushSettings)
    out += model_section(
        "[[jobs]]",
        config.JobSettings,
        intro="Streams without a job run at their "
        "connector's default interval; webhooks run a stream at once.",
    )
    out += model_section(
        "[systems.NAME]",
        config.SystemSettings,
        intro="The other keys of the table are those of the connector type:",
    )
    for name in sorted(BUILTIN):
        ctype = connector_type(name)
        out += model_section(
            f'type = "{name}"',
            ctype.settings,
            level=4,
            intro=ctype.doc[:1].upper() + ctype.doc[1:] + "." if ctype.doc else "",
        )
        for sub in nested_models(ctype.settings):      # tables inside it (a form of `forms`)
            out += model_section(f'type = "{name}": {sub.__name__}', sub, level=5)

    out += [
        "## Mapping files",
        "",
        "Every file named by `[daemon] mappings` holds any of these sections; they are merged (a "
        "value map, identity or conflict rule, or rules part may be defined once across all files; "
        "the rule lists stages, timers and cross add up). "
        "An empty or unreadable file, or a glob matching nothing, is an error.",
        "",
    ]
    out += model_section("Top level", model.MappingSet)
    out += model_section("[[maps]]", model.EntityMap)
    out += model_section(
        "[maps.fields]",
        model.FieldMap,
        intro=(
            'Keys are canonical fields (`"order.total"`). A plain string is the system field with '
            'the defaults below: `"order.comment" = "COMMENTS"`. For list fields (`order.items`), `items` '
            "maps each member."
        ),
    )
    out += model_section(
        "[values.NAME]",
        model.ValueMap,
        intro=(
            'A plain table is the `map` alone: `[values.stage]` `new = "NEW"`. The reverse map (system '
            "→ canonical) is derived; the first canonical value of a system value wins."
        ),
    )
    out += model_section("[identity.TYPE]", model.IdentityRule)
    out += model_section(
        '[conflicts."FIELD"]',
        model.ConflictRule,
        intro='FIELD is a canonical field, `"entity.*"` or `"*"` (the fallback).',
    )

    out += [
        "## Transforms",
        "",
        "Named in a field map's `transform`; no expression is ever evaluated.",
        "",
        "| transform | what |",
        "|---|---|",
    ]
    out += [f"| `{name}` | {_cell(t.doc)} |" for name, t in TRANSFORMS.items()] + [""]

    out += ["## Rules", "", "The `[rules]` section of the mapping files (syncd.rules).", ""]
    out += model_section("[rules]", RulesConfig)
    for m in nested_models(RulesConfig):
        out += model_section(m.__name__, m, level=4)
    out += ["Conditions read canonical fields and these aliases:", "", "| path | what |", "|---|---|"]
    out += [f"| `{k}` | {_cell(v)} |" for k, v in ALIASES.items()] + [""]

    out += [
        "## Canonical fields",
        "",
        "The left side of every field map, what rules read and write (syncd.schema).",
        "",
    ]
    for entity, fields in schema.FIELDS.items():
        out += [f"### {entity}", "", "| field | type | what |", "|---|---|---|"]
        for name, spec in fields.items():
            kind = spec.type + (f" → {spec.ref}" if spec.ref else "")
            if spec.item:
                members = ", ".join(
                    f"`{m}`" + (f" ({s.type}" + (f" → {s.ref}" if s.ref else "") + ")")
                    for m, s in spec.item.items()
                )
                kind += f" of {{{members}}}"
            out.append(f"| `{name}` | {_cell(kind)} | {_cell(spec.doc)} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in args:
        if not DOC.exists() or DOC.read_text(encoding="utf-8") != text:
            print(f"{DOC} is out of date: run `python -m syncd.reference` (make reference)", file=sys.stderr)
            return 1
        return 0
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
