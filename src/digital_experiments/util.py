"""Small helpers, at their digital-experiments 2.0.4 import path."""

from ._model.layout import artefacts as artefact_location
from ._record.code import code_hash, code_identity, complete_config, source_code
from ._record.environment import refresh as refresh_environment

__all__ = [
    "artefact_location",
    "code_hash",
    "code_identity",
    "complete_config",
    "refresh_environment",
    "source_code",
]
