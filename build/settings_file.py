"""Settings for the build scripts: one YAML file holds every default, command-line flags override keys.

A settings class is a frozen dataclass whose fields have no defaults; each field's
``metadata`` carries its ``help`` text (and optional ``choices``). The YAML file
(``build/tensorrt.yaml``) has a shared ``paths`` section plus one section per script.
Flags are generated from the dataclass fields, so names, types and help are written once.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SETTINGS_FILE = REPO_ROOT / "build" / "tensorrt.yaml"
SHARED_SECTION = "paths"

T = TypeVar("T")


def setting_help(text: str, choices: tuple[object, ...] | None = None) -> dict[str, object]:
    """Field metadata for a settings dataclass: the flag's help text and allowed values."""
    return {"help": text, "choices": choices} if choices else {"help": text}



class SettingsError(ValueError):
    """The settings file or a flag holds an unknown key, misses a key or has a bad value."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_settings_flags(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    """Add ``--config`` and one flag per field of `cls`; flags left out keep the YAML value."""
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_SETTINGS_FILE,
        help="YAML settings file (default: %(default)s)",
    )
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group("settings (override the YAML file)")
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        help_text = field.metadata.get("help", "")
        choices = field.metadata.get("choices")
        flag = _flag(field.name)
        if hint is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(hint) is list:
            item = typing.get_args(hint)[0]
            group.add_argument(flag, type=item, nargs="*", default=None, help=help_text)
        elif typing.get_origin(hint) is dict:
            group.add_argument(
                flag,
                dest=field.name,
                action="append",
                default=None,
                metavar="KEY=VALUE",
                help=help_text + " (repeatable; merged over the YAML mapping)",
            )
        else:
            group.add_argument(flag, type=_flag_type(hint), choices=choices, default=None, help=help_text)


def _flag_type(hint: Any) -> Any:
    """The argparse ``type`` of a field: the type itself, or for ``int | str`` int first, then str."""
    members = _members(hint)
    if len(members) == 1:
        return members[0]

    def parse(text: str) -> Any:
        for member in members:
            try:
                return member(text)
            except ValueError:
                continue
        raise argparse.ArgumentTypeError(f"invalid value {text!r}")

    return parse


def _members(hint: Any) -> tuple[type, ...]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(typing.get_args(hint))
    return (typing.get_origin(hint) or hint,)


def _section(document: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = document.get(name, {})
    if not isinstance(value, dict):
        raise SettingsError(f"{path}: section {name!r} must be a mapping")
    return value


def _parse_pairs(items: list[str], flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SettingsError(f"{flag} expects KEY=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


def load_settings(cls: type[T], section: str, args: argparse.Namespace) -> T:
    """Build `cls` from the ``paths`` and `section` sections of ``args.config``, then apply flags.

    Unknown keys in `section`, missing keys and wrong types raise SettingsError.
    Keys of the shared ``paths`` section that `cls` does not use are ignored.
    """
    path = Path(args.config)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise SettingsError(f"cannot read settings file {path}: {exc}") from None
    if not isinstance(document, dict):
        raise SettingsError(f"{path}: top level must be a mapping")

    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    own = _section(document, section, path)
    unknown = sorted(set(own) - set(fields))
    if unknown:
        raise SettingsError(f"{path}: unknown key(s) in section {section!r}: {', '.join(unknown)}")
    shared = {k: v for k, v in _section(document, SHARED_SECTION, path).items() if k in fields}
    values: dict[str, Any] = {**shared, **own}

    hints = typing.get_type_hints(cls)
    for name in fields:
        override = getattr(args, name, None)
        if override is None:
            continue
        if typing.get_origin(hints[name]) is dict:
            base = values.get(name) or {}
            values[name] = {**base, **_parse_pairs(override, _flag(name))}
        else:
            values[name] = override

    missing = sorted(set(fields) - set(values))
    if missing:
        raise SettingsError(f"{path}: missing key(s) for section {section!r}: {', '.join(missing)}")
    _check_types(cls, values, path)
    return cls(**values)


def _check_types(cls: type[Any], values: dict[str, Any], path: Path) -> None:
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        value = values[field.name]
        expected = _members(hints[field.name])
        # bool is a subclass of int, but a YAML true/false is never a valid number here.
        ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)
        if not ok and float in expected and isinstance(value, int) and not isinstance(value, bool):
            values[field.name] = float(value)
            ok = True
        if not ok:
            names = " or ".join(t.__name__ for t in expected)
            raise SettingsError(f"{path}: {field.name} must be {names}, got {value!r}")
        choices = field.metadata.get("choices")
        if choices is not None and value not in choices:
            raise SettingsError(f"{path}: {field.name} must be one of {', '.join(map(str, choices))}, got {value!r}")
