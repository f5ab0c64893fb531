"""digital-experiments: record every call of an experiment function.

Examples
--------
>>> from digital_experiments import experiment
>>> @experiment
... def square(x):
...     return x**2
"""

from ._runs.context import current_dir, current_id, propagate, time_block
from ._runs.metrics import log
from .backends import Backend, register_backend
from .callbacks import (
    Callback,
    CodeVersioning,
    GitInfo,
    Logging,
    PipFreeze,
    SaveLogs,
    SystemInfo,
    Timing,
)
from .core import Observation
from .errors import (
    CallbackError,
    DigitalExperimentsError,
    InvalidRootError,
    NoExperimentRunning,
    StorageError,
    UnknownBackendError,
    UnstorableValueError,
)

# after the submodule is imported, so the name is the decorator, not the module
from .experiment import Experiment, experiment

__version__ = "3.4.0"

__all__ = [
    "Backend",
    "Callback",
    "CallbackError",
    "CodeVersioning",
    "DigitalExperimentsError",
    "Experiment",
    "GitInfo",
    "InvalidRootError",
    "Logging",
    "NoExperimentRunning",
    "Observation",
    "PipFreeze",
    "SaveLogs",
    "StorageError",
    "SystemInfo",
    "Timing",
    "UnknownBackendError",
    "UnstorableValueError",
    "__version__",
    "current_dir",
    "current_id",
    "experiment",
    "log",
    "propagate",
    "register_backend",
    "time_block",
]


def __getattr__(name: str) -> object:
    if name == "LockTimeoutError":  # removed in 3.2; errors warns and gives TimeoutError
        from . import errors

        return getattr(errors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
