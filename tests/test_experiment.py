"""``@experiment`` and :class:`Experiment`: the seed walkthrough, queries, caching, errors."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from digital_experiments import Experiment, Observation, current_dir, experiment
from digital_experiments.backends import PickleBackend

BACKENDS = ["pickle", "json", "yaml"]


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (no DE_ROOT), failing loudly on error."""
    env = {k: v for k, v in os.environ.items() if k != "DE_ROOT"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def load_module(path: Path, source: str) -> ModuleType:
    """Write ``source`` to ``path`` and import it under a unique name."""
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(f"_de_test_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SQUARE = """\
from digital_experiments import experiment


@experiment
def square(x):
    return x**2
"""


# ---------------------------------------------------------------- the seed walkthrough


def test_calls_return_the_function_result() -> None:
    """A decorated function returns exactly what the function returns."""

    @experiment
    def square(x: int) -> int:
        return x**2

    assert [square(i) for i in range(5)] == [0, 1, 4, 9, 16]


@pytest.mark.parametrize("backend", BACKENDS)
def test_observations_are_ordered_by_id(backend: str) -> None:
    """``observations()`` returns one Observation per call, oldest first."""

    @experiment(backend=backend)
    def square(x: int) -> int:
        return x**2

    for i in range(5):
        square(i)
    observations = square.observations()
    assert [o.id for o in observations] == sorted(o.id for o in observations)
    assert [o.config for o in observations] == [{"x": i} for i in range(5)]
    assert [o.result for o in observations] == [0, 1, 4, 9, 16]
    assert all(isinstance(o, Observation) for o in observations)


def test_observation_repr_is_compact() -> None:
    """An Observation prints as ``Observation(<id>, {'x': 0} → 0)``."""

    @experiment
    def square(x: int) -> int:
        return x**2

    square(0)
    (observation,) = square.observations()
    assert repr(observation) == f"Observation({observation.id}, {{'x': 0}} → 0)"


def test_observations_persist_across_python_sessions(tmp_path: Path) -> None:
    """Runs recorded by one interpreter are read back by another."""
    (tmp_path / "square_module.py").write_text(SQUARE)
    run_python("import square_module as m; [m.square(i) for i in range(5)]", tmp_path)
    module = load_module(tmp_path / "square_module.py", SQUARE)
    module.square(5)
    observations = module.square.observations()
    assert [o.result for o in observations] == [0, 1, 4, 9, 16, 25]
    out = run_python(
        "import square_module as m; print(len(m.square.observations()))", tmp_path
    ).stdout
    assert out.strip() == "6"


def test_to_dataframe_columns() -> None:
    """``to_dataframe()`` has exactly the columns id, result and config.<arg>."""

    @experiment
    def square(x: int) -> int:
        return x**2

    for i in range(5):
        square(i)
    frame = square.to_dataframe()
    assert list(frame.columns) == ["id", "result", "config.x"]
    assert list(frame["result"]) == [0, 1, 4, 9, 16]
    assert list(frame["id"]) == [o.id for o in square.observations()]


def test_to_dataframe_flattens_nested_values_with_sep() -> None:
    """Nested dict configs and results become one column per leaf, joined by the separator."""

    @experiment
    def train(opts: dict[str, Any]) -> dict[str, Any]:
        return {"loss": opts["lr"] * 2, "extra": {"epochs": 3}}

    train({"lr": 0.5, "model": {"depth": 2}})
    frame = train.to_dataframe(normalising_sep="/")
    assert set(frame.columns) == {
        "id",
        "result/loss",
        "result/extra/epochs",
        "config/opts/lr",
        "config/opts/model/depth",
    }
    assert frame["config/opts/model/depth"].tolist() == [2]
    assert "config.opts.lr" in train.to_dataframe().columns


def test_to_dataframe_metadata_columns_only_on_request() -> None:
    """``include_metadata=True`` adds metadata.* columns; the default has none."""

    @experiment
    def square(x: int) -> int:
        return x**2

    square(2)
    assert not any(c.startswith("metadata") for c in square.to_dataframe().columns)
    columns = set(square.to_dataframe(include_metadata=True).columns)
    assert {
        "metadata.timing.duration",
        "metadata.code",
        "metadata.environment.system.python_version",
        "metadata.environment.pip_freeze",
    } <= columns


def test_to_dataframe_is_empty_without_runs() -> None:
    """An experiment never called gives an empty DataFrame."""

    @experiment
    def square(x: int) -> int:
        return x**2

    assert square.to_dataframe().empty


def test_observation_asdict_is_json_serialisable_with_metadata() -> None:
    """``Observation._asdict()`` is plain JSON with timing, environment and code."""

    @experiment
    def square(x: int) -> int:
        return x**2

    square(3)
    data = json.loads(json.dumps(square.observations()[0]._asdict()))
    assert data["config"] == {"x": 3}
    assert data["result"] == 9
    metadata = data["metadata"]
    assert metadata["status"] == "completed"
    assert set(metadata["timing"]) == {"start", "end", "duration"}
    assert metadata["timing"]["duration"] >= 0
    time.strptime(metadata["timing"]["start"], "%Y-%m-%d %H:%M:%S")
    environment = metadata["environment"]
    assert set(environment["system"]) == {
        "platform",
        "machine",
        "processor",
        "system",
        "python_version",
        "pwd",
    }
    assert environment["system"]["pwd"] == os.getcwd()
    assert "filelock==" in environment["pip_freeze"]
    assert "git" not in environment  # tmp_path is not a git repository
    assert "def square(x: int) -> int:" in metadata["code"]
    assert "@experiment" in metadata["code"]


# What ``import digital_experiments`` must not load: each waits for the first
# call that needs it (DataFrames, YAML records, sweeps, async calls, buckets,
# where= strings, a git check), so the import stays light.
LATER = [
    "pandas",
    "yaml",
    "asyncio",
    "anyio",
    "concurrent.futures",
    "boto3",
    "tqdm",
    "filelock",
    "subprocess",
    "socket",
    "uuid",
    "platform",
    "traceback",
    "html",
    "tempfile",
    "digital_experiments._sweep.engine",
    "digital_experiments._sweep.claims",
    "digital_experiments._store.s3",
    "digital_experiments._store.memory",
    "digital_experiments._model.where",
    "digital_experiments._read.compare",
]


def test_importing_loads_nothing_heavy(tmp_path: Path) -> None:
    """``import digital_experiments`` leaves each of :data:`LATER` unimported."""
    code = (
        "import digital_experiments, sys\n"
        f"loaded = [name for name in {LATER!r} if name in sys.modules]\n"
        "assert loaded == [], loaded\n"
    )
    run_python(code, tmp_path)


def test_what_import_leaves_out_loads_on_first_use(tmp_path: Path) -> None:
    """The check above can fail: a sweep, a where= string and a memory root load
    what the import left out."""
    code = (
        "import sys\n"
        "from digital_experiments import experiment\n"
        "@experiment(root='memory://later')\n"
        "def f(x):\n"
        "    return x\n"
        "f.sweep([{'x': 1}])\n"
        "f.observations(where='config.x == 1')\n"
        "missing = [name for name in ('digital_experiments._sweep.engine', "
        "'digital_experiments._model.where', 'digital_experiments._store.memory') "
        "if name not in sys.modules]\n"
        "assert missing == [], missing\n"
    )
    run_python(code, tmp_path)


# ---------------------------------------------------------------- artefacts


def test_current_dir_is_the_runs_storage_folder() -> None:
    """Inside a run ``current_dir()`` is ``<root>/storage/<id>/`` and exists."""
    seen: list[Path] = []

    @experiment
    def save() -> None:
        seen.append(current_dir())
        (current_dir() / "out.txt").write_text("hi")

    save()
    (observation,) = save.observations()
    expected = Path("experiments", "save", "storage", observation.id).absolute()
    assert seen == [expected]
    assert expected.is_dir()
    assert save.artefacts(observation.id) == [expected / "out.txt"]


def test_artefact_folder_is_created_on_demand_only() -> None:
    """A run that never asks for ``current_dir()`` gets no storage folder."""

    @experiment
    def plain() -> int:
        return 1

    plain()
    assert not (plain.backend.root / "storage").exists()
    assert plain.artefacts(plain.observations()[0].id) == []


def test_artefacts_lists_nested_files_sorted() -> None:
    """``artefacts(id)`` lists every file of the run, sub-folders included, sorted."""

    @experiment
    def save() -> None:
        (current_dir() / "b.txt").write_text("b")
        (current_dir() / "a.txt").write_text("a")
        (current_dir() / "sub").mkdir()
        (current_dir() / "sub" / "c.txt").write_text("c")

    save()
    run_id = save.observations()[0].id
    names = [
        p.relative_to(save.backend.root / "storage" / run_id).as_posix()
        for p in save.artefacts(run_id)
    ]
    assert names == ["a.txt", "b.txt", "sub/c.txt"]


def test_artefacts_of_unknown_id_is_empty() -> None:
    """``artefacts`` of an id with no run is ``[]``, not an error."""

    @experiment
    def plain() -> int:
        return 1

    assert plain.artefacts("2000-01-01_00-00-00_000000") == []


@pytest.mark.parametrize("bad", ["../..", "..", "a/b", "/etc", "", "."])
def test_artefacts_rejects_paths(bad: str) -> None:
    """``artefacts`` refuses ids that are paths, so it cannot list outside the store."""

    @experiment
    def plain() -> int:
        return 1

    with pytest.raises(ValueError, match="Invalid run id"):
        plain.artefacts(bad)


# ---------------------------------------------------------------- queries


def _runs_with_a_failure() -> Any:
    @experiment
    def maybe(x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x

    for x in (1, 2, 3):
        maybe(x)
    with pytest.raises(ValueError, match="negative"):
        maybe(-1)
    return maybe


def test_observations_default_to_completed_runs() -> None:
    """A failed run is recorded but ``observations()`` only returns completed runs."""
    maybe = _runs_with_a_failure()
    assert [o.config["x"] for o in maybe.observations()] == [1, 2, 3]
    (failed,) = maybe.observations(status="failed")
    assert failed.config == {"x": -1}
    assert failed.result is None
    assert failed.status == "failed"
    assert failed.metadata["error"]["type"] == "ValueError"
    assert failed.metadata["error"]["message"] == "negative"
    assert "raise ValueError" in failed.metadata["error"]["traceback"]
    assert len(maybe.observations(status="all")) == 4
    assert len(maybe.observations(status=["completed", "failed"])) == 4


def test_observations_rejects_unknown_status() -> None:
    """An unknown status name raises ValueError listing the valid ones."""
    maybe = _runs_with_a_failure()
    with pytest.raises(ValueError, match=r"Unknown status 'bogus'\. Use one of running, completed"):
        maybe.observations(status="bogus")


def test_observations_where_mapping_and_callables() -> None:
    """``where`` filters on config values, predicates on values, or whole observations."""
    maybe = _runs_with_a_failure()
    assert [o.result for o in maybe.observations(where={"x": 2})] == [2]
    assert [o.result for o in maybe.observations(where={"x": lambda v: v >= 2})] == [2, 3]
    assert [o.result for o in maybe.observations(where=lambda o: o.result == 3)] == [3]
    assert maybe.observations(where={"missing": 1}) == []
    with pytest.raises(TypeError, match="where= takes a mapping"):
        maybe.observations(where=5)  # type: ignore[arg-type]


def test_observations_since_and_limit() -> None:
    """``since`` keeps runs started at or after a time or id; ``limit`` keeps the newest."""

    @experiment
    def ident(x: int) -> int:
        return x

    ident(0)
    ident(1)
    time.sleep(0.002)
    cut = datetime.now()
    ident(2)
    ident(3)
    all_ids = [o.id for o in ident.observations()]
    assert [o.result for o in ident.observations(since=cut)] == [2, 3]
    assert [o.result for o in ident.observations(since=all_ids[1])] == [1, 2, 3]
    assert len(ident.observations(since=all_ids[0][:10])) == 4  # a date prefix works
    assert ident.observations(since="2999-01-01") == []
    assert [o.result for o in ident.observations(limit=2)] == [2, 3]
    assert ident.observations(limit=0) == []
    assert [o.result for o in ident.observations(since=all_ids[1], limit=1)] == [3]
    assert list(ident.to_dataframe(limit=1)["result"]) == [3]
    with pytest.raises(ValueError, match="limit must be >= 0"):
        ident.observations(limit=-1)


# ---------------------------------------------------------------- caching


def test_cache_returns_stored_result_without_running() -> None:
    """With ``cache=True`` a config already run returns its stored result; new configs run."""
    calls: list[int] = []

    @experiment(cache=True)
    def slow(x: int) -> list[int]:
        calls.append(x)
        return [x, x]

    assert slow(1) == [1, 1]
    assert slow(1) == [1, 1]
    assert slow(x=1) == [1, 1]
    assert slow(2) == [2, 2]
    assert calls == [1, 2]
    assert len(slow.observations()) == 2


def test_without_cache_every_call_runs() -> None:
    """The default (``cache=False``) runs and records every call."""
    calls: list[int] = []

    @experiment
    def slow(x: int) -> int:
        calls.append(x)
        return x

    slow(1)
    slow(1)
    assert calls == [1, 1]
    assert len(slow.observations()) == 2


def test_cache_ignores_failed_runs() -> None:
    """A failed run is not a cache hit: the next call runs again."""
    attempts: list[int] = []

    @experiment(cache=True)
    def flaky(x: int) -> int:
        attempts.append(x)
        if len(attempts) == 1:
            raise RuntimeError("first try fails")
        return x

    with pytest.raises(RuntimeError, match="first try fails"):
        flaky(1)
    assert flaky(1) == 1
    assert flaky(1) == 1
    assert attempts == [1, 1]


VERSION_1 = """\
from pathlib import Path
from digital_experiments import experiment


@experiment(cache=True)
def f(x):
    with Path("calls.txt").open("a") as log:
        log.write("v1\\n")
    return x + 1
"""

VERSION_2 = VERSION_1.replace("v1", "v2").replace("x + 1", "x + 2")


def test_cache_reruns_when_code_changes(tmp_path: Path) -> None:
    """Changing the function's source invalidates the cache, and queries follow the code."""
    v1 = load_module(tmp_path / "mod_v1.py", VERSION_1)
    v2 = load_module(tmp_path / "mod_v2.py", VERSION_2)
    assert v1.f.backend.root == v2.f.backend.root
    calls = tmp_path / "calls.txt"

    assert v1.f(1) == 2
    assert v1.f(1) == 2
    assert calls.read_text().split() == ["v1"]
    assert v2.f(1) == 3
    assert v2.f(1) == 3
    assert calls.read_text().split() == ["v1", "v2"]
    assert v1.f(1) == 2  # the v1 run is still cached for v1's code
    assert calls.read_text().split() == ["v1", "v2"]

    assert [o.result for o in v2.f.observations()] == [3]
    assert [o.result for o in v2.f.observations(current_code_only=True)] == [3]
    assert [o.result for o in v2.f.observations(current_code_only=False)] == [2, 3]
    assert len(v1.f.to_dataframe(current_code_only=False)) == 2


def test_cache_hits_runs_from_another_process(tmp_path: Path) -> None:
    """A run recorded by another interpreter is a cache hit here."""
    (tmp_path / "mod_v1.py").write_text(VERSION_1)
    run_python("import mod_v1; mod_v1.f(5)", tmp_path)
    module = load_module(tmp_path / "mod_v1.py", VERSION_1)
    assert module.f(5) == 6
    assert (tmp_path / "calls.txt").read_text().split() == ["v1"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("first", "again"),
    [
        ((2, 3), (2, 3)),
        ((2, 3), [2, 3]),
        ("array", "array"),
        ({(1, 2): "a", 3: "b"}, {3: "b", (1, 2): "a"}),
        ({1: "a", "b": 2}, {"b": 2, 1: "a"}),
    ],
    ids=["tuple", "tuple-as-list", "numpy-array", "tuple-keys", "mixed-keys"],
)
def test_cache_hits_configs_whatever_the_backend_stores(
    backend: str, first: Any, again: Any
) -> None:
    """Tuples, numpy arrays and dicts with tuple or mixed keys hit the cache on every backend."""
    np = pytest.importorskip("numpy")
    if first == "array":
        first, again = np.arange(3.0), np.arange(3.0)
    if backend != "pickle" and isinstance(first, dict) and (1, 2) in first:
        pytest.skip("only pickle stores tuple dict keys")
    calls: list[Any] = []

    @experiment(backend=backend, cache=True)
    def f(value: Any) -> int:
        calls.append(value)
        return len(calls)

    assert f(first) == 1
    assert f(again) == 1
    assert len(calls) == 1


def test_cache_tells_big_arrays_apart() -> None:
    """Two 2,000-element arrays differing in one element are two configs."""
    np = pytest.importorskip("numpy")

    @experiment(cache=True)
    def total(xs: Any) -> float:
        return float(xs.sum())

    zeros = np.zeros(2000)
    other = zeros.copy()
    other[1000] = 5.0
    assert total(zeros) == 0.0
    assert total(other) == 5.0
    assert total(other.copy()) == 5.0
    assert len(total.observations()) == 2


NO_SOURCE = """from digital_experiments import experiment

@experiment(root={root!r}, cache=True)
def f(x):
    print("ran", {marker!r})
    return x + {step}

print("result", f(1))
print("results", sorted(o.result for o in f.observations()))
print("all", sorted(o.result for o in f.observations(current_code_only=False)))
"""


def test_functions_without_source_get_a_code_identity(tmp_path: Path) -> None:
    """``python -c`` with a changed body reruns under cache=True; queries tell versions apart."""
    root = str(tmp_path / "runs")

    def run(step: int, marker: str) -> list[str]:
        code = NO_SOURCE.format(root=root, step=step, marker=marker)
        return run_python(code, tmp_path).stdout.splitlines()

    assert run(1, "v1") == ["ran v1", "result 2", "results [2]", "all [2]"]
    assert run(1, "v1") == ["result 2", "results [2]", "all [2]"]  # cached
    assert run(2, "v2") == ["ran v2", "result 3", "results [3]", "all [2, 3]"]
    assert run(1, "v1") == ["result 2", "results [2]", "all [2, 3]"]  # v1 still cached
    records = PickleBackend(tmp_path / "runs").load_all()
    assert [r.metadata["code"] for r in records] == [None, None]
    assert len({r.metadata["code_hash"] for r in records}) == 2


def test_functions_defined_by_exec_are_versioned_by_their_code() -> None:
    """Two ``exec``-defined versions of one function share no cached run."""
    source = "@experiment(cache=True)\ndef g(x):\n    return x * {factor}\n"
    namespace: dict[str, Any] = {"experiment": experiment}
    exec(source.format(factor=2), namespace)
    first = namespace["g"]
    exec(source.format(factor=3), namespace)
    second = namespace["g"]
    assert first(5) == 10
    assert second(5) == 15
    assert first(5) == 10
    assert [o.result for o in second.observations()] == [15]
    assert [o.result for o in second.observations(current_code_only=False)] == [10, 15]


# ---------------------------------------------------------------- methods and errors


def test_decorating_a_method() -> None:
    """A decorated method records its arguments without ``self``."""

    class Model:
        def __init__(self, scale: int) -> None:
            self.scale = scale

        @experiment
        def predict(self, x: int, bias: int = 0) -> int:
            return self.scale * x + bias

    assert Model(2).predict(3) == 6
    assert Model(10).predict(1, bias=1) == 11
    observations = Model.predict.observations()
    assert [o.config for o in observations] == [{"x": 3, "bias": 0}, {"x": 1, "bias": 1}]
    assert [o.result for o in observations] == [6, 11]


def test_module_level_function_with_self_parameter_keeps_it() -> None:
    """Only functions defined in a class body drop their first argument."""

    @experiment
    def f(self: int, x: int) -> int:
        return self + x

    f(1, 2)
    assert f.observations()[0].config == {"self": 1, "x": 2}


def test_config_includes_defaults_and_kwargs() -> None:
    """The config holds every argument, positional, keyword and default alike."""

    @experiment
    def f(a: int, b: int = 2, *args: int, c: int = 3, **kwargs: int) -> int:
        return a

    f(1)
    f(1, 5, 6, 7, c=4, d=8)
    assert [o.config for o in f.observations()] == [
        {"a": 1, "b": 2, "args": (), "c": 3, "kwargs": {}},
        {"a": 1, "b": 5, "args": (6, 7), "c": 4, "kwargs": {"d": 8}},
    ]


def test_bad_arguments_raise_typeerror_naming_the_function() -> None:
    """Calling with arguments that do not fit raises TypeError naming the function."""

    @experiment
    def square(x: int) -> int:
        return x**2

    with pytest.raises(TypeError, match=r"^square\(x.*: too many positional arguments$"):
        square(1, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"square.*missing a required argument: 'x'"):
        square()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"square.*unexpected keyword argument 'y'"):
        square(1, y=2)  # type: ignore[call-arg]
    assert square.observations(status="all") == []


def test_generator_functions_are_refused() -> None:
    """Decorating a generator function raises TypeError (its body would run unrecorded)."""
    with pytest.raises(TypeError, match="cannot record generator function 'gen'"):

        @experiment
        def gen() -> Any:
            yield 1


def test_async_generator_functions_are_refused() -> None:
    """Decorating an async generator function raises TypeError too."""
    with pytest.raises(TypeError, match="cannot record generator function 'agen'"):

        @experiment
        async def agen() -> Any:
            yield 1


def test_callbacks_must_be_callback_instances() -> None:
    """``callbacks=[object()]`` raises TypeError saying what to subclass."""
    with pytest.raises(TypeError, match=r"callbacks= takes Callback instances.*Subclass"):

        @experiment(callbacks=[object()])  # type: ignore[list-item]
        def f() -> None:
            pass


def test_root_must_be_a_path() -> None:
    """``root=5`` raises TypeError."""
    with pytest.raises(TypeError, match=r"root= takes a str or pathlib.Path, not 5"):

        @experiment(root=5)  # type: ignore[arg-type]
        def f() -> None:
            pass


def test_only_callables_can_be_decorated() -> None:
    """``experiment(5)`` raises TypeError."""
    with pytest.raises(TypeError, match="@experiment decorates functions, not 5"):
        experiment(5)  # type: ignore[call-overload]


def test_exceptions_propagate_unchanged() -> None:
    """The exception a run raises reaches the caller as the very same object."""
    error = KeyError("boom")

    @experiment
    def fail() -> None:
        raise error

    with pytest.raises(KeyError) as info:
        fail()
    assert info.value is error


def test_decorated_function_keeps_its_identity() -> None:
    """The wrapper keeps name and docstring and exposes its Experiment."""

    @experiment
    def square(x: int) -> int:
        """Square x."""
        return x**2

    assert square.__name__ == "square"
    assert square.__doc__ == "Square x."
    assert isinstance(square.experiment, Experiment)
    assert repr(square.experiment) == "Experiment(square)"
    assert square.experiment.root == square.backend.root


def test_experiment_object_is_callable_too() -> None:
    """Calling the Experiment object records like calling the decorated function."""

    @experiment
    def square(x: int) -> int:
        return x**2

    assert square.experiment(4) == 16
    assert [o.result for o in square.observations()] == [16]


@pytest.mark.anyio
async def test_async_experiment_records_runs() -> None:
    """An ``async def`` experiment returns a coroutine function whose awaits are recorded."""

    @experiment
    async def double(x: int) -> int:
        return 2 * x

    assert await double(2) == 4
    assert [o.result for o in double.observations()] == [4]


def test_python_c_function_records_without_code(tmp_path: Path) -> None:
    """A function defined in ``python -c`` has no source: runs record code as None."""
    code = (
        "from digital_experiments import experiment\n"
        "@experiment\n"
        "def f(x):\n"
        "    return x + 1\n"
        "assert f(1) == 2\n"
        "(o,) = f.observations()\n"
        "print(o.result, o.metadata['code'], o.metadata['status'])\n"
    )
    assert run_python(code, tmp_path).stdout.split() == ["2", "None", "completed"]


# ---------------------------------------------------------------- configs as passed, roots refused


@pytest.mark.parametrize("backend", BACKENDS)
def test_config_is_recorded_as_passed_even_if_the_function_mutates_it(backend: str) -> None:
    """A function that mutates its argument does not change the recorded config."""

    @experiment(backend=backend)
    def mut(cfg: dict[str, Any]) -> float:
        cfg["lr"] *= 10
        return float(cfg["lr"])

    assert mut({"lr": 0.1}) == 1.0
    (run,) = mut.observations()
    assert run.config == {"cfg": {"lr": 0.1}}


def test_mutable_default_is_recorded_as_it_was_at_the_call() -> None:
    """A mutable default mutated by the body is recorded as it was when the call started."""

    @experiment
    def grow(items: list[int] = []) -> int:  # noqa: B006 - the mutable default is the point
        items.append(1)
        return len(items)

    assert [grow(), grow()] == [1, 2]
    assert [run.config for run in grow.observations()] == [{"items": []}, {"items": [1]}]


@pytest.mark.anyio
@pytest.mark.parametrize("backend", BACKENDS)
async def test_async_config_is_recorded_as_passed(backend: str) -> None:
    """An async function that mutates its argument does not change the recorded config."""

    @experiment(backend=backend)
    async def amut(cfg: dict[str, Any]) -> None:
        cfg["lr"] = 1.0

    await amut({"lr": 0.1})
    (run,) = amut.observations()
    assert run.config == {"cfg": {"lr": 0.1}}


def test_partial_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    """Decorating a functools.partial raises a TypeError saying what to do; no folder appears."""
    import functools

    def train(lr: float, epochs: int) -> float:
        return lr * epochs

    with pytest.raises(TypeError, match=r"no usable __name__.*Define a function"):
        experiment(functools.partial(train, epochs=3))
    with pytest.raises(TypeError, match=r"no usable __name__"):
        experiment(root=tmp_path / "r")(functools.partial(train, epochs=3))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_name_with_a_path_is_refused(tmp_path: Path) -> None:
    """A function whose __name__ holds `../` never writes outside ./experiments."""

    def f() -> None: ...

    f.__name__ = "../escape"
    with pytest.raises(TypeError, match=r"no usable __name__"):
        experiment(f)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["gs://b/r", "file:///tmp/x", "s3://Bad_Bucket/x"])
def test_url_root_is_refused(url: str, tmp_path: Path) -> None:
    """root="gs://..." is a ValueError naming it and the roots that work, not a
    folder called ./gs:; an s3:// URL with no valid bucket says so."""
    from digital_experiments.errors import InvalidRootError

    with pytest.raises(InvalidRootError, match=r"cannot be recorded in.*s3://|no valid bucket"):

        @experiment(root=url)
        def f() -> None: ...

    assert isinstance(InvalidRootError("x"), ValueError)
    assert list(tmp_path.iterdir()) == []


def test_de_root_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """$DE_ROOT set to a URL is refused the same way."""
    from digital_experiments.errors import InvalidRootError

    monkeypatch.setenv("DE_ROOT", "gs://bucket/runs")
    with pytest.raises(
        InvalidRootError, match=r"\$DE_ROOT 'gs://bucket/runs/f' is a URL of a kind"
    ):

        @experiment
        def f() -> None: ...


def test_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """root= naming an existing file raises a clear error, not a raw FileExistsError."""
    from digital_experiments.errors import InvalidRootError

    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(InvalidRootError, match=r"is a file, not a folder"):

        @experiment(root=tmp_path / "runs")
        def f() -> None: ...
