"""The base types, at their digital-experiments 2.0.4 import paths.

:class:`Observation` (one run's record), :class:`Backend` (where records go),
:class:`Callback` (hooks around each run), :class:`Controller` (chooses configs)
and :class:`Experiment`.
"""

from ._controllers import Controller
from ._experiment import Experiment
from ._record.callbacks import Callback
from ._runs.backends import Backend
from ._runs.observation import Observation

__all__ = ["Backend", "Callback", "Controller", "Experiment", "Observation"]
