"""``create_model``: the one way to get a ready-to-run Twins model."""
from __future__ import annotations

import os

from twins_deploy.errors import OptionError, quoted
from twins_deploy.registry import get_config
from twins_deploy.twins import Twins
from twins_deploy.weights import load_pretrained, load_weights, random_info, randomize_, read_checkpoint


def create_model(
    name: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool = False,
    num_classes: int = 1000,
    features: bool = False,
    reset_head: bool = False,
    seed: int = 0,
    attn_impl: str = "sdpa",
) -> Twins:
    """Build a Twins variant in eval mode.

    Args:
        name: ``pcpvt_s|b|l``, ``svt_s|b|l`` or a timm name such as ``twins_svt_small``.
        weights: a local checkpoint (.safetensors/.pth/.pt/.bin), or a ``timm/...`` hub id.
        pretrained: fetch timm's published ImageNet weights (needs the network).
        num_classes: classifier size; a checkpoint with another size is refused unless
            ``reset_head`` is set, which keeps the body and re-initialises the head.
        features: backbone mode, returning the four NCHW stage maps.
        seed: seed of the random init used when no weights are given (labelled as such
            in ``model.weights_info``).
        attn_impl: ``"sdpa"`` for PyTorch speed or ``"explicit"`` for export.
    """
    cfg = get_config(name)
    for what, value in (("num_classes", num_classes), ("seed", seed)):  # as the CLI refuses them
        if type(value) is not int or value < 0:
            raise OptionError(f"{what} must be a whole number >= 0 (num_classes 0: no classifier), got {quoted(value)}")
    from_hub = weights is not None and str(weights).startswith("timm/")
    state_dict = read_checkpoint(weights) if weights is not None and not from_hub else None  # a bad file fails first
    model = Twins(cfg, num_classes=num_classes, features=features)
    randomize_(model, seed)
    model.weights_info = random_info(seed)
    if from_hub:
        load_pretrained(model, str(weights), reset_head=reset_head)
    elif weights is not None:
        load_weights(model, weights, reset_head=reset_head, state_dict=state_dict)
    elif pretrained:
        load_pretrained(model, reset_head=reset_head)
    model.set_attention_impl(attn_impl)
    return model.eval()
