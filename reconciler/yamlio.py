"""Canonical YAML: one emitter for every file Hexabase writes; the same data, the same bytes.

The style is fixed here, not left to a library's defaults (which change between versions and
between its C and Python emitters): block style, two-space indent, sequences at their key's
indent, one scalar per line, never folded. Mapping keys are sorted, except that a document's
apiVersion, kind and metadata come first, as people expect to read them; lists keep the order
given (the renderer sorts lists whose order carries no meaning).

A string is written plain only when every YAML reader, 1.1 or 1.2, takes it for that same string;
anything else is double-quoted with escapes, so `on`, `0755`, `a: b` or a newline stay strings.
Flux and kubectl read YAML with Go's YAML 1.1-flavoured parsers, hence the 1.1 rules.

Parsing uses libyaml through PyYAML's CSafeLoader (YAML 1.1, like the Go readers), with duplicate
keys rejected. A hand-written emitter and the C parser keep a render of a small organization in
single-digit milliseconds; ruamel.yaml's pure-Python representer cost ~1 ms per document.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

# Keys written first, in this order, at the top of a document.
_LEADING_KEYS = ("apiVersion", "kind", "metadata")

# Plain scalars: start with a letter or '/', then letters, digits, '_', '.', '/', '-'; minus the
# words that YAML 1.1 or 1.2 resolve to booleans, null or special floats.
_SAFE_PLAIN = re.compile(r"[A-Za-z/][A-Za-z0-9_./-]*")
_RESERVED_WORDS = frozenset(
    {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf"}
)
# YAML's printable set (1.2 section 5.1) minus BOM and line breaks; all else is escaped.
_NEEDS_ESCAPE = re.compile(
    "[^\x20-\x7e\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
    '|["\\\\\u2028\u2029]'  # quote, backslash, and the two Unicode line breaks
)
_ESCAPES = {
    "\\": "\\\\", '"': '\\"', "\0": "\\0", "\a": "\\a", "\b": "\\b", "\t": "\\t",
    "\n": "\\n", "\v": "\\v", "\f": "\\f", "\r": "\\r", "\x1b": "\\e",
    "\x85": "\\N", "\u2028": "\\L", "\u2029": "\\P",
}  # fmt: skip


class YamlError(ValueError):
    """Data that cannot be written, or text that is not the YAML Hexabase expects."""


# --- emitting -----------------------------------------------------------------------------


def _escape(char: str) -> str:
    known = _ESCAPES.get(char)
    if known is not None:
        return known
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        raise YamlError(f"unpaired surrogate U+{code:04X} cannot be written as UTF-8")
    if code <= 0xFF:
        return f"\\x{code:02X}"
    return f"\\u{code:04X}" if code <= 0xFFFF else f"\\U{code:08X}"


def quoted(value: str) -> str:
    """A double-quoted scalar that every YAML reader takes back as exactly this string."""
    return '"' + _NEEDS_ESCAPE.sub(lambda m: _escape(m.group()), value) + '"'


def flow(value: Any) -> str:
    """Any value as one line of flow-style YAML, strings always quoted: the templates' `q`."""
    if isinstance(value, str):
        return quoted(value)
    if isinstance(value, Mapping):
        _key_order(value, top=False)
        return "{" + ", ".join(f"{quoted(k)}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    return scalar(value)


def scalar(value: Any) -> str:
    """One scalar as canonical YAML text."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if _SAFE_PLAIN.fullmatch(value) and value.lower() not in _RESERVED_WORDS:
            return value
        return quoted(value)
    # Floats are refused: no Kubernetes field Hexabase writes needs one, and their text differs
    # between readers (1e3 is a string to YAML 1.1). Quantities are strings.
    raise YamlError(f"unsupported value of type {type(value).__name__}: {value!r}")


def _key_order(mapping: Mapping[str, Any], top: bool) -> list[str]:
    for key in mapping:
        if not isinstance(key, str):
            raise YamlError(f"mapping keys must be strings, got {key!r}")
    leading = [k for k in _LEADING_KEYS if top and k in mapping]
    return leading + sorted(k for k in mapping if k not in leading)


def _emit(value: Any, indent: int, out: list[str], top: bool = False) -> None:
    """Append lines for a non-empty collection at this indent."""
    pad = " " * indent
    if isinstance(value, Mapping):
        for key in _key_order(value, top):
            _emit_entry(f"{pad}{scalar(key)}:", value[key], indent, out, in_list=False)
    else:
        for item in value:
            _emit_entry(f"{pad}-", item, indent, out, in_list=True)


def _emit_entry(head: str, value: Any, indent: int, out: list[str], *, in_list: bool) -> None:
    if isinstance(value, Mapping) and value:
        if in_list:  # "- key: value", the following keys aligned under the first
            inner: list[str] = []
            _emit(value, indent + 2, inner)
            out.append(f"{head} {inner[0].lstrip()}")
            out.extend(inner[1:])
        else:
            out.append(head)
            _emit(value, indent + 2, out)
    elif isinstance(value, (list, tuple)) and value:
        out.append(head)
        _emit(value, indent + 2 if in_list else indent, out)
    elif isinstance(value, Mapping):
        out.append(f"{head} {{}}")
    elif isinstance(value, (list, tuple)):
        out.append(f"{head} []")
    else:
        out.append(f"{head} {scalar(value)}")


def dump(document: Any) -> str:
    """One document as canonical text (no '---'; ends with a newline)."""
    if isinstance(document, (Mapping, list, tuple)) and document:
        lines: list[str] = []
        _emit(document, 0, lines, top=True)
        return "\n".join(lines) + "\n"
    if isinstance(document, Mapping):
        return "{}\n"
    if isinstance(document, (list, tuple)):
        return "[]\n"
    return scalar(document) + "\n"


def dump_all(documents: list[Any]) -> str:
    """Several documents separated by '---' lines; the first has no separator."""
    return "---\n".join(dump(d) for d in documents)


# --- parsing ------------------------------------------------------------------------------


class _Loader(yaml.CSafeLoader):
    """libyaml-backed safe loader that refuses duplicate mapping keys."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise YamlError(f"mapping keys must be strings, got {key!r} ({key_node.start_mark})")
        if key in result:
            raise YamlError(f"duplicate key {key!r} ({key_node.start_mark})")
        result[key] = loader.construct_object(value_node, deep=True)
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _plain(value: Any) -> Any:
    """Reject types the emitter cannot write back (timestamps, floats, binary)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    scalar(value)
    return value


def load_all(text: str) -> list[Any]:
    """Every non-empty document in text, as plain data (dict, list, str, int, bool, None)."""
    try:
        documents = list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        raise YamlError(str(exc)) from exc
    return [_plain(d) for d in documents if d is not None]


def load(text: str) -> Any:
    """Exactly one document."""
    documents = load_all(text)
    if len(documents) != 1:
        raise YamlError(f"expected one YAML document, found {len(documents)}")
    return documents[0]
