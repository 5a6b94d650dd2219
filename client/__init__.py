"""Client of the pixelserve Triton image classifier: a Python API and the pixelserve-classify CLI."""
from .classifier import ImageClassifierClient, Outcome
from .errors import (
    AdminKeyRequired,
    ClientError,
    ImageReadError,
    InferenceFailed,
    InvalidImage,
    ItemError,
    ModelNotFound,
    ModelNotReady,
    RequestTimedOut,
    ServerUnreachable,
)
from .images import load_image
from .inputs import ENCODED_MODEL, RAW_MODEL, ImageInput
from .predictions import Prediction, parse_classification

__all__ = [
    "ImageClassifierClient",
    "Outcome",
    "ImageInput",
    "RAW_MODEL",
    "ENCODED_MODEL",
    "Prediction",
    "parse_classification",
    "load_image",
    "ClientError",
    "ServerUnreachable",
    "ModelNotReady",
    "ModelNotFound",
    "AdminKeyRequired",
    "ItemError",
    "ImageReadError",
    "InvalidImage",
    "InferenceFailed",
    "RequestTimedOut",
]
