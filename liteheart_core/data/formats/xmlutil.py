"""Safe, namespace-blind XML access shared by the XML readers (aECG, GE MUSE)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

from liteheart_core.data.signal import RecordError


def parse(path: Path, rid: str, what: str) -> Element:
    """The root of an XML file, parsed by defusedxml (no entity expansion, no external entities).

    Raises
    ------
    RecordError
        The file is not well-formed XML (a truncated export, a stray byte) or uses forbidden XML features.
    """
    import defusedxml.ElementTree as safe_et
    from defusedxml import DefusedXmlException

    try:
        return safe_et.parse(str(path)).getroot()
    except (ParseError, DefusedXmlException, UnicodeDecodeError, ValueError) as exc:
        raise RecordError(rid, f"not well-formed {what} XML (truncated or corrupt): {exc}") from None


def local(tag: object) -> str:
    """A tag's name without its namespace."""
    return str(tag).rsplit("}", 1)[-1]


def children(node: Element, name: str) -> Iterator[Element]:
    for child in node:
        if local(child.tag) == name:
            yield child


def child(node: Element | None, *path: str) -> Element | None:
    """The first descendant along ``path`` of direct children, or None."""
    for name in path:
        if node is None:
            return None
        node = next(children(node, name), None)
    return node


def find_all(node: Element, name: str) -> Iterator[Element]:
    """Every descendant named ``name``, in document order."""
    for element in node.iter():
        if local(element.tag) == name:
            yield element


def text(node: Element | None, *path: str) -> str:
    found = child(node, *path) if path else node
    return (found.text or "").strip() if found is not None else ""


def attr(node: Element | None, key: str) -> str:
    """An attribute by local name (``xsi:type`` is ``type``)."""
    if node is None:
        return ""
    for k, v in node.attrib.items():
        if local(k) == key:
            return v
    return ""
