"""One exception hierarchy for mistakes a user can cause.

Every message states what was wrong, where, and how to fix it, on one line, so the
command-line modules can print it as is (see allsearch._cli).
"""

from __future__ import annotations

__all__ = ["AllsearchError", "DataError", "SpaceError", "ModelError", "ConfigError", "StoreError"]


class AllsearchError(Exception):
    """Base class: a problem the user can fix; the message says how."""


class DataError(AllsearchError):
    """The dataset folder or its images cannot be used as given."""


class SpaceError(AllsearchError):
    """A search-space file or hyperparameter value is invalid."""


class ModelError(AllsearchError):
    """The requested network cannot be built for this input."""


class ConfigError(AllsearchError):
    """A flag or setting is invalid."""


class StoreError(AllsearchError):
    """A tracking or study store cannot be reached or written."""
