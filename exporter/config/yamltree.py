"""YAML nodes with their line numbers: what the loader validates instead of plain dicts.

``yaml.safe_load`` forgets where each value came from and silently keeps the last of two
duplicate keys.  Composing to nodes keeps the line of every key and value and every
duplicate, so each problem can name its line, and the walk is driven by the schema, so
aliases (even recursive ones) are never expanded beyond what the schema reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from exporter.config.errors import ConfigError, Problem, one_line, quote

T = TypeVar("T")

def read_text(path: str, max_bytes: int) -> str:
    """A YAML file's text (a BOM dropped); ConfigError if it cannot be read, is larger than
    ``max_bytes`` (then it is the wrong file) or is not UTF-8 (naming the line)."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise ConfigError([Problem(path, None, "", f"cannot read: {e.strerror or e}")]) from None
    if len(data) > max_bytes:
        raise ConfigError([Problem(path, None, "", f"larger than {max_bytes} bytes")])
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        message = f"not UTF-8 text (byte 0x{data[e.start]:02x})"
        raise ConfigError([Problem(path, line, "", message)]) from None


def compose(text: str, source: str) -> tuple[yaml.SafeLoader, Node | None]:
    """The one YAML document in ``text`` as nodes, with the loader that made them (its
    constructors read scalars); ConfigError naming the line of a syntax error."""
    text = text.removeprefix("\ufeff")
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise ConfigError([_yaml_problem(source, text, e)]) from None
    except RecursionError:
        problem = Problem(source, None, "", "invalid YAML: nested too deeply")
        raise ConfigError([problem]) from None
    return loader, root


def _yaml_problem(source: str, text: str, error: yaml.YAMLError) -> Problem:
    mark = getattr(error, "problem_mark", None)
    if mark is not None:
        message = error.problem or "syntax error"  # type: ignore[attr-defined]
        context, context_mark = getattr(error, "context", None), error.context_mark  # type: ignore[attr-defined]
        if context and context_mark is not None:
            message += f" ({context} on line {context_mark.line + 1})"
        return Problem(source, mark.line + 1, "", f"invalid YAML: {one_line(message)}")
    position = getattr(error, "position", None)  # a ReaderError: an unprintable character
    line = text.count("\n", 0, position) + 1 if isinstance(position, int) else None
    return Problem(source, line, "", f"invalid YAML: {one_line(str(error))}")


_MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_STR_TAG = "tag:yaml.org,2002:str"
_MAX_MERGE_DEPTH = 16
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_FLOATISH = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+")


class Shape:
    """Stands in for a mapping or a list where a single value was expected."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


MAPPING = Shape("a mapping")
SEQUENCE = Shape("a list")


def show(value: object) -> str:
    """A value as messages quote it: one short line, strings in double quotes."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {quote(value)}"
    if isinstance(value, int):
        text = str(value) if abs(value) < 10**30 else f"a {len(str(abs(value)))}-digit number"
        return text
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)
    if isinstance(value, Shape):
        return value.name
    return f"{one_line(str(value))[:40]} (a {type(value).__name__})"


def is_null(node: Node | None) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL_TAG


def join(path: str, key: str) -> str:
    """``path.key``; a key that is not a plain name is quoted so the path stays one line."""
    if not _NAME.fullmatch(key):
        return f"{path}[{quote(key)}]"
    return f"{path}.{key}" if path else key


def _hint(node: Node) -> str:
    """Why YAML read a plain scalar as something the user probably did not mean."""
    if not isinstance(node, ScalarNode) or node.style:
        return ""
    if node.tag == _BOOL_TAG and node.value.lower() not in ("true", "false"):
        return f" (YAML reads {node.value} as a boolean)"
    if node.tag == _STR_TAG and _FLOATISH.fullmatch(node.value):
        return " (YAML 1.1 reads this as text; write e.g. 1000 or 1.0e+3)"
    return ""


class Walker:
    """Turns nodes into checked values, collecting every problem with its line."""

    def __init__(self, source: str, loader: yaml.SafeLoader) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self._loader = loader

    def report(self, node: Node | None, path: str, message: str) -> None:
        line = None if node is None else node.start_mark.line + 1
        self.problems.append(Problem(self.source, line, one_line(path), one_line(message)))

    def scalar(self, node: Node) -> object:
        """The node's Python value; a Shape for a mapping or list.  ValueError if unreadable."""
        if isinstance(node, MappingNode):
            return MAPPING
        if isinstance(node, SequenceNode):
            return SEQUENCE
        try:
            return self._loader.construct_object(node, deep=True)
        except Exception as e:  # explicit tags (!!int x, !custom): PyYAML's errors vary
            problem = getattr(e, "problem", None) or str(e)
            if "Exceeds the limit" in problem:  # int("9" * 5000): Python's DoS guard
                problem = "a number with too many digits"
            raise ValueError(f"cannot read this value: {one_line(problem)[:120]}") from None

    def describe(self, node: Node) -> str:
        try:
            return show(self.scalar(node))
        except ValueError:
            return "an unreadable value"

    def value(self, node: Node, path: str, check: Callable[[object], T], default: T) -> T:
        """``check`` applied to the node's value, or ``default`` after reporting why not."""
        try:
            return check(self.scalar(node))
        except ValueError as e:
            self.report(node, path, f"{e}{_hint(node)}")
            return default

    def sequence(self, node: Node | None, path: str) -> list[Node]:
        """The items of a list; null (``key:`` with nothing after it) is an empty list."""
        if node is None or is_null(node):
            return []
        if not isinstance(node, SequenceNode):
            self.report(node, path, f"expected a list, got {self.describe(node)}")
            return []
        return list(node.value)

    def mapping(
        self, node: Node | None, path: str, known: Collection[str] | None, *, null_ok: bool = True
    ) -> Fields:
        """The entries of a mapping, after reporting duplicate and (unless ``known`` is None)
        unknown keys.  Absent or null means an empty mapping: a section's defaults."""
        fields = Fields(self, node, path)
        if node is None or (null_ok and is_null(node)):
            return fields
        if not isinstance(node, MappingNode):
            self.report(node, path, f"expected a mapping of keys, got {self.describe(node)}")
            return fields
        explicit, merged = self._pairs(node, path, 0, {id(node)})
        for key_node, value_node in explicit:
            name = self._key(key_node, path)
            if name is None:
                continue
            first = fields.entries.get(name)
            if first is not None:
                line = first[0].start_mark.line + 1
                self.report(key_node, join(path, name), f"duplicate key (first on line {line})")
                continue
            fields.entries[name] = (key_node, value_node)
            self._check_known(key_node, path, name, known)
        for key_node, value_node in merged:  # explicit keys win; among merged, the first
            name = self._key(key_node, path)
            if name is not None and name not in fields.entries:
                fields.entries[name] = (key_node, value_node)
                self._check_known(key_node, path, name, known)
        return fields

    def _pairs(
        self, node: MappingNode, path: str, depth: int, seen: set[int]
    ) -> tuple[list[tuple[Node, Node]], list[tuple[Node, Node]]]:
        """Own pairs, and pairs merged in with ``<<`` (each merged mapping once: no cycles)."""
        explicit: list[tuple[Node, Node]] = []
        merged: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                explicit.append((key_node, value_node))
                continue
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, MappingNode):
                    self.report(key_node, path, "<< merges only mappings or lists of mappings")
                elif depth >= _MAX_MERGE_DEPTH:
                    self.report(key_node, path, "merges (<<) are nested too deeply")
                elif id(source) not in seen:
                    seen.add(id(source))
                    own, inner = self._pairs(source, path, depth + 1, seen)
                    merged.extend(own + inner)
        return explicit, merged

    def _key(self, key_node: Node, path: str) -> str | None:
        if not isinstance(key_node, ScalarNode):
            self.report(key_node, path, "keys must be plain names, not lists or mappings")
            return None
        return str(key_node.value)

    def _check_known(
        self, key_node: Node, path: str, name: str, known: Collection[str] | None
    ) -> None:
        if known is None or name in known:
            return
        guess = _close_matches(name, list(known), n=1, cutoff=0.6)
        if guess:
            message = f'unknown key (did you mean "{guess[0]}"?)'
        else:
            message = f"unknown key; known keys: {', '.join(known)}"
        self.report(key_node, join(path, name), message)


class Fields:
    """One mapping's entries by key name, each with its key node and value node."""

    def __init__(self, walker: Walker, node: Node | None, path: str) -> None:
        self.walker = walker
        self.node = node  # None when absent: then reports go to no line
        self.path = path
        self.entries: dict[str, tuple[Node, Node]] = {}

    def value_node(self, key: str) -> Node | None:
        entry = self.entries.get(key)
        return None if entry is None else entry[1]

    def key_path(self, key: str) -> str:
        return join(self.path, key)

    def get(self, key: str, check: Callable[[object], T], default: T) -> T:
        """The checked value of ``key``, or ``default`` if absent or (reported) invalid."""
        node = self.value_node(key)
        if node is None:
            return default
        return self.walker.value(node, self.key_path(key), check, default)

    def section(self, key: str, known: Collection[str] | None) -> Fields:
        return self.walker.mapping(self.value_node(key), self.key_path(key), known)

    def items(self) -> Iterator[tuple[str, Node, Node]]:
        for name, (key_node, value_node) in self.entries.items():
            yield name, key_node, value_node

    def require(self, key: str, message: str) -> bool:
        """Report ``key`` as missing (at the mapping's line) unless present."""
        if key in self.entries:
            return True
        if self.node is not None and isinstance(self.node, MappingNode):
            self.walker.report(self.node, self.key_path(key), message)
        return False


def _close_matches(word: str, options: Sequence[str], n: int, cutoff: float) -> list[str]:
    """difflib, imported only when a mistake needs a suggestion (it costs 0.3 MiB resident)."""
    import difflib

    return difflib.get_close_matches(word, options, n=n, cutoff=cutoff)
