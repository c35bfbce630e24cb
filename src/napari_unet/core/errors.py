"""Exceptions with messages meant for the user: the CLI prints them as one line, the
widgets show them as notifications. Each message says what is wrong and what to do."""


class UNetError(Exception):
    """Base of every error napari-unet raises on purpose for bad input."""


class InputError(UNetError, ValueError):
    """The image (or an argument) cannot be segmented or trained on as given."""


class ModelFileError(UNetError):
    """A model file is missing, corrupt, unsafe or of an unknown format."""


class ModelNotFoundError(UNetError, LookupError):
    """No built-in or user model has the requested name, and it is not a file path."""


class AnnotationError(UNetError, ValueError):
    """Annotations cannot be trained on (wrong shape, nothing painted, ...)."""


class OutputError(UNetError):
    """An output cannot be written as asked: it exists, it is an input, or it is not ours."""


class NonFiniteWarning(UserWarning):
    """NaN or infinite pixels were replaced before they reached the network."""
