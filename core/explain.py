"""Grad-CAM: where in a picture a model looked for its answer (Captum's LayerGradCam)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam
from matplotlib import colormaps
from PIL import Image
from torch import nn

from core.images import ImageSource
from core.models import get_backbone
from core.predict import model_input
from core.presets import EVAL_TRANSFORM


@dataclass
class HeatMap:
    heat: np.ndarray  # crop_size x crop_size, in [0, 1]: the model's evidence for `target`
    picture: Image.Image  # what the model saw: the validation crop of the input
    target: int  # the class index explained

    def overlay(self, opacity: float = 0.5) -> Image.Image:
        colored = (colormaps["jet"](self.heat)[..., :3] * 255).astype(np.uint8)
        return Image.blend(self.picture, Image.fromarray(colored), opacity)


def grad_cam(model: nn.Module, backbone_name: str, source: ImageSource, target: int | None = None,
             device: torch.device | str = "cpu") -> HeatMap:
    """Grad-CAM of `target` (default: the predicted class) at the backbone's last convolutional block."""
    layer = model.get_submodule(get_backbone(backbone_name).cam_layer)
    batch = model_input(source).to(device).requires_grad_(True)
    was_training = model.training
    model.eval()
    if target is None:
        with torch.no_grad():
            target = int(model(batch).argmax(1))
    with torch.enable_grad():
        attribution = LayerGradCam(model, layer).attribute(batch, target=target, relu_attributions=True)
    model.train(was_training)
    size = (EVAL_TRANSFORM.crop_size, EVAL_TRANSFORM.crop_size)
    heat = LayerAttribution.interpolate(attribution, size, interpolate_mode="bilinear")
    heat = heat[0, 0].detach().cpu().clamp(min=0).numpy()
    heat = heat / heat.max() if heat.max() > 0 else heat
    return HeatMap(heat=heat, picture=_unnormalize(batch[0].detach().cpu()), target=target)


def _unnormalize(tensor: torch.Tensor) -> Image.Image:
    mean, std = torch.tensor(EVAL_TRANSFORM.mean)[:, None, None], torch.tensor(EVAL_TRANSFORM.std)[:, None, None]
    pixels = ((tensor * std + mean).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
    return Image.fromarray(pixels)
