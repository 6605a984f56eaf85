"""Configuration dataclasses and their one JSON form.

Every stage's parameters (`PreprocessConfig`, `BuildConfig`, `ModelConfig`, `TrainConfig`)
derive from `JsonConfig`: the dataclass holds the only defaults, ``to_dict`` gives plain
JSON values (tuples as lists, nested configurations as objects), ``from_dict`` reads them
back with one rule for all (a missing option takes its default, an unknown one is refused
by name), and ``from_file`` reads what ``--config FILE`` names on the command line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T", bound="JsonConfig")


class JsonConfig:
    """Mixin of the configuration dataclasses: lossless JSON round trips."""

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[T], values: dict) -> T:
        """The configuration ``values`` describe; options it leaves out take their defaults.

        Raises:
            ValueError: ``values`` is not an object, or names an option this class does not have.
        """
        if not isinstance(values, dict):
            raise ValueError(f"a {cls.__name__} must be a JSON object, not {type(values).__name__}.")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} option(s): {', '.join(unknown)} "
                             f"(known: {', '.join(fields)}).")
        hints = typing.get_type_hints(cls)
        return cls(**{name: _typed(hints[name], value) for name, value in values.items()})

    @classmethod
    def from_file(cls: type[T], path: str | os.PathLike) -> T:
        """A configuration from a JSON file (``--config FILE``).

        Raises:
            ValueError: the file cannot be read, is not JSON, or holds an unknown option.
        """
        try:
            values = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ValueError(f"the configuration file {path} cannot be read: {exc.strerror or exc}.") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"the configuration file {path} is not JSON: {exc}.") from None
        return cls.from_dict(values)


def _plain(value: Any) -> Any:
    if isinstance(value, JsonConfig):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _typed(hint: Any, value: Any) -> Any:
    """``value`` (read from JSON) as the field's type: nested configurations and tuples."""
    if isinstance(hint, type) and issubclass(hint, JsonConfig):
        return hint.from_dict(value)
    if typing.get_origin(hint) is tuple and isinstance(value, list):
        return tuple(value)
    return value
