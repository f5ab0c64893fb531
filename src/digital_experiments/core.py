"""The base types, at their digital-experiments 2.0.4 import paths.

:class:`Observation` (one run's record), :class:`Backend` (where records go),
:class:`Callback` (hooks around each run), :class:`Controller` (chooses configs)
and :class:`Experiment`.
"""

from ._backends import Backend
from ._callbacks import Callback
from ._controllers import Controller
from ._experiment import Experiment
from ._records import Observation

__all__ = ["Backend", "Callback", "Controller", "Experiment", "Observation"]
