"""The README's API example runs as written (docs match the code)."""
import re
from pathlib import Path


def test_readme_api_example_runs(capsys):
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## API in 20 lines\s+```python\n(.*?)```", text, re.S)
    assert block, "README lost its API example"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 22
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "converted 2 layer(s), skipped 0" in out
    assert "'extension'" in out
