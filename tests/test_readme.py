"""Every ```python block of README.md and of the docs pages (docs/index.md,
docs/guides/*.md) runs as written, each on its own (fresh namespace, no setup
from the test): a reader can paste any one of them. ```bash blocks are not run."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [ROOT / "docs" / "index.md", *sorted((ROOT / "docs" / "guides").glob("*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(first line number, code)`` of every ```python fenced block."""
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in _BLOCK.finditer(text)]


def _cases(paths: list[pathlib.Path]) -> list:
    return [
        pytest.param(path, line, code, id=f"{path.relative_to(ROOT)}:{line}")
        for path in paths
        for line, code in python_blocks(path.read_text())
    ]


def test_blocks_are_found():
    text = "a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = 2\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (9, "y = 2\n")]  # first line of the code
    assert len(python_blocks(README.read_text())) >= 1
    assert all(path.exists() for path in DOCS) and len(DOCS) >= 5


def _run(path: pathlib.Path, line: int, code: str) -> None:
    exec(compile(code, f"{path.relative_to(ROOT)}:{line}", "exec"), {"__name__": "__doc_block__"})


@pytest.mark.parametrize("path,line,code", _cases([README]))
def test_readme_block_runs(path, line, code):
    _run(path, line, code)


@pytest.mark.slow
@pytest.mark.parametrize("path,line,code", _cases(DOCS))
def test_docs_block_runs(path, line, code, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")  # the notebook guide plots
    _run(path, line, code)
