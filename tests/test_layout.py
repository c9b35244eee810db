"""The architecture rules of docs/design.md, checked on the source: sizes, one-way imports, no stray references.

Static checks only (ast + git grep): nothing is imported or run.
"""
import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"wfn_kernels": ROOT / "wfn_kernels", "wfn_sim": ROOT / "sim"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

# Layer of each wfn_kernels subpackage; a module may import only its own layer or lower ones.
LAYERS = {"_optional": 0, "timing": 0, "format": 1, "ops": 2, "nn": 3, "fixing": 3, "integrations": 4,
          "workflows": 5}
# What wfn_sim may import of wfn_kernels: the packed file format (and bundled model classes, by name, at run
# time through importlib: see sim/extract.py BUNDLED_MODELS).
SIM_MAY_IMPORT = ("wfn_kernels.format",)


def modules():
    for pkg, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            yield pkg + "".join("." + p for p in parts), path


def imports_of(name: str, path: Path) -> set[str]:
    """Absolute names of the package-internal modules ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                stem = base[: len(base) - node.level + 1]
                mod = ".".join(stem + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # `from . import ops` imports a module
    return {m for m in out if m.split(".")[0] in PACKAGES}


ALL = dict(modules())
IMPORTS = {name: imports_of(name, path) for name, path in ALL.items()}


def layer(name: str):
    parts = name.split(".")
    if parts[0] != "wfn_kernels" or len(parts) == 1:
        return None
    return LAYERS.get(parts[1])


def test_every_subpackage_has_a_layer_and_a_docstring():
    for sub in sorted(p.name for p in PACKAGES["wfn_kernels"].iterdir() if (p / "__init__.py").exists()):
        assert sub in LAYERS, f"wfn_kernels.{sub} has no layer in docs/design.md / LAYERS"
    for name, path in ALL.items():
        if path.name == "__init__.py":
            doc = ast.get_docstring(ast.parse(path.read_text()))
            assert doc and len(doc) > 40, f"{name}/__init__.py needs a docstring saying what lives there"


@pytest.mark.parametrize("name", sorted(ALL))
def test_module_and_function_sizes(name):
    path = ALL[name]
    lines = path.read_text().splitlines()
    assert len(lines) <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)}: {len(lines)} lines > {MAX_MODULE_LINES}"
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            assert n <= MAX_FUNCTION_LINES, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines"


def test_imports_point_down_the_layers():
    bad = []
    for name, deps in IMPORTS.items():
        mine = layer(name)
        for dep in deps:
            theirs = layer(dep)
            if mine is not None and theirs is not None and theirs > mine:
                bad.append(f"{name} -> {dep}")
            if mine is not None and mine < LAYERS["workflows"] and dep.startswith("wfn_sim"):
                bad.append(f"{name} -> {dep} (only workflows may use the simulator)")
    assert not bad, "imports against the layer order:\n" + "\n".join(sorted(bad))


def test_nn_and_fixing_are_independent():
    bad = [f"{n} -> {d}" for n, deps in IMPORTS.items() for d in deps
           if (n.startswith("wfn_kernels.nn") and d.startswith("wfn_kernels.fixing"))
           or (n.startswith("wfn_kernels.fixing") and d.startswith("wfn_kernels.nn"))]
    assert not bad, bad


def test_simulator_uses_only_the_packed_format():
    bad = [f"{n} -> {d}" for n, deps in IMPORTS.items() if n.startswith("wfn_sim") for d in deps
           if d.startswith("wfn_kernels") and not d.startswith(SIM_MAY_IMPORT)]
    assert not bad, "wfn_sim imports beyond the packed format:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = {n: {d for d in deps if d in ALL and d != n} for n, deps in IMPORTS.items()}
    # a package's __init__ re-exporting its own submodules is not a cycle through them
    for n in graph:
        graph[n] = {d for d in graph[n] if not (ALL[n].name == "__init__.py" and d.startswith(n + "."))}
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_no_references_outside_the_repository():
    patterns = [r"\.\./shared", r"shared/DESIGN", r"shared/reference", r"\bissue \d+\b", r"\bissue #\d+",
                r"the [a-z-]+ issue\b", r"\bspec §", r"tracker"]
    proc = subprocess.run(["git", "grep", "-n", "-I", "-i", "-E", "|".join(patterns), "--", ".",
                           ":!tests/test_layout.py"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    hits = [line for line in proc.stdout.splitlines() if line.strip()]
    assert not hits, "references to files or tracker items users do not have:\n" + "\n".join(hits[:30])


def test_layer_check_catches_an_upward_import(tmp_path):
    """The checker itself: a format module importing nn must be reported."""
    fake = tmp_path / "format_mod.py"
    fake.write_text("from ..nn import convert\n")
    deps = imports_of("wfn_kernels.format.format_mod", fake)
    assert "wfn_kernels.nn" in deps and layer("wfn_kernels.nn") > layer("wfn_kernels.format.format_mod")


def test_readme_names_the_layout():
    readme = (ROOT / "README.md").read_text()
    for sub in LAYERS:
        if not sub.startswith("_") and sub != "timing":
            assert re.search(rf"wfn_kernels[/.]{sub}\b", readme), f"README does not mention wfn_kernels/{sub}"
