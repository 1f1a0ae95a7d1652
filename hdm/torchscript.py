"""TorchScript traces of HDMModel's network work, for serving on CPUs.

In eager mode every one of the model's few hundred small ops goes back to Python and
must retake the GIL, which a Serve replica's event loop and Ray threads hold for request
handling much of the time. With a second Python thread holding the GIL half of the
time, a 64 px batch of 9 took 285 ms eager instead of 118 ms; traced, 121 ms. A trace
runs the whole forward pass in TorchScript's C++ interpreter, which does not need the
GIL between ops. diffusers' UNets trace cleanly (its "Memory and speed" guide traces
the UNet); the trace keeps the batch dimension dynamic, and the image size is fixed per
model anyway.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from hdm.config import TORCHSCRIPT_CHOICES, TorchScript
from hdm.models import HDMModel


class _AnomalyMaps(nn.Module):
    def __init__(self, model: HDMModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.anomaly_maps(x)


def wants_torchscript(policy: TorchScript, device: torch.device) -> bool:
    """"auto" traces on CPUs only: on a GPU the ops are few and large, and eager keeps bf16 autocast simple."""
    if policy not in TORCHSCRIPT_CHOICES:
        raise ValueError(f"torchscript must be one of {', '.join(TORCHSCRIPT_CHOICES)}, got {policy!r}")
    return policy == "on" or (policy == "auto" and device.type == "cpu")


def trace_anomaly_maps(model: HDMModel, device: torch.device) -> torch.jit.ScriptModule:
    """A trace of `model.anomaly_maps` (eval mode) on `device`; inputs (B, 3, S, S) of any B."""
    model.eval()
    # Two images, so that no op is specialised to a batch of one.
    example = torch.zeros(2, 3, model.image_size, model.image_size, device=device)
    with warnings.catch_warnings(), torch.inference_mode():
        # diffusers asserts channel counts with Python booleans: constant for a model, as intended.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(_AnomalyMaps(model), example, check_trace=False)
