"""A search-space file is untrusted input: its bytes -> UTF-8 text -> YAML's plain data, with
bounds on what reading it may cost (size, aliases, nesting). allsearch.core.space validates what
comes back."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from allsearch.core.errors import SpaceError, first_line

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["read_space_text", "safe_yaml", "MAX_SPACE_BYTES", "MAX_YAML_DEPTH"]

# Bounds on what a space file may cost to read (the shipped ones: under 4 KB, 3 levels deep).
MAX_SPACE_BYTES = 1024 * 1024
MAX_YAML_DEPTH = 20


def read_space_text(path: Path | Traversable) -> str:
    """A space file's text: UTF-8, at most MAX_SPACE_BYTES (a space file is a few KB)."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_SPACE_BYTES + 1)
    except OSError as exc:
        raise SpaceError(f"{path}: cannot be read ({exc.strerror or first_line(exc)})") from None
    if len(data) > MAX_SPACE_BYTES:
        raise SpaceError(f"{path}: larger than {MAX_SPACE_BYTES // 1024} KB, too large for a "
                         f"search-space file; pass the YAML file of a space")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise SpaceError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
                         f"save the file as UTF-8") from None


def safe_yaml(text: str, *, source: str = "<memory>") -> Any:
    """YAML's plain data, refusing what a space never needs and what costs unbounded memory or
    recursion: aliases (`*name`: a few hundred bytes of nested aliases expand to gigabytes)
    and nesting deeper than MAX_YAML_DEPTH. Checked on YAML's event stream, before anything
    is built."""
    try:
        depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise SpaceError(f"{source}: YAML aliases (*{event.anchor}, line "
                                 f"{event.start_mark.line + 1}) are not allowed in a search "
                                 f"space; write the value out in full")
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise SpaceError(f"{source}: nested deeper than {MAX_YAML_DEPTH} levels "
                                     f"(line {event.start_mark.line + 1}); a search space "
                                     f"needs 3")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise SpaceError(f"{source}: not valid YAML{at}; check indentation and colons") from None
