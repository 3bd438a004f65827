"""twins-deploy: Twins vision transformers from PyTorch to ONNX and TensorRT, validated.

``import twins_deploy`` loads torch but never TensorRT or CUDA libraries; those are
imported by the engine code that uses them.
"""
from __future__ import annotations

from twins_deploy.startup import quiet_interrupt_at_startup

quiet_interrupt_at_startup()  # before torch: a console script interrupted while starting says one line

from twins_deploy.errors import (  # noqa: E402
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
from twins_deploy.factory import create_model  # noqa: E402
from twins_deploy.registry import Preprocess, TwinsConfig, get_config, list_models, resolve_name  # noqa: E402
from twins_deploy.twins import Twins, count_params  # noqa: E402
from twins_deploy.weights import WeightsInfo, load_weights, randomize_  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ArtifactError", "BackendUnavailableError", "CheckpointError", "ExportError",
    "InputShapeError", "Preprocess", "Twins", "TwinsConfig", "TwinsDeployError",
    "UnknownModelError", "ValidationFailedError", "WeightsInfo", "WeightsUnavailableError",
    "count_params", "create_model", "get_config", "list_models", "load_weights",
    "randomize_", "resolve_name", "__version__",
]
