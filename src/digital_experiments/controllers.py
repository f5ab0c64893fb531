"""Controllers choose which configs to run: :class:`GridSearch`, :class:`RandomSearch`
and their base, :class:`Controller` (import path as in digital-experiments 2.0.4)."""

from ._controllers import Controller, GridSearch, RandomSearch

__all__ = ["Controller", "GridSearch", "RandomSearch"]
