"""Griffe extension for the docs build (mkdocs.yml): docstrings written for
both doctest and Sphinx-style readers, rendered as Markdown.

- The docstrings carry doctests (run by ``pytest --doctest-modules``) as plain
  ``>>>`` lines, which Markdown would render as a paragraph (and read
  ``x["kernel"]`` as a link). Each example block, from its first ``>>>`` line
  to the next blank line, is wrapped in a fenced ``pycon`` code block.
- Sphinx roles (``:func:`name```, ``:class:`~a.b.C```, ...) become code spans
  (``~`` keeps the last component, as in Sphinx).
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object


def fence_examples(text: str) -> str:
    """``text`` with every run of doctest lines (``>>>`` up to a blank line) fenced."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        line = lines[i]
        if not line.lstrip().startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(line.lstrip())]
        block = []
        while i < len(lines) and lines[i].strip():
            block.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        if out and out[-1].strip():
            out.append("")
        out += [indent + "```pycon", *(indent + b for b in block), indent + "```"]
        if i < len(lines) and lines[i].strip():
            out.append("")
    return "\n".join(out)


_ROLE = re.compile(r":(?:func|class|mod|meth|data|attr|obj|exc):`(~?)([^`]+)`")


def plain_roles(text: str) -> str:
    """Sphinx cross-reference roles as Markdown code spans."""
    return _ROLE.sub(lambda m: f"`{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}`", text)


class DoctestBlocks(Extension):
    """Fence the doctest examples and plain the Sphinx roles of every docstring."""

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(fence_examples(obj.docstring.value))
