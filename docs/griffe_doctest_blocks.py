"""Griffe extension for the docs build (mkdocs.yml): show the ``>>>`` examples
of docstrings as highlighted Python sessions.

The docstrings carry doctests (run by ``pytest --doctest-modules``) as plain
``>>>`` lines, which Markdown would render as a paragraph (and read
``x["kernel"]`` as a link). This wraps each example block, from its first
``>>>`` line to the next blank line, in a fenced ``pycon`` code block.
"""

from __future__ import annotations

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


class DoctestBlocks(Extension):
    """Fence the doctest examples of every docstring (see the module docstring)."""

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_examples(obj.docstring.value)
