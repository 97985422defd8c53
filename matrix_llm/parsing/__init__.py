"""The one YAML + command-line parser of every training command (``matrix-llm sft|ssl|clip|classify``).

    matrix-llm sft --config demo/mce.yaml --learning_rate 1e-3 --use_peft false

:func:`parse_args` reads ``--config FILE.yaml`` and then ``--field value`` overrides (the command line wins)
into a command's dataclasses. Every key of the YAML file and every flag is checked against those dataclasses
*before* anything heavy happens: unknown names (with the closest valid name suggested), values of the wrong
type, values outside their choices and the dataclasses' own validation errors are collected and raised
together as one :class:`ConfigError`, one line per problem.

A dataclass takes part in validation by raising :class:`ConfigError` from ``__post_init__`` (listing all of
its problems); anything else it raises is reported as one problem. Which dataclasses a command parses may
depend on the recipe's ``objective`` field (see :func:`parse_args`).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import sys
import types
import typing
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "ConfigError",
    "default_text",
    "looks_like_path",
    "own_fields",
    "suggest",
    "mode_classes",
    "parse_args",
    "problem",
    "resolve_config",
]

_UNSET = object()


class ConfigError(ValueError):
    """Every problem found in a configuration (YAML + command line), one per line."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} configuration problem(s):\n{lines}")


def problem(name: str, expected: str, got: Any) -> str:
    """One problem line: ```name`: expected ...; got ...``."""
    return f"`{name}`: expected {expected}; got {got!r}"


def _field_table(classes: Sequence[type]) -> dict[str, tuple[type, dataclasses.Field, Any]]:
    """``name -> (dataclass, field, resolved type hint)`` over ``classes``."""
    table = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init:
                table[f.name] = (cls, f, hints[f.name])
    return table


def _renamed(classes: Sequence[type]) -> dict[str, str]:
    """``old name -> field name`` for the fields that keep an old name working through
    ``transformers.HfArgumentParser``'s ``metadata={"aliases": ["--old_name"]}``."""
    fields = [f for cls in classes for f in dataclasses.fields(cls)]
    return {alias.lstrip("-"): f.name for f in fields for alias in f.metadata.get("aliases", ())}


def _new_name(key: str, renamed: dict[str, str], prog: str) -> str:
    """``key``, or the field it was renamed to (with a one-line deprecation warning naming it)."""
    if key not in renamed:
        return key
    warnings.warn(
        f"{prog}: `{key}` is deprecated and will be removed; use `{renamed[key]}` (same meaning)",
        FutureWarning,
        stacklevel=3,
    )
    return renamed[key]


def _union_args(tp: Any) -> tuple:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(tp)
    return (tp,)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("true", "yes", "y", "t", "1", "on"):
            return True
        if v in ("false", "no", "n", "f", "0", "off"):
            return False
    raise ValueError("a boolean (true/false)")


def _to_scalar(value: Any, tp: Any) -> Any:
    """Convert ``value`` to the non-union type ``tp``; ``ValueError(expected)`` if impossible."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        for c in choices:
            if value == c or str(value) == str(c):
                return c
        raise ValueError(f"one of {list(choices)}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = [m.value for m in tp]
        if isinstance(value, tp) or value in values:
            return value if not isinstance(value, tp) else value.value
        raise ValueError(f"one of {values}")
    if tp is bool:
        return _to_bool(value)
    if tp is int:
        if isinstance(value, bool):
            raise ValueError("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ValueError("an integer")
    if tp is float:
        if isinstance(value, bool):
            raise ValueError("a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads `2e-5` as a string
            except ValueError:
                pass
        raise ValueError("a number")
    if tp is str:
        if isinstance(value, bool):  # `resume_from_checkpoint: true` in YAML
            return str(value).lower()
        if isinstance(value, (str, int, float)):
            return str(value)
        raise ValueError("a string")
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return value
        raise ValueError("a mapping")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ValueError(getattr(tp, "__name__", str(tp)))


def _convert(name: str, value: Any, tp: Any, choices: list | None) -> Any:
    """Convert a YAML value or a CLI string (list of strings for list fields) to the type hint ``tp``."""
    members = _union_args(tp)
    optional = type(None) in members
    members = [m for m in members if m is not type(None)]
    # `null` / `~` mean None for every optional field; `none` too unless the field takes strings
    # (`report_to: none` is a value)
    null_string = isinstance(value, str) and (
        value.lower() in ("null", "~") or (value.lower() == "none" and str not in members)
    )
    if value is None or (null_string and optional):
        if optional:
            return None
        raise ValueError("a value (not null)")
    list_members = [m for m in members if typing.get_origin(m) is list]
    scalar_members = [m for m in members if typing.get_origin(m) is not list]
    # lists: YAML lists, CLI multi-value flags, or one scalar for a list-only field
    if isinstance(value, (list, tuple)):
        if list_members:
            (elem,) = typing.get_args(list_members[0]) or (Any,)
            return [_convert(name, v, elem, None) for v in value]
        if len(value) == 1:
            value = value[0]
        else:
            raise ValueError("a single value, not a list")
    elif list_members and not scalar_members:
        (elem,) = typing.get_args(list_members[0]) or (Any,)
        return [_convert(name, value, elem, None)]
    expected = []
    # prefer exact types (a bool stays a bool in `str | bool`), then conversions in the declared order
    for m in scalar_members:
        if isinstance(m, type) and not issubclass(m, enum.Enum) and type(value) is m:
            result = value
            break
    else:
        result = _UNSET
        for m in scalar_members:
            try:
                result = _to_scalar(value, m)
                break
            except ValueError as e:
                expected.append(str(e))
        if result is _UNSET:
            raise ValueError(" or ".join(dict.fromkeys(expected)) or "a valid value")
    if choices is not None and result not in choices:
        raise ValueError(f"one of {list(choices)}")
    return result


def suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def _split_cli(
    argv: list[str], table: dict, rename: Callable[[str], str] = lambda key: key
) -> tuple[dict[str, Any], list[str]]:
    """``--name value`` / ``--name=value`` / ``--name v1 v2`` / bare ``--flag`` / ``--no_flag`` -> dict
    (``rename``: an old name -> its field's)."""
    out: dict[str, Any] = {}
    problems: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or token == "--":
            problems.append(f"unexpected argument {token!r}: expected `--field value`")
            i += 1
            continue
        key, eq, inline = token[2:].partition("=")
        key = rename(key.replace("-", "_"))
        values = [inline] if eq else []
        j = i + 1
        if not eq:
            while j < len(argv) and not (argv[j].startswith("--") and len(argv[j]) > 2):
                values.append(argv[j])
                j += 1
        i = j
        negated = False
        if key not in table and key.startswith("no_") and key[3:] in table:
            key, negated = key[3:], True
        if key not in table:
            problems.append(f"unknown option `--{key}`{suggest(key, list(table))}")
            continue
        hint = table[key][2]
        is_list = any(typing.get_origin(m) is list for m in _union_args(hint))
        is_bool = bool in _union_args(hint)
        if negated:
            if not is_bool or values:
                problems.append(
                    problem(key, f"`--{key} false` (only boolean fields have --no_{key})", values)
                )
                continue
            out[key] = False
        elif not values:
            if is_bool:
                out[key] = True
            else:
                problems.append(problem(key, "a value after the flag", "nothing"))
        elif is_list:
            out[key] = values
        elif len(values) == 1:
            out[key] = values[0]
        else:
            problems.append(problem(key, "a single value", values))
    return out, problems


def looks_like_path(name: str) -> bool:
    """A value that can only be a local path (not a Hub id ``name`` or ``org/name``), or an ``org/name`` whose
    ``org`` is a local folder (``outputs/run``: meant as a path)."""
    if name.startswith((".", "/", "~")) or name.count("/") >= 2 or "\\" in name:
        return True
    return name.count("/") == 1 and Path(name).parent.is_dir()


PACKAGED_RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def resolve_config(path: str) -> Path | None:
    """``path`` if it is a file, else the recipe shipped with the package under that name (``demo/mce.yaml``,
    so that an installed wheel runs the demo recipes from any folder), else ``None``."""
    if Path(path).is_file():
        return Path(path)
    packaged = PACKAGED_RECIPES / path
    for candidate in (packaged, packaged.with_name(packaged.name + ".yaml")):
        if candidate.is_file():
            return candidate
    return None


def _load_yaml(path: str) -> tuple[dict[str, Any], list[str]]:
    import yaml

    p = resolve_config(path)
    if p is None:
        return {}, [
            problem("config", "an existing YAML file or a shipped recipe (e.g. demo/mce.yaml)", str(path))
        ]
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        return {}, [f"`config`: {path} is not valid YAML: {e}"]
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        return {}, [problem("config", f"a mapping of field: value in {path}", type(data).__name__)]
    return data, []


def own_fields(cls: type) -> list[dataclasses.Field]:
    """The init fields ``cls`` declares itself or inherits from matrix_llm classes (not from transformers)."""
    out, seen = [], set()
    for klass in cls.__mro__:
        if not dataclasses.is_dataclass(klass) or not klass.__module__.startswith("matrix_llm"):
            continue
        for f in dataclasses.fields(klass):
            if f.init and f.name not in seen and f.name in klass.__dict__.get("__annotations__", {}):
                seen.add(f.name)
                out.append(f)
    return sorted(out, key=lambda f: [x.name for x in dataclasses.fields(cls)].index(f.name))


def default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return repr(f.default_factory())  # type: ignore[misc]
    return "required"


def mode_classes(
    prog: str, objectives: Sequence[str], classes: Sequence[type]
) -> Callable[[Any], Sequence[type]]:
    """The ``classes`` argument of :func:`parse_args` for a command that runs ``objectives``: its dataclasses, or a
    :class:`ConfigError` naming the command when a recipe's ``objective`` is another mode's."""

    def pick(objective: Any) -> Sequence[type]:
        if objective is not None and objective not in objectives:
            raise ConfigError([f"`objective`: `{prog}` runs {list(objectives)}; got {objective!r}"])
        return tuple(classes)

    return pick


def _take_config(argv: list[str], problems: list[str]) -> tuple[list[str], list[str]]:
    """Split ``--config PATH`` (anywhere) from the other arguments."""
    config_paths, rest, i = [], [], 0
    while i < len(argv):
        if argv[i] == "--config":
            if i + 1 >= len(argv):
                problems.append(problem("config", "a YAML file after --config", "nothing"))
            else:
                config_paths.append(argv[i + 1])
            i += 2
        elif argv[i].startswith("--config="):
            config_paths.append(argv[i].split("=", 1)[1])
            i += 1
        else:
            rest.append(argv[i])
            i += 1
    if len(config_paths) > 1:
        problems.append(problem("config", "one YAML file", config_paths))
    return config_paths[:1], rest


def _raw_objective(recipes: list[tuple[str, dict[str, Any], list[str]]], rest: list[str]) -> Any:
    """The recipe's ``objective`` (command line over YAML), read before the dataclasses are known."""
    value = None
    for _, data, _ in recipes:
        value = data.get("objective", value)
    for i, token in enumerate(rest):
        if token.startswith("--objective="):
            value = token.split("=", 1)[1]
        elif token == "--objective" and i + 1 < len(rest):
            value = rest[i + 1]
    return value


def parse_args(
    argv: list[str] | None,
    classes: Sequence[type] | Callable[[Any], Sequence[type]],
    *,
    prog: str,
    help_text: Callable[[Sequence[type]], str] | None = None,
) -> tuple:
    """Parse ``[--config FILE.yaml] [--field value ...]`` into one instance of each of ``classes``.

    ``classes`` may be a callable that receives the recipe's raw ``objective`` value (``None`` if unset) and
    returns the dataclasses to parse, so that a recipe picks its mode's argument classes. The YAML file sets
    defaults, command-line flags override them. Booleans accept true/false/yes/no/1/0 in both (``--use_peft
    false``; a bare ``--use_peft`` means true; ``--no_use_peft`` also works). List fields take several values
    (``--lora_target_modules q_proj v_proj``) or a YAML list. ``--help`` prints ``help_text(classes)`` (default:
    :func:`matrix_llm.parsing.usage.format_help`) and ``--help_all`` every field with transformers' ``HfArgumentParser``; both exit 0.

    Raises:
        ConfigError: listing every unknown name (with the closest valid name), every value of the wrong type
            and every validation error of the dataclasses, one per line. Nothing heavy (no model, no data)
            has been loaded when it is raised.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    problems: list[str] = []
    config_paths, rest = _take_config(argv, problems)
    recipes = [(path, *_load_yaml(path)) for path in config_paths]  # (path, data, problems), read once
    if callable(classes):
        try:
            classes = tuple(classes(_raw_objective(recipes, rest)))
        except ConfigError as e:
            raise ConfigError(problems + e.problems) from None
    if "--help_all" in argv:
        from transformers import HfArgumentParser

        HfArgumentParser(tuple(classes), prog=prog).print_help()
        raise SystemExit(0)
    if any(a in ("-h", "--help") for a in argv):
        from . import usage

        text = (
            help_text(classes)
            if help_text
            else usage.format_help(prog, classes, example=f"{prog} --config RECIPE.yaml")
        )
        sys.stdout.write(text + "\n")
        raise SystemExit(0)

    table = _field_table(classes)
    renamed = _renamed(classes)
    raw: dict[str, tuple[Any, str]] = {}  # name -> (value, source)
    for path, data, errs in recipes:
        problems += errs
        for key, value in data.items():
            key = _new_name(str(key), renamed, prog)
            if key not in table:
                problems.append(f"unknown field `{key}` in {path}{suggest(str(key), list(table))}")
            else:
                raw[key] = (value, path)
    cli, errs = _split_cli(rest, table, lambda key: _new_name(key, renamed, prog))
    problems += errs
    for key, value in cli.items():
        raw[key] = (value, "command line")

    values: dict[str, Any] = {}
    for key, (value, source) in raw.items():
        _, f, hint = table[key]
        try:
            values[key] = _convert(key, value, hint, f.metadata.get("choices"))
        except ValueError as e:
            problems.append(f"`{key}` ({source}): expected {e}; got {value!r}")

    # the dataclasses' own validation, each one on its own so that all of them report
    outputs = []
    for cls in classes:
        kwargs = {k: v for k, v in values.items() if table[k][0] is cls}
        try:
            outputs.append(cls(**kwargs))
        except ConfigError as e:
            problems += e.problems
        except (ValueError, TypeError) as e:
            problems.append(f"{cls.__name__}: {e}")
    if problems:
        raise ConfigError(problems)
    return tuple(outputs)
