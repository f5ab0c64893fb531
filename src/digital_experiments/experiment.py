"""``@experiment`` and :class:`Experiment`, at their digital-experiments 2.0.4 import path."""

from ._experiment import Experiment, ExperimentFunction, as_experiment, experiment, resolve_root

__all__ = ["Experiment", "ExperimentFunction", "as_experiment", "experiment", "resolve_root"]
