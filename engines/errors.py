"""Typed errors raised by the engines; messages are meant for the user."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error an engine raises on purpose."""


class UnknownEffect(EngineError):
    """The effect name is not one facestream knows."""


class InvalidParams(EngineError):
    """An effect parameter is missing, of the wrong type or out of range."""


class EffectUnavailable(EngineError):
    """The effect exists but cannot run here (missing weights, package or source face)."""


class ModelLoadError(EngineError):
    """A model file is missing, unreadable or not what it claims to be."""


class NoFaceFound(EngineError):
    """An image that must hold a face holds none."""


class TooManyFaces(EngineError):
    """An image that must hold exactly one face holds several."""


class InvalidDataset(EngineError):
    """A training data folder is missing, empty or not an extract folder."""


class BackendUnavailable(EngineError):
    """A compile backend (TensorRT, torch.compile) cannot run here, or the device is unusable."""


class EngineBuildError(EngineError):
    """Compiling or loading a model engine failed."""


class BatchRejected(EngineError):
    """A batching scheduler refused a request: its queue is full or it is shut down."""


class InvalidImage(EngineError, ValueError):
    """An image given to an engine is not what it takes (shape, dtype, colour channels)."""


class SourceWithdrawn(EngineError):
    """An effect's uploaded source face was deleted while the effect ran (its uploader
    withdrew consent): the effect stops using it."""
