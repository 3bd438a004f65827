"""twins-deploy: Twins vision transformers from PyTorch to ONNX and TensorRT, validated.

``import twins_deploy`` loads torch but never TensorRT or CUDA libraries; those are
imported by the engine code that uses them.
"""
from __future__ import annotations

from twins_deploy.errors import (
    ArtifactError,
    BackendUnavailableError,
    CheckpointError,
    ExportError,
    InputShapeError,
    TwinsDeployError,
    UnknownModelError,
    ValidationFailedError,
    WeightsUnavailableError,
)
from twins_deploy.factory import create_model
from twins_deploy.registry import Preprocess, TwinsConfig, get_config, list_models, resolve_name
from twins_deploy.twins import Twins, count_params
from twins_deploy.weights import WeightsInfo, load_weights, randomize_

__version__ = "0.1.0"

__all__ = [
    "ArtifactError", "BackendUnavailableError", "CheckpointError", "ExportError",
    "InputShapeError", "Preprocess", "Twins", "TwinsConfig", "TwinsDeployError",
    "UnknownModelError", "ValidationFailedError", "WeightsInfo", "WeightsUnavailableError",
    "count_params", "create_model", "get_config", "list_models", "load_weights",
    "randomize_", "resolve_name", "__version__",
]
