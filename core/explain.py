"""Grad-CAM: where in a picture a model looked for its answer.

For a convolutional network (and Swin and MaxViT, whose last stage is a grid too), Captum's LayerGradCam at the last
feature map outside the head: the last module whose output is (N, C, H, W) with H and W above 1, found by a forward
pass. A vision transformer has no such map: its patch tokens at the input of its last encoder block are put back on
their grid (the class token left out) and weighed by their gradients, as Grad-CAM weighs channels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam
from matplotlib import colormaps
from PIL import Image
from torch import nn
from torchvision.models import VisionTransformer

from core.images import ImageSource
from core.models import head_path
from core.predict import model_input
from core.presets import TUTORIAL_PREPROCESSING, Preprocessing


@dataclass
class HeatMap:
    heat: np.ndarray  # crop_size x crop_size, in [0, 1]: the model's evidence for `target`
    picture: Image.Image  # what the model saw: the validation crop of the input
    target: int  # the class index explained
    layer: str = ""  # where the map was taken

    def overlay(self, opacity: float = 0.5) -> Image.Image:
        colored = (colormaps["jet"](self.heat)[..., :3] * 255).astype(np.uint8)
        return Image.blend(self.picture, Image.fromarray(colored), opacity)


def grad_cam(model: nn.Module, source: ImageSource, target: int | None = None, device: torch.device | str = "cpu",
             preprocessing: Preprocessing = TUTORIAL_PREPROCESSING) -> HeatMap:
    """Grad-CAM of `target` (default: the predicted class) for a picture prepared with `preprocessing`."""
    batch = model_input(source, preprocessing=preprocessing).to(device).requires_grad_(True)
    was_training = model.training
    model.eval()
    try:
        name, layer = cam_layer(model, batch)
        if target is None:
            with torch.no_grad():
                target = int(model(batch).argmax(1))
        with torch.enable_grad():
            attribution = _attribution(model, layer, batch, target, relu=True)
            if not attribution.gt(0).any():  # no evidence for the class anywhere: its magnitude, not a blank map
                attribution = _attribution(model, layer, batch, target, relu=False).abs()
                name += " (no positive evidence: magnitude shown)"
    finally:
        model.train(was_training)
    size = tuple(batch.shape[-2:])
    heat = LayerAttribution.interpolate(attribution, size, interpolate_mode="bilinear")
    heat = heat[0, 0].detach().cpu().clamp(min=0).numpy()
    heat = heat / heat.max() if heat.max() > 0 else heat
    return HeatMap(heat=heat, picture=_unnormalize(batch[0].detach().cpu(), preprocessing), target=target, layer=name)


def cam_layer(model: nn.Module, batch: torch.Tensor) -> tuple[str, nn.Module]:
    """Where Grad-CAM looks: a vision transformer's last encoder block's input norm; else the last module, outside
    the head, whose output is a feature map larger than 1x1, found by running `batch` through the model."""
    if isinstance(model, VisionTransformer):
        block = len(model.encoder.layers) - 1
        return f"encoder.layers.{block}.ln_1", model.encoder.layers[block].ln_1
    head = head_path(model).rpartition(".")[0] or head_path(model)
    seen: list[str] = []
    hooks = [module.register_forward_hook(
        lambda _module, _inputs, output, name=name: seen.append(name)
        if isinstance(output, torch.Tensor) and output.dim() == 4 and min(output.shape[-2:]) > 1 else None)
        for name, module in model.named_modules() if name and not (name == head or name.startswith(head + "."))]
    try:
        with torch.no_grad():
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return seen[-1], model.get_submodule(seen[-1])


def _attribution(model: nn.Module, layer: nn.Module, batch: torch.Tensor, target: int, relu: bool) -> torch.Tensor:
    """Grad-CAM at `layer`, (N, 1, H, W); with `relu`, negative evidence cut."""
    if isinstance(model, VisionTransformer):
        return _token_grad_cam(model, layer, batch, target, relu)
    return LayerGradCam(model, layer).attribute(batch, target=target, relu_attributions=relu)


def _token_grad_cam(model: nn.Module, layer: nn.Module, batch: torch.Tensor, target: int, relu: bool) -> torch.Tensor:
    """Grad-CAM on tokens: the patch tokens of `layer`'s output (N, 1 + side², C) as a (N, C, side, side) map,
    each channel weighed by its mean gradient; (N, 1, side, side)."""
    kept: dict[str, torch.Tensor] = {}
    hook = layer.register_forward_hook(lambda _module, _inputs, output: kept.setdefault("tokens", output))
    try:
        score = model(batch)[:, target].sum()
    finally:
        hook.remove()
    tokens = kept["tokens"]
    (gradient,) = torch.autograd.grad(score, tokens)
    side = math.isqrt(tokens.shape[1])
    grid = lambda t: t[:, -side * side:].transpose(1, 2).reshape(t.shape[0], -1, side, side)  # noqa: E731
    activation, gradient = grid(tokens), grid(gradient)
    cam = (gradient.mean((2, 3), keepdim=True) * activation).sum(1, keepdim=True)
    return torch.relu(cam) if relu else cam


def _unnormalize(tensor: torch.Tensor, preprocessing: Preprocessing) -> Image.Image:
    mean = torch.tensor(preprocessing.mean)[:, None, None]
    std = torch.tensor(preprocessing.std)[:, None, None]
    pixels = ((tensor * std + mean).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
    return Image.fromarray(pixels)
