"""Errors the package raises on purpose. Each message names the file or value and what is wrong,
so the CLI and the widgets can show it as one line instead of a traceback."""

from __future__ import annotations


class MedsegError(Exception):
    """Base class for errors with a message meant for the user."""


class ReadError(MedsegError):
    """A file that this plugin reads, but that is broken or unsupported."""


class WriteError(MedsegError):
    """A label volume could not be written (nothing was overwritten)."""


class GeometryError(MedsegError):
    """A geometry that cannot be represented or does not match (shape, affine)."""


class ModelError(MedsegError):
    """A model that cannot be used: a wrong card, unknown name, bad weights, an unusable bundle."""


class CardError(ModelError):
    """A model card whose content is wrong; the message names the file, the field and why."""


class InferenceError(MedsegError):
    """A model that cannot run on this input: wrong number of input volumes, unusable device..."""


class Cancelled(MedsegError):
    """A long job stopped because its ``should_stop`` callback said so; no partial result is kept."""
