"""Reading stored runs: the code path behind :meth:`Experiment.observations
<digital_experiments.Experiment.observations>`, :meth:`~digital_experiments.Experiment.to_dataframe`
and the command line.

:func:`load` reads an experiment folder without the function that wrote it.

Examples
--------
>>> from digital_experiments import query
>>> runs = query.load("experiments/train", status="failed")  # doctest: +SKIP
>>> frame = query.to_dataframe(runs)  # doctest: +SKIP
"""

from ._read.query import ANY_CODE, InvalidSince, load, select, since_floor, to_dataframe
from ._read.roots import (
    NoSuchRoot,
    experiment_folders,
    is_experiment_folder,
    open_root,
    record_formats,
)
from ._runs.observation import STATUSES, status_of

__all__ = [
    "ANY_CODE",
    "STATUSES",
    "InvalidSince",
    "NoSuchRoot",
    "experiment_folders",
    "is_experiment_folder",
    "load",
    "open_root",
    "record_formats",
    "select",
    "since_floor",
    "status_of",
    "to_dataframe",
]
