"""Compiled training: torch.compile of a network whose backbone trains, where it was measured to pay, with eager
PyTorch as the fallback.

"auto" compiles where compiled training was measured faster end to end, compiling included (PAYS_FROM_STEPS).
"on" compiles wherever inductor can run; "off" never compiles. Compiled artefacts are reused by later runs in the
same process (TorchDynamo's cache of the traced code) and across processes (inductor's and AOTAutograd's caches on
disk, on by default).
"""
from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from core.results import Compilation

# The devices on which "auto" compiles, each with the fewest training steps (batches times epochs) from which
# compiling was measured to pay back its cost. None yet (docs/performance.md, "Compiled training" and "GPU"):
# compiled finetuning was measured slower end to end on a 2-core CPU and on an H200 (python -m scripts.bench gpu).
PAYS_FROM_STEPS: dict[str, int] = {}
UNMEASURED = {"mps": "on MPS, compiled training has not been measured to pay yet"}
BACKEND = "inductor"

Result = TypeVar("Result")


def missing_compiler(device: torch.device) -> str | None:
    """Why inductor cannot compile for `device` on this machine, or None when it can."""
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile does not support this Python"
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton, which compiles for CUDA, is not installed"
    if device.type == "cpu":
        compilers = [os.environ.get("CXX"), "g++", "c++", "clang++", "cl"]
        return None if any(name and shutil.which(name) for name in compilers) else "no C++ compiler was found"
    return f"torch.compile is not used on {device.type}"


def plan(choice: str, *, fast: bool, train_backbone: bool, device: torch.device, steps: int) -> Compilation:
    """Whether a run compiles its training steps: `choice` is "auto", "on" or "off", `steps` the run's training
    batches over all epochs."""
    if choice == "off":
        return Compilation(False, "switched off")
    if not fast:
        return Compilation(False, "the tutorial's loop runs as written")
    if not train_backbone:
        return Compilation(False, "only the last layer trains: there is little to compile")
    if choice == "auto" and device.type not in PAYS_FROM_STEPS:
        return Compilation(False, UNMEASURED.get(device.type, f"on {device.type.upper()}, compiled training was "
                                                 "measured slower than eager, compiling included"))
    if choice == "auto" and steps < PAYS_FROM_STEPS[device.type]:
        return Compilation(False, f"{steps} training steps are too few to pay back compiling on "
                                  f"{device.type.upper()} (it pays from {PAYS_FROM_STEPS[device.type]})")
    if missing := missing_compiler(device):  # only now: it imports TorchDynamo, which takes memory and time
        return Compilation(False, missing)
    if choice == "on":
        return Compilation(True, "switched on")
    return Compilation(True, f"{steps} training steps pay back compiling on {device.type.upper()}")


class TrainingSteps:
    """Runs training steps on the compiled network, or on the eager one where compiling is off or has failed.

    A compilation that fails (at the first step, or at a later one with a new batch shape) is reported once as a
    warning; that step runs again eager, and so does every later one. A step is a function of the network that
    starts by zeroing the gradients, so it can run again from the start; it does not step the optimiser.
    """

    def __init__(self, model: nn.Module, compilation: Compilation):
        self.model, self.compilation = model, compilation
        # fallback_random: dropout draws from PyTorch's own random numbers, as in eager, so a seed gives the same masks
        options = {"fallback_random": True} if BACKEND == "inductor" else None
        self.compiled = torch.compile(model, backend=BACKEND, options=options) if compilation.used else None
        self._shapes: set[tuple[int, ...]] = set()

    def run(self, step: Callable[..., Result], inputs: torch.Tensor, *others: torch.Tensor) -> Result:
        """step(network, inputs, *others) on the compiled network, or on the eager one."""
        if self.compiled is None:
            return step(self.model, inputs, *others)
        shape = tuple(inputs.shape)
        started = time.perf_counter()
        try:
            result = step(self.compiled, inputs, *others)
        except Exception as error:  # backends and C++ compilers fail in many ways; eager then runs the same step
            self.compilation.seconds += time.perf_counter() - started
            self._fall_back(error)
            return step(self.model, inputs, *others)
        if shape not in self._shapes:
            self._shapes.add(shape)
            self.compilation.seconds += time.perf_counter() - started
        return result

    def _fall_back(self, error: Exception) -> None:
        self.compilation.failure = failure_text(error)
        self.compilation.used, self.compiled = False, None
        warnings.warn(f"Compiling the training step failed ({self.compilation.failure}); training goes on without "
                      "compiling.", RuntimeWarning, stacklevel=3)


def failure_text(error: BaseException) -> str:
    """The error and, where it wraps another (as TorchDynamo's BackendCompilerFailed does), the innermost one, each
    with its first line: "BackendCompilerFailed, RuntimeError: ..."."""
    root = error
    while (inner := getattr(root, "inner_exception", None) or root.__cause__) is not None and inner is not root:
        root = inner
    line = next((line.strip() for line in str(root).splitlines() if line.strip()), "no message")
    text = f"{type(root).__name__}: {line}"
    return (text if root is error else f"{type(error).__name__}, {text}")[:300]
