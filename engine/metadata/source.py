"""Reading YAML and JSON documents while remembering the line of every value.

A document becomes plain Python data plus a ``Lines`` map from a JSON-pointer-like path
(``fields/amount/type``) to the line it was written on, so later checks can name file:line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class Document:
    """One YAML/JSON document with the lines of its values."""

    file: str
    layer: str
    data: Any
    lines: dict[str, int] = field(default_factory=dict)
    start_line: int = 1

    def line(self, path: tuple | list | str) -> int:
        """Line of the value at ``path``, or of its nearest ancestor that has one."""
        parts = list(path.split("/")) if isinstance(path, str) else [str(p) for p in path]
        while parts:
            key = "/".join(parts)
            if key in self.lines:
                return self.lines[key]
            parts.pop()
        return self.start_line

    def text_line(self, path: tuple | list) -> int:
        """Line of the first line of the text at ``path`` (below the key for a ``|`` or ``>`` block)."""
        key = "/".join(str(p) for p in path)
        return self.lines.get(key + "#text") or self.line(path)


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one.

    Booleans are YAML 1.2's: only true/false. YAML 1.1 also reads on/off/yes/no as booleans, which
    turns an automation's ``on:`` key (or a country code ``NO``) into True."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", __import__("re").compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def _construct(node: yaml.Node, path: str, lines: dict[str, int], loader: _Loader) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            key = str(key) if not isinstance(key, str) else key
            if key in out:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            child = f"{path}/{key}" if path else key
            out[key] = _construct(value_node, child, lines, loader)
            lines[child] = key_node.start_mark.line + 1
            if isinstance(value_node, yaml.ScalarNode) and value_node.style in ("|", ">"):
                lines[child + "#text"] = value_node.start_mark.line + 2   # a block's text starts below its key
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, f"{path}/{i}" if path else str(i), lines, loader)
                for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def read_documents(file: Path, layer: str, display: str | None = None) -> list[Document]:
    """Every document in a YAML (``---`` separated) or JSON file. Raises ``yaml.YAMLError``."""
    text = file.read_text(encoding="utf-8")
    name = display or str(file)
    loader = _Loader(text)
    docs: list[Document] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: dict[str, int] = {}
            data = _construct(node, "", lines, loader)
            docs.append(Document(name, layer, data, lines, node.start_mark.line + 1))
    finally:
        loader.dispose()
    return docs
