"""Every ```python block of README.md runs as written, each on its own (fresh
namespace, no setup from the test): a reader can paste any one of them.
```bash blocks are not run."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(first line number, code)`` of every ```python fenced block."""
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in _BLOCK.finditer(text)]


def test_blocks_are_found():
    text = "a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = 2\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (9, "y = 2\n")]  # first line of the code
    assert len(python_blocks(README.read_text())) >= 1


@pytest.mark.parametrize("line,code", python_blocks(README.read_text()),
                         ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_readme_block_runs(line, code):
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
