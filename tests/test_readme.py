"""Every Python snippet in README.md runs as it stands, in a fresh process, from another
directory (a snippet that says it continues "the snippet above" gets that one first), and the
architecture section's snippets print what their comments say."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def _program(i: int) -> str:
    code = BLOCKS[i]
    if "from the snippet above" in code:
        code = _program(i - 1) + code
    return code


def test_the_readme_has_snippets():
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_snippet_runs(i, tmp_path):
    r = subprocess.run([sys.executable, "-c", _program(i)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, f"README snippet {i} failed:\n{BLOCKS[i]}\n{r.stderr[-3000:]}"
    # what a `print(...)  # value` line promises is what it prints
    for line in BLOCKS[i].splitlines():
        m = re.match(r"print\(.*\)\s+# (\[.*\]|Counter\(.*\))$", line.strip())
        if m:
            assert m.group(1) in r.stdout, f"snippet {i} should print {m.group(1)}; printed:\n{r.stdout[-2000:]}"
