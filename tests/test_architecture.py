"""The package map of the README's Architecture section, enforced: no import cycle, each stage
imports only the stages below it, no Streamlit in the library, no torch where the dashboard
reads configurations and runs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = {"pipeline", "pipeline.config", "pipeline.errors", "pipeline.files", "pipeline.labels", "pipeline.metrics",
          "pipeline.pool", "pipeline.executor", "pipeline.volume", "pipeline.runs"}
# stage -> the stages it may import (besides itself and the shared modules)
STAGES = {
    "pipeline.io": set(),
    "pipeline.preprocess": set(),
    "pipeline.phantoms": {"pipeline.io"},
    "pipeline.demo": {"pipeline.io", "pipeline.phantoms"},
    # the external family shares the demo's acquisition grid and interpolation, not its image model
    "pipeline.external": {"pipeline.io", "pipeline.phantoms", "pipeline.demo"},
    "pipeline.dataset": {"pipeline.io", "pipeline.preprocess", "pipeline.phantoms"},
    "pipeline.model": {"pipeline.preprocess"},
    "pipeline.inference": {"pipeline.io", "pipeline.preprocess", "pipeline.model", "pipeline.phantoms"},
    "pipeline.training": {"pipeline.dataset", "pipeline.preprocess", "pipeline.model", "pipeline.inference"},
}
TORCH_FREE = ["pipeline.runs", "pipeline.config", "pipeline.preprocess.config", "pipeline.dataset.config",
              "pipeline.dataset.store", "pipeline.model.config", "pipeline.training.config", "dashboard.runs"]


def modules() -> dict[str, Path]:
    found = {}
    for package in ("pipeline", "dashboard"):
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports, at any level (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in known:
                found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names} & known
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) - {name} for name, path in found.items()}


def stage_of(module: str) -> str:
    return next((stage for stage in STAGES if module == stage or module.startswith(stage + ".")), module)


def test_there_is_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            assert state.get(target) != 1, "import cycle: " + " -> ".join(path[path.index(target):] + [target]) \
                if target in path else f"import cycle through {target}"
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    """The check above is not vacuous: two modules importing each other are caught."""
    (tmp_path / "a.py").write_text("from pipeline.b import x\n")
    (tmp_path / "b.py").write_text("import pipeline.a\n")
    known = {"pipeline.a", "pipeline.b"}
    edges = {"pipeline.a": imports(tmp_path / "a.py", known), "pipeline.b": imports(tmp_path / "b.py", known)}
    assert edges == {"pipeline.a": {"pipeline.b"}, "pipeline.b": {"pipeline.a"}}
    monkeypatch.setattr(sys.modules[__name__], "graph", lambda: edges)
    try:
        test_there_is_no_import_cycle()
    except AssertionError as error:
        assert "cycle" in str(error)
    else:
        raise AssertionError("the cycle was not found")


def test_each_stage_imports_only_the_stages_below_it():
    wrong = []
    for module, targets in graph().items():
        if not module.startswith("pipeline."):
            continue
        stage = stage_of(module)
        for target in targets:
            if target.startswith("dashboard"):
                wrong.append(f"{module} imports the dashboard ({target})")
            elif stage in STAGES:
                allowed = SHARED | {s for s in STAGES if s == stage or s in STAGES[stage]}
                if target not in SHARED and stage_of(target) not in allowed:
                    wrong.append(f"{module} ({stage}) imports {target}")
            elif module in SHARED and target not in SHARED:
                wrong.append(f"shared module {module} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_library_never_imports_streamlit():
    for name, path in modules().items():
        if name.startswith("pipeline"):
            tree = ast.parse(path.read_text())
            names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
            assert not {n for n in names if n.split(".")[0] == "streamlit"}, name


def test_configurations_and_run_folders_load_without_torch():
    code = f"import sys; import {', '.join(TORCH_FREE)}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "False"
