"""Drop-in compatibility with digital-experiments 2.0.4, and the fixes made over it."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import digital_experiments
from digital_experiments import experiment

DATA = Path(__file__).parent / "data" / "v2_0_4"
SUFFIXES = {"pickle": ".pkl", "json": ".json", "yaml": ".yaml"}


# ---------------------------------------------------------------- import paths


TOP_LEVEL_2_0_4 = [
    "experiment",
    "register_backend",
    "Backend",
    "Callback",
    "Observation",
    "current_id",
    "current_dir",
    "time_block",
]

PATHS_2_0_4 = {
    "digital_experiments.core": ["Observation", "Experiment", "Backend", "Callback", "Controller"],
    "digital_experiments.backends": [
        "instantiate_backend",
        "register_backend",
        "_ALL_BACKENDS",
        "Backend",
        "PickleBackend",
        "JSONBackend",
        "YAMLBackend",
    ],
    "digital_experiments.callbacks": [
        "GlobalStateNotifier",
        "Logging",
        "CodeVersioning",
        "GitInfo",
        "PipFreeze",
        "SystemInfo",
        "Timing",
        "SaveLogs",
        "current_id",
        "current_dir",
        "time_block",
        "Callback",
    ],
    "digital_experiments.util": ["complete_config", "source_code", "artefact_location"],
    "digital_experiments.controllers": ["Controller", "GridSearch", "RandomSearch"],
    "digital_experiments.experiment": ["experiment"],
}


@pytest.mark.parametrize("name", TOP_LEVEL_2_0_4)
def test_top_level_names_of_2_0_4(name: str) -> None:
    """Every name 2.0.4 exported from the package is still exported."""
    assert name in digital_experiments.__all__
    assert getattr(digital_experiments, name) is not None


@pytest.mark.parametrize(
    ("module", "name"), [(m, n) for m, names in PATHS_2_0_4.items() for n in names]
)
def test_module_paths_of_2_0_4(module: str, name: str) -> None:
    """Each 2.0.4 module still offers the names code imported from it."""
    assert hasattr(importlib.import_module(module), name)


def test_same_objects_at_every_path() -> None:
    """Names reachable from several modules are the same objects."""
    from digital_experiments import backends, callbacks, core

    assert core.Backend is backends.Backend is digital_experiments.Backend
    assert core.Callback is callbacks.Callback is digital_experiments.Callback
    assert core.Observation is digital_experiments.Observation
    assert callbacks.current_dir is digital_experiments.current_dir
    assert callbacks.SaveLogs is digital_experiments.SaveLogs


def test_savelogs_imports_from_the_package() -> None:
    """``from digital_experiments import SaveLogs`` works (2.0.4 needed ``.callbacks``)."""
    from digital_experiments import SaveLogs

    assert SaveLogs().name == "logs.txt"


def test_signatures_match_2_0_4() -> None:
    """The decorator and the query methods keep 2.0.4's parameters and defaults."""
    params = inspect.signature(experiment).parameters
    old = {
        "function": None,
        "root": None,
        "verbose": False,
        "backend": "pickle",
        "cache": False,
        "callbacks": None,
    }
    assert {name: params[name].default for name in old} == old
    assert list(params)[: len(old)] == list(old)
    added = [p for name, p in params.items() if name not in old]  # a superset of 2.0.4's:
    assert all(p.kind is p.KEYWORD_ONLY and p.default is None for p in added)  # optional

    @experiment
    def f() -> None:
        pass

    observations = inspect.signature(f.observations).parameters
    assert observations["current_code_only"].default is True
    frame = inspect.signature(f.to_dataframe).parameters
    assert list(frame)[:3] == ["current_code_only", "include_metadata", "normalising_sep"]
    assert [frame[n].default for n in list(frame)[:3]] == [True, False, "."]


def test_experiment_exposes_its_backend_root(tmp_path: Path) -> None:
    """``exp.backend.root`` is the experiment's folder, as in 2.0.4."""

    @experiment(root=tmp_path / "runs")
    def f() -> None:
        pass

    assert f.backend.root == tmp_path / "runs"
    assert isinstance(f.callbacks, list)
    assert f.cache is False


def test_util_helpers() -> None:
    """``complete_config``, ``source_code`` and ``artefact_location`` behave as in 2.0.4."""
    from digital_experiments.util import artefact_location, complete_config, source_code

    def f(a: int, b: int = 2, *, c: int = 3) -> int:
        return a

    assert complete_config(f, (1,), {"c": 4}) == {"a": 1, "b": 2, "c": 4}
    with pytest.raises(TypeError):
        complete_config(f, (1, 2, 3), {})
    assert "def f(a: int, b: int = 2" in (source_code(f) or "")
    assert source_code(len) is None
    assert artefact_location(Path("root"), "id") == Path("root", "storage", "id")


# ---------------------------------------------------------------- records written by 2.0.4


def load_legacy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str) -> ModuleType:
    """Copy the 2.0.4 records of ``backend`` under DE_ROOT; import the function that made them."""
    shutil.copytree(DATA / backend / "legacy", tmp_path / "de-root" / "legacy")
    monkeypatch.setenv("DE_ROOT", str(tmp_path / "de-root"))
    monkeypatch.setenv("LEGACY_BACKEND", backend)
    module_path = tmp_path / "legacy_module.py"
    shutil.copy(DATA / "legacy_module.py", module_path)
    spec = importlib.util.spec_from_file_location(f"legacy_{backend}", module_path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("backend", SUFFIXES)
def test_records_written_by_2_0_4_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """Records made by the real 2.0.4 are listed as completed runs of the same code."""
    legacy = load_legacy(tmp_path, monkeypatch, backend).legacy
    observations = legacy.observations()
    assert len(observations) == 2
    first, second = observations
    assert first.status == second.status == "completed"
    assert "status" not in first.metadata
    assert first.config["options"] == {"lr": 0.1, "layers": [1, 2]}
    assert first.config["text"] == "line one\nline two\n"
    assert list(first.config["shape"]) == [2, 3]
    assert first.result == {
        "area": 6,
        "lines": ["line one", "line two"],
        "options": {"lr": 0.1, "layers": [1, 2]},
    }
    assert second.config["text"] == "single"
    assert second.result["area"] == 20
    assert set(first.metadata["timing"]) == {"work", "total"}
    assert "digital-experiments==2.0.4" in first.metadata["environment"]["pip_freeze"]
    assert first.metadata["code"].startswith("@experiment(backend=BACKEND)\ndef legacy(")


@pytest.mark.parametrize("backend", ["pickle", "yaml"])
def test_2_0_4_tuples_stay_tuples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """Tuples in 2.0.4 pickle and yaml records load back as tuples."""
    legacy = load_legacy(tmp_path, monkeypatch, backend).legacy
    assert legacy.observations()[0].config["shape"] == (2, 3)


@pytest.mark.parametrize("backend", SUFFIXES)
def test_2_0_4_artefacts_are_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """Artefacts that 2.0.4 runs saved are found by ``artefacts(id)``."""
    legacy = load_legacy(tmp_path, monkeypatch, backend).legacy
    first = legacy.observations()[0]
    (notes,) = legacy.artefacts(first.id)
    assert notes.name == "notes.txt"
    assert notes.read_text() == "line one\nline two\n"


@pytest.mark.parametrize("backend", SUFFIXES)
def test_new_runs_join_2_0_4_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """New runs are stored next to 2.0.4 records and listed after them; the dataframe spans both."""
    legacy = load_legacy(tmp_path, monkeypatch, backend).legacy
    legacy((1, 1), {"lr": 1.0, "layers": [3]}, text="new")
    observations = legacy.observations()
    assert [o.config["text"] for o in observations] == ["line one\nline two\n", "single", "new"]
    assert [o.status for o in observations] == ["completed"] * 3
    frame = legacy.to_dataframe()
    assert list(frame["result.area"]) == [6, 20, 1]
    assert "config.options.lr" in frame.columns


def test_cache_hits_2_0_4_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``cache=True`` a config already run by 2.0.4 (same code) is not run again."""
    from digital_experiments.experiment import as_experiment

    legacy = load_legacy(tmp_path, monkeypatch, "pickle").legacy
    as_experiment(legacy).cache = True
    result = legacy((4, 5), {"lr": 0.01, "layers": []}, text="single")
    assert result["area"] == 20
    assert len(legacy.observations(status="all")) == 2
    assert len(list((tmp_path / "de-root" / "legacy" / "storage").iterdir())) == 2


# ---------------------------------------------------------------- fixes over 2.0.4


def test_root_accepts_a_string(tmp_path: Path) -> None:
    """``root="folder"`` works (2.0.4 crashed on a str)."""

    @experiment(root="folder")
    def f() -> int:
        return 1

    f()
    assert len(list((tmp_path / "folder").glob("*.pkl"))) == 1


def test_methods_can_be_decorated() -> None:
    """A method records without ``self`` in its config (2.0.4 could not bind methods)."""

    class Model:
        @experiment
        def fit(self, x: int) -> int:
            return x * 2

    assert Model().fit(1) == 2
    assert [o.config for o in Model.fit.observations()] == [{"x": 1}]


def test_import_keeps_pyyaml_global_representers(tmp_path: Path) -> None:
    """Importing the package leaves PyYAML's global representers untouched (2.0.4 changed them)."""
    code = (
        "import yaml\n"
        "before = (dict(yaml.representer.Representer.yaml_representers),"
        " dict(yaml.Dumper.yaml_representers), dict(yaml.SafeDumper.yaml_representers))\n"
        "import digital_experiments, digital_experiments.backends\n"
        "after = (dict(yaml.representer.Representer.yaml_representers),"
        " dict(yaml.Dumper.yaml_representers), dict(yaml.SafeDumper.yaml_representers))\n"
        "assert before == after\n"
        "assert yaml.dump('a\\nb') == yaml.dump('a\\nb', Dumper=yaml.Dumper)\n"
        "assert '|' not in yaml.dump('a\\nb')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DE_ROOT"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_de_root_keeps_experiments_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``DE_ROOT`` two experiments no longer mix their runs (2.0.4 shared one folder)."""
    monkeypatch.setenv("DE_ROOT", str(tmp_path / "all"))

    @experiment
    def a() -> str:
        return "a"

    @experiment
    def b() -> str:
        return "b"

    a()
    b()
    assert [o.result for o in a.observations()] == ["a"]
    assert [o.result for o in b.observations()] == ["b"]
