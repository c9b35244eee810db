"""The README matches the code and the committed results: its examples run, its figures are in the files it names."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

# A figure: a decimal number (7.96, 0.53, 38.90) or a ratio (17.6x, 2x). Integers without "x" are counts and
# settings (3 seeds, 2 threads), not measured figures.
FIGURE = re.compile(r"(?<![\w.^/-])(\d+\.\d+|\d+(?:\.\d+)?x)(?![\w.]*\d)")
RESULTS_FILE = re.compile(r"bench/results/[\w./-]+\.(?:md|csv|json)")


def python_blocks(heading: str) -> str:
    block = re.search(rf"{re.escape(heading)}\s+```python\n(.*?)```", README, re.S)
    assert block, f"README lost its example under {heading!r}"
    return block.group(1)


def test_readme_api_example_runs(capsys):
    code = python_blocks("## API in 20 lines")
    assert len(code.strip().splitlines()) <= 22
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "converted 2 layer(s), skipped 0" in out
    assert "'extension'" in out


def test_readme_torchao_example_runs(capsys):
    pytest.importorskip("torchao", reason="the [torchao] extra is not installed")
    exec(compile(python_blocks("### Through torchao's `quantize_`"), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "WFNConv2d" in out and "WFNLinear" in out


def sections(text: str):
    """(heading, body) of every ## / ### section, code blocks and images removed."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", text)
    parts = re.split(r"^(#{2,3} .*)$", text, flags=re.M)
    return list(zip(parts[1::2], parts[2::2]))


def figures(body: str) -> list[str]:
    body = re.sub(r"`[^`]*`", "", body)  # commands, paths, flags
    return [m.rstrip("x") for m in FIGURE.findall(body)]


def test_figure_extraction():
    assert figures("drop 1.54 ± 0.46 points, 17.6x fewer, 3 seeds, `--repeats 20`") == ["1.54", "0.46", "17.6"]
    assert figures("torch 2.13.0 CPU, U = 17, 2^-1") == []


CHECKED = [(h, b) for h, b in sections(README) if RESULTS_FILE.search(b)]


def test_readme_has_result_sections():
    names = [h for h, _ in CHECKED]
    for must in ("### WFN on Fashion-MNIST", "### Kernels on this CPU", "### Simulated accelerator energy"):
        assert any(n.startswith(must) for n in names), f"README lost {must!r} or its results file"


@pytest.mark.parametrize("heading,body", CHECKED, ids=[h for h, _ in CHECKED])
def test_every_readme_figure_is_in_the_results_file_it_names(heading, body):
    files = sorted(set(RESULTS_FILE.findall(body)))
    texts = []
    for f in files:
        path = ROOT / f
        assert path.is_file(), f"{heading}: names {f}, which is not committed"
        texts.append(path.read_text())
    corpus = "\n".join(texts)
    missing = [v for v in figures(body) if not re.search(rf"(?<![\d.]){re.escape(v)}(?!\d)", corpus)]
    assert not missing, f"{heading}: figures not found in {files}: {missing}"


def test_cpu_results_page_figures_are_in_the_files_it_names():
    """docs/cpu-results.md (the run-by-run record the README's compute-mode section points to) follows the
    README's rule: every figure in it is in one of the results files it names."""
    page = re.sub(r"```.*?```", "", (ROOT / "docs" / "cpu-results.md").read_text(), flags=re.S)
    files = sorted(set(RESULTS_FILE.findall(page)))
    assert files, "docs/cpu-results.md names no results file"
    for f in files:
        assert (ROOT / f).is_file(), f"docs/cpu-results.md names {f}, which is not committed"
    corpus = "\n".join((ROOT / f).read_text() for f in files)
    missing = [v for v in figures(page) if not re.search(rf"(?<![\d.]){re.escape(v)}(?!\d)", corpus)]
    assert not missing, f"docs/cpu-results.md: figures not found in {files}: {missing}"
