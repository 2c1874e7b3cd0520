"""Reading a YAML config file into a pydantic model, with one error format for every config.

Every YAML file a user writes (``models/<name>.yml``, ``upstream.yml``, ``computed_traits.yml``,
``identity.yml``, ``predictions.yml``) goes through :func:`load_yaml`, so a problem reads the same
whichever file it is in: one :class:`~segment_profiles_pipeline.errors.ConfigError` naming the file,
then each problem as ``field 'mappings[0].traits.email': <what is wrong and how to fix it>``.

The YAML reader refuses what PyYAML would silently accept: a key written twice in one mapping
(PyYAML keeps the last, so half of a mapping's settings could vanish unnoticed).

pydantic's raw errors are rewritten here because they are written for Python callers: union
members (``constrained-str``, ``TraitField``) and discriminator tags appear in the location, both
members of ``column | {column, nulls}`` report a failure, and "Extra inputs are not permitted" does
not say which keys are. The location is therefore followed through the model's type annotations,
which gives the clean field path, the keys allowed at that place (for "did you mean"), and which
union member the user meant.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Tag, ValidationError
from pydantic_core import ErrorDetails

from segment_profiles_pipeline.errors import ConfigError

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
SNAKE = r"^[a-z][a-z0-9_]*$"
TABLE = r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$"
ASSET_KEY_PART = r"^[A-Za-z0-9_]+$"
PATTERN_HINTS = {
    IDENTIFIER: "a column name: letters, digits and underscores, not starting with a digit",
    SNAKE: "snake_case: lower-case letters, digits and underscores, starting with a letter",
    TABLE: "a table name `schema.table` (letters, digits and underscores in each part)",
    ASSET_KEY_PART: "an asset key part: letters, digits and underscores",
}
"""The configs' name patterns, in words (pydantic only prints the regular expression)."""

ModelT = TypeVar("ModelT", bound=BaseModel)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_TYPE_WORDS = {
    "string_type": "a string",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "dict_type": "a mapping (key: value)",
    "list_type": "a list",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}
"""Error types meaning "this is not the right kind of value", and the kind they expected."""


class _UniqueKeys(yaml.constructor.SafeConstructor):
    """A safe constructor that refuses a key repeated in one mapping (the merge key ``<<`` aside)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(key, seen[key], line)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _FastLoader(_UniqueKeys, yaml.CSafeLoader):
    """libyaml's parser (~20x faster than PyYAML's on the sample models: every config file is read on
    every load)."""


class _PureLoader(_UniqueKeys, yaml.SafeLoader):
    """PyYAML's own parser, only to describe a file libyaml refuses: its messages say what was
    expected where (libyaml's: "did not find expected ',' or ']'")."""


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, again: int):
        super().__init__(key, first, again)
        self.key, self.first, self.again = key, first, again


def read_yaml(path: Path) -> Any:
    """The parsed content of a YAML file; every failure is a ConfigError naming the file and the fix."""
    file = str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            "the file does not exist.", file=file, fix="create it, or check the path."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the file cannot be read: {exc}", file=file) from None
    try:
        try:
            return yaml.load(text, Loader=_FastLoader)  # safe loaders: build no Python objects
        except yaml.YAMLError:
            return yaml.load(text, Loader=_PureLoader)
    except _DuplicateKey as dup:
        raise ConfigError(
            f"key '{dup.key}' is written twice in one mapping (lines {dup.first} and {dup.again}).",
            file=file,
            fix="keep one of them (YAML would silently use the last one).",
        ) from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(
            f"the YAML does not parse{_at(exc.problem_mark)}: {_yaml_problem(exc)}.",
            file=file,
            fix="check the indentation, the quoting and the brackets around that line.",
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"the YAML does not parse: {exc}", file=file) from None


def _at(mark: yaml.Mark | None) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    problem = exc.problem or "invalid YAML"
    if exc.context:
        problem += f" ({exc.context}{_at(exc.context_mark)})"
    return problem


def load_yaml(path: Path, model: type[ModelT]) -> ModelT:
    """Read ``path`` and validate it into ``model`` (an empty file is an empty mapping)."""
    return validate(model, read_yaml(path), str(path))


def validate(model: type[ModelT], data: Any, file: str) -> ModelT:
    """Validate parsed YAML against ``model``; every problem goes into one ConfigError naming ``file``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"expected a mapping of keys to values at the top level, got {_kind(data)}.",
            file=file,
            fix="write the file as `key: value` lines (see the README for its keys).",
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"field '{path}': {message}" if path else message
            for path, message in describe_errors(exc.errors(), model)
        ]
        text = f" {problems[0]}" if len(problems) == 1 else "".join(f"\n  - {p}" for p in problems)
        raise ConfigError(f"invalid configuration:{text}", file=file) from None


@dataclass(frozen=True)
class _Place:
    """Where an error is, in the user's terms (see :func:`_resolve`)."""

    path: str
    allowed: list[str] | None  # keys of the mapping holding the last key, when it is a model
    annotation: Any  # the field's type at the end of the path (None when unknown)
    union: str | None = None  # path of the innermost union the location went through
    branch: int | str | None = None  # the member of that union the error comes from


def describe_errors(errors: Sequence[ErrorDetails], model: type[BaseModel]) -> list[tuple[str, str]]:
    """(field path, message) per problem of ``model``'s validation errors, paths relative to ``model``.

    Of a union's members, only those the value was meant for report: a member that rejects the
    value's kind outright (a mapping where it takes a string) stays quiet when another member
    has a real complaint. When every member rejects the kind, the problem becomes one message
    listing the kinds the field takes."""
    placed = [(_resolve(model, err["loc"]), err) for err in errors]
    meant: dict[str, set[int | str | None]] = {}
    for place, err in placed:
        if place.union is not None and not _rejects_kind(place, err):
            meant.setdefault(place.union, set()).add(place.branch)
    out: list[tuple[str, str]] = []
    for place, err in placed:
        if place.union is None or place.branch in meant.get(place.union, set()):
            out.append((place.path, _message(err, place)))
        elif place.union not in meant:
            kinds = [
                _TYPE_WORDS[e["type"]] for p, e in placed if p.union == place.union and _rejects_kind(p, e)
            ]
            out.append(
                (place.union, f"expected {' or '.join(dict.fromkeys(kinds))}, got {_kind(err['input'])}")
            )
    return list(dict.fromkeys(out))


def _rejects_kind(place: _Place, err: ErrorDetails) -> bool:
    """A union member saying only "not my kind of value" about the union's value itself."""
    return err["type"] in _TYPE_WORDS and place.path == place.union


def _message(err: ErrorDetails, place: _Place) -> str:
    kind, got = err["type"], err.get("input")
    if kind == "extra_forbidden":
        close = _suggest(str(err["loc"][-1]), place.allowed or [])
        if close:
            return f"unknown key; did you mean '{close}'?"
        if place.allowed:
            return f"unknown key; the keys allowed here are: {', '.join(sorted(place.allowed))}"
        return "unknown key (check the spelling; see the README for the allowed keys)"
    if kind == "missing":
        return "required key is missing"
    if kind == "too_short":
        ctx = err.get("ctx") or {}
        return f"needs at least {ctx.get('min_length')} item(s), got {ctx.get('actual_length')}"
    if kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[kind]}, got {_kind(got)}"
    if kind == "literal_error":
        choices = [
            str(v) for m in _members(place.annotation) if get_origin(m) is Literal for v in get_args(m)
        ]
        close = _suggest(str(got), choices)
        hint = f" (did you mean '{close}'?)" if close else ""
        return f"{err['msg']}; got {_short(got)}{hint}"
    if kind == "string_pattern_mismatch":
        pattern = str((err.get("ctx") or {}).get("pattern", ""))
        meaning = PATTERN_HINTS.get(pattern, f"a string matching {pattern}")
        return f"{_short(got)} is not {meaning}"
    if kind in ("value_error", "assertion_error"):
        return err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return f"{err['msg']}; got {_short(got)}"


def _suggest(word: str, choices: list[str]) -> str | None:
    """The choice ``word`` is most likely a misspelling of: close to it, and clearly closer than
    any other (a wrong guess misleads more than none; the message lists the choices then)."""
    ranked = sorted((difflib.SequenceMatcher(None, word, c).ratio(), c) for c in choices)[::-1]
    if not ranked or ranked[0][0] < 0.75:
        return None
    if len(ranked) > 1 and ranked[0][0] - ranked[1][0] < 0.1:
        return None
    return ranked[0][1]


def _resolve(model: type[BaseModel], loc: tuple[int | str, ...]) -> _Place:
    """Follow an error location through ``model``'s annotations to the user's field path.

    pydantic's location also names union members (``constrained-str``, ``TraitField``), callable
    discriminator tags (``leaf``) and validator wrappers; those are left out of the path. Where
    the walk loses the type (a type it does not model), the remaining parts are kept as given,
    except pydantic's own wrapper names."""
    parts: list[int | str] = []
    current: Any = model
    allowed: list[str] | None = None
    union: str | None = None
    branch: int | str | None = None
    for part in loc:
        members = _members(current) if current is not None else []
        if len(members) > 1:
            union, branch = _render(parts), part
            current = _member(members, part)
            continue
        current = _strip(members[0]) if members else None
        allowed = None
        if isinstance(current, type) and issubclass(current, BaseModel):
            by_key = {info.alias or name: info for name, info in current.model_fields.items()}
            allowed = list(by_key)
            current = by_key[part].annotation if isinstance(part, str) and part in by_key else None
        elif isinstance(part, int) and get_origin(current) in (list, tuple, set, frozenset):
            current = get_args(current)[0]
        elif isinstance(part, str) and get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            current = None
            if _looks_internal(part):
                continue
        parts.append(part)
    return _Place(_render(parts), allowed, current, union, branch)


def _members(annotation: Any) -> list[Any]:
    """A union's members, nested unions flattened and ``None`` left out (pydantic adds no location
    for it); each member keeps its ``Annotated`` wrapper (its ``Tag``). Anything else: itself."""
    bare = _strip(annotation)
    if get_origin(bare) not in (Union, types.UnionType):
        return [annotation]
    out = []
    for member in get_args(bare):
        if member is not type(None):
            out += _members(member)
    return out


def _member(members: list[Any], tag: int | str) -> Any:
    """The union member pydantic names ``tag`` in a location: a ``Tag``, a model's class name."""
    for member in members:
        metadata = get_args(member)[1:] if get_origin(member) is Annotated else ()
        if any(isinstance(m, Tag) and m.tag == tag for m in metadata):
            return member
        bare = _strip(member)
        if isinstance(bare, type) and bare.__name__ == tag:
            return member
    return None


def _strip(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _looks_internal(part: int | str) -> bool:
    """pydantic's own location parts (validator wrappers, constrained types), never a user's key."""
    return isinstance(part, str) and bool(
        re.match(r"(function-|literal\[|constrained-|list\[|union\[)", part)
    )


def _render(parts: list[int | str]) -> str:
    """``mappings[0].traits.email``; a key that is not a plain name is quoted: ``events['Order Completed']``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return _short(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
