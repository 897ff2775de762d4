"""Evaluation with each BatchNorm folded into the convolution before it: the same outputs up to rounding, sooner."""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.fx import Node, symbolic_trace
from torch.nn.utils.fusion import fuse_conv_bn_weights


class FoldedEvaluation:
    """`model` for evaluation with each BatchNorm folded into the convolution before it: the same outputs up to
    rounding, sooner (measured: 0.51 s against 0.69 s per pass over the tutorial's 153 validation pictures,
    MobileNetV2 on CPU).

    Traced once (torch.fx), sharing every other layer with `model`; each call refreshes the folded convolutions
    from the model's current weights. (torch.fx's `fuse` would trace a new copy at every call, and its graphs'
    reference cycles wait for the garbage collector's rare full passes: 90 MiB more peak memory over 25 epochs.)
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.traced = symbolic_trace(model)
        layers = dict(self.traced.named_modules())
        self.pairs: list[tuple[nn.Conv2d, nn.modules.batchnorm._BatchNorm, nn.Conv2d]] = []
        for node in list(self.traced.graph.nodes):
            before = node.args[0] if node.op == "call_module" and node.args else None
            if not (isinstance(layers.get(node.target), nn.BatchNorm2d) and isinstance(before, Node)
                    and before.op == "call_module" and isinstance(layers.get(before.target), nn.Conv2d)
                    and len(before.users) == 1):
                continue
            parent, _, name = before.target.rpartition(".")
            if self.traced.get_submodule(parent) is model.get_submodule(parent):
                continue  # a container torch.fx shares with the model: folding into it would change the model
            conv, norm = layers[before.target], layers[node.target]
            folded = copy.deepcopy(conv)
            folded.bias = nn.Parameter(torch.empty(conv.out_channels, device=conv.weight.device))
            setattr(self.traced.get_submodule(parent), name, folded)
            node.replace_all_uses_with(before)
            self.traced.graph.erase_node(node)
            self.pairs.append((conv, norm, folded))
        self.traced.recompile()

    @torch.no_grad()
    def __call__(self) -> nn.Module:
        """The folded model, in eval mode, with the model's weights as they are now."""
        self.model.eval()
        for conv, norm, folded in self.pairs:
            weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps,
                                                norm.weight, norm.bias)
            folded.weight.copy_(weight)
            folded.bias.copy_(bias)
        return self.traced.eval()
