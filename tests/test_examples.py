"""The examples run as documented and print what they promise."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


def run_example(name: str, cwd: Path, de_root: Path | None = None) -> str:
    """Run ``examples/<name>`` from a copy in ``cwd``; return its output."""
    shutil.copy(EXAMPLES / name, cwd / name)
    env = {k: v for k, v in os.environ.items() if k != "DE_ROOT"}
    if de_root is not None:
        env["DE_ROOT"] = str(de_root)
    proc = subprocess.run(
        [sys.executable, name], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


@pytest.mark.parametrize(
    "name", ["quickstart.py", "backends_and_artefacts.py", "metrics_and_queries.py"]
)
def test_example_exists(name: str) -> None:
    """The example is in examples/ and guarded by ``if __name__ == "__main__"``."""
    assert 'if __name__ == "__main__":' in (EXAMPLES / name).read_text()


def test_quickstart(tmp_path: Path) -> None:
    """The quickstart records five squares, lists them, and shows an artefact and timing blocks."""
    out = run_example("quickstart.py", tmp_path)
    assert "results: [0, 1, 4, 9, 16]" in out
    reprs = re.findall(r"Observation\((\S+), \{'x': (\d)\} → (\d+)\)", out)
    assert [(x, r) for _, x, r in reprs] == [
        ("0", "0"),
        ("1", "1"),
        ("2", "4"),
        ("3", "9"),
        ("4", "16"),
    ]
    ids = [i for i, _, _ in reprs]
    assert ids == sorted(ids)
    assert re.search(r"^\s+id\s+result\s+config\.x$", out, re.MULTILINE)
    assert "metadata of the first run: ['code', 'environment', 'status', 'timing']" in out
    assert "cube(3) timing blocks: ['compute', 'save', 'total']" in out
    assert "compute took at least 0.05 s: True" in out
    assert "artefact result.txt -> 3 cubed is 27" in out
    records = sorted(p.stem for p in (tmp_path / "experiments" / "square").glob("*.pkl"))
    assert records == ids


def test_quickstart_honours_de_root_and_reruns_cleanly(tmp_path: Path) -> None:
    """With DE_ROOT set the quickstart writes there; a second run starts from a clean slate."""
    (tmp_path / "work").mkdir()
    for _ in range(2):
        out = run_example("quickstart.py", tmp_path / "work", de_root=tmp_path / "store")
    assert len(re.findall(r"Observation\(", out)) == 5
    assert len(list((tmp_path / "store" / "square").glob("*.pkl"))) == 5
    assert not (tmp_path / "work" / "experiments").exists()


def test_backends_and_artefacts(tmp_path: Path) -> None:
    """The second example shows json/yaml records, a custom backend, artefacts, logs and caching."""
    out = run_example("backends_and_artefacts.py", tmp_path)
    root = tmp_path / "experiments"
    assert len(list((root / "add").glob("*.json"))) == 1
    assert len(list((root / "describe").glob("*.yaml"))) == 1
    assert '"sum": 3' in out
    assert "  notes: |\n    first line\n    second line\n" in out
    assert "the environment is stored once, in .de/environments/" in out
    assert "{'a': 2, 'b': 10} → 20" in out
    assert (root / "multiply" / "runs.jsonl").is_file()
    assert out.count("epoch 2: loss 0.125") == 2  # printed, and shown from the saved log
    assert "log.txt:" in out
    assert "model.txt:\n    final loss 0.125" in out
    assert "the function body ran 1 time(s)" in out
    assert "runs recorded: 1" in out
    timings = [float(t) for t in re.findall(r"slow_square\(4\) = 16 in ([\d.]+) s", out)]
    assert len(timings) == 3
    assert timings[0] >= 0.2 > max(timings[1:])


def _demo_installs() -> set[str]:
    """Distributions ``make demo`` asks pip for: the core dependencies and its extras."""
    tomllib = pytest.importorskip("tomllib")
    repo = EXAMPLES.parent
    makefile = (repo / "Makefile").read_text()
    stamp = re.search(r"^demo: *(\S+)", makefile, re.MULTILINE)
    assert stamp is not None, "no demo target in the Makefile"
    recipe = re.search(rf"^{re.escape(stamp.group(1))}:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe is not None, f"no recipe for {stamp.group(1)!r}"
    install = re.search(r'pip install .*-e "?\.(?:\[([\w,-]+)\])?', recipe.group(1))
    assert install is not None, "the demo does not install the package"
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in (install.group(1) or "").split(","):
        requirements += project["optional-dependencies"].get(extra, [])
    names = set()
    for requirement in requirements:
        # "dask[distributed]>=1" installs dask and, through its extra, distributed
        match = re.match(r"([\w.-]+)(?:\[([\w,.-]+)\])?", requirement)
        assert match is not None
        names.add(match.group(1))
        names.update((match.group(2) or "").split(","))
    return {re.sub(r"[-_.]+", "-", name).lower() for name in names if name}


def test_make_demo_installs_what_the_examples_import() -> None:
    """Every third-party module an example run by ``make demo`` imports is installed by it."""
    import ast
    import importlib.metadata

    installs = _demo_installs()
    distributions = importlib.metadata.packages_distributions()
    makefile = (EXAMPLES.parent / "Makefile").read_text()
    examples = re.findall(r"examples/(\w+\.py)", makefile)
    assert "sweep_dask.py" in examples
    missing = []
    for name in examples:
        for node in ast.walk(ast.parse((EXAMPLES / name).read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in (m.split(".")[0] for m in modules):
                if module in sys.stdlib_module_names or module == "digital_experiments":
                    continue
                dists = {re.sub(r"[-_.]+", "-", d).lower() for d in distributions[module]}
                if not dists & installs:
                    missing.append((name, module))
    assert missing == []


def test_metrics_and_queries(tmp_path: Path) -> None:
    """The results example finds, tags, compares, reruns, deletes and restores runs."""
    out = run_example("metrics_and_queries.py", tmp_path)
    assert "8 runs recorded" in out
    assert "converged with 30 steps, lr: [0.1, 0.3]" in out
    assert "best: lr=0.3 steps=30" in out
    assert "its loss curve: 30 steps" in out
    assert "tagged best: [True]" in out
    assert "['config.lr', 'config.steps', 'metrics.loss']" in out
    assert "rerun of the best: same result True, rerun_of True" in out
    assert "deleted the worst: 8 runs left, 1 in the trash" in out
    assert "restored it: 9 runs" in out
