"""Small helpers, at their digital-experiments 2.0.4 import path."""

from ._code import code_hash, code_identity, complete_config, source_code
from ._environment import refresh as refresh_environment
from ._layout import artefacts as artefact_location

__all__ = [
    "artefact_location",
    "code_hash",
    "code_identity",
    "complete_config",
    "refresh_environment",
    "source_code",
]
