"""The exceptions kerasq raises: one base class, one subclass per kind of problem.

Every error a user can cause is a ``KerasqError`` whose message names the argument, layer or file at fault
and says what to do. Each subclass also derives from the builtin exception it refines (``ValueError``,
``TypeError``, ``ImportError``, ...), so ``except ValueError`` written against earlier versions still works.
"""

from __future__ import annotations


class KerasqError(Exception):
    """Base class of every error kerasq raises on purpose."""


class ConfigError(KerasqError, ValueError):
    """A configuration object or argument has an invalid value."""


class DataError(KerasqError, ValueError):
    """Calibration, validation or evaluation data is unusable (shape, dtype, non-finite values, empty)."""


class ModelError(KerasqError, ValueError):
    """The model (or a layer in it) cannot be processed as given."""


class UnsupportedModelError(KerasqError, TypeError):
    """The model is not a graph (Functional/Sequential) model kerasq can read."""


class ExportError(KerasqError, ValueError):
    """The model cannot be exported in the requested format; the message says why and what to do."""


class ExportTargetError(KerasqError, FileExistsError):
    """An export would overwrite or delete something that is not a previous export of the same kind."""


class RuntimeUnavailableError(KerasqError, ImportError):
    """A runtime kerasq needs for this step is not installed; the message names the pip extra to add."""


class DataTypeError(DataError, TypeError):
    """Data of a kind kerasq cannot read (an unsupported container or dtype, a callable that needs arguments)."""


class BackendError(KerasqError, RuntimeError):
    """Keras runs on a backend other than TensorFlow."""
