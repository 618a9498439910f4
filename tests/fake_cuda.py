"""Fake-CUDA traces: run the GPU user's code paths on a machine without a GPU.

How the fake device is made (torch 2.14, CPU-only machine, a CUDA build or not):
``torch._subclasses.fake_tensor.FakeTensorMode(allow_non_fake_inputs=True)`` is entered, and inside it
``torch.empty(..., device="cuda")`` / ``tensor.to("cuda")`` / ``module.to("cuda")`` give
``FakeTensor`` objects whose ``.device`` is ``cuda:0``: shapes, dtypes, strides and devices are
tracked by meta kernels, no memory is touched and no CUDA driver is asked. An operation that mixes a
fake CUDA tensor with a (non-scalar) CPU tensor raises
``torch._subclasses.fake_tensor.FakeTensorDeviceMismatchError`` where a real GPU run would raise its
"Expected all tensors to be on the same device" error; 0-dim CPU tensors mix with CUDA tensors in
both (torch's CPU-scalar rule).

What makes modules and the project's code work under it (each done by :func:`fake_cuda`):

* A network is built for real on the CPU (as every command builds it) and moved with
  ``module.to("cuda")`` INSIDE the mode, which makes fake CUDA copies of its parameters and buffers
  (``allow_non_fake_inputs``: the real CPU tensors are converted on the fly). torch swaps a
  parameter's payload in place (``swap_tensors``) when the new value is a fake tensor, which fails on
  a parameter the mode has already seen; ``torch.__future__.set_overwrite_module_params_on_conversion(True)``
  is set for the duration (a new ``Parameter`` object per tensor; ``Module._parameters`` is updated,
  so every path that looks parameters up through the module sees the moved ones) and restored after.
* A module CREATED inside the mode has fake CPU parameters that ``.to("cuda")`` cannot move (the
  same swap, on a parameter the mode keeps a weak reference to); code that builds modules at run
  time therefore builds them on the target device (``nn.Conv2d(..., device=..., dtype=...)``).
* ``torch.tensor(data, device="cuda")`` initialises CUDA (``torch.cuda._lazy_init``) before the
  mode sees the call: a no-op for the duration (no other CUDA call works: there is no driver).
* ``copy.deepcopy`` of a fake tensor copies its ``__dict__``, which holds the mode: the mode used
  here (:class:`SharedFakeTensorMode`) is shared by deep copies instead (a copied mode crashed the
  process later).

Host-side work that a real run does on real tensors (data loading in the main process, reading a
checkpoint and rebuilding the network, slicing a batch's JPEG bytes) runs for real inside the trace
through :func:`real` / :func:`on_host` (torch's ``unset_fake_temporarily``); what it returns is then
moved to the fake device like a real batch. Host code left inside the mode sees fake tensors: e.g.
``.numpy()`` of a host tensor there reads no real memory (do not trace it).

What this cannot check: anything that needs values. Autograd's ``backward`` asks for a real CUDA
context, ``.item()`` / ``float(t)`` / boolean masks / ``nonzero`` have no value to give (a
data-dependent decision, e.g. the adaptive cascade's and torchvision's NMS), ``torch.cuda.*`` calls
(events, streams, memory) need a driver, and ``torch.cuda.is_available()`` stays ``False``, so code
that branches on it takes its CPU branch unless a test patches it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch._subclasses.fake_tensor import (
    FakeTensor,
    FakeTensorDeviceMismatchError,
    FakeTensorMode,
    unset_fake_temporarily,
)

from resnet_switch.data.multires import MultiResBatch
from resnet_switch.methods import build_method
from resnet_switch.models import create_model

__all__ = ["CUDA", "FakeTensorDeviceMismatchError", "fake_cuda", "real", "on_fake_cuda", "is_fake_cuda",
           "BACKBONES", "METHODS", "build", "fake_batch", "RealLoader", "cuda_autocast", "on_host", "seeing_a_gpu"]

CUDA = torch.device("cuda")
NUM_CLASSES = 10

# the smallest net of each backbone family (resolutions: two training ones, highest first)
BACKBONES: dict[str, tuple[dict, tuple[int, ...]]] = {
    "resnet20": ({"base_width": 4}, (12, 8)),  # basic blocks, 1x1 projection shortcuts
    "resnet50": ({"width_mult": 0.0625, "small_input": True}, (12, 8)),  # bottlenecks
    "preresnet20": ({"base_width": 4}, (12, 8)),
    "mobilenetv1": ({"width_mult": 0.25, "small_input": True}, (12, 8)),
    "mobilenetv2": ({"width_mult": 0.25, "small_input": True}, (12, 8)),
    "vgg16": ({"hidden": 16}, (40, 32)),  # five 2x2 max-pools: >= 32 px
}
# every training method with the fewest configurations per step that still runs each of its parts
METHODS: dict[str, dict] = {
    "individual": {},
    "parallel": {},
    "rsnet": {},
    "san": {},
    "mutualnet": {"width_range": [0.5, 1.0], "n_random": 1},
    "usnet": {"width_range": [0.5, 1.0], "n_random": 1},
    "snet": {"widths": [1.0, 0.5]},
}


class SharedFakeTensorMode(FakeTensorMode):
    """A ``FakeTensorMode`` that ``copy.deepcopy`` shares instead of copying. A fake tensor holds
    its mode in its ``__dict__``, which ``Tensor.__deepcopy__`` deep-copies: every copied module
    (``materialize``) would carry a copy of the mode, its caches and weak references, and the
    process crashes later (seen: a segmentation fault in an unrelated test)."""

    def __deepcopy__(self, memo):
        return self


@contextmanager
def fake_cuda(shape_env=None) -> Iterator[FakeTensorMode]:
    """Inside: tensors made or moved to ``cuda`` are fake CUDA tensors (see the module docstring).
    ``shape_env``: a ``ShapeEnv`` for code whose output shapes depend on values it computes."""
    previous = torch.__future__.get_overwrite_module_params_on_conversion()
    lazy_init = torch.cuda._lazy_init
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    # torch.tensor(data, device="cuda") initialises CUDA before the mode sees the call: nothing to
    # initialise for fake tensors (every other CUDA call still fails: no driver)
    torch.cuda._lazy_init = lambda: None
    try:
        with SharedFakeTensorMode(allow_non_fake_inputs=True, shape_env=shape_env) as mode:
            yield mode
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(previous)
        torch.cuda._lazy_init = lazy_init


def cuda_autocast(dtype: torch.dtype) -> torch.autocast:
    """``torch.autocast("cuda", dtype)`` as on a GPU machine: torch disables a CUDA autocast made
    while no GPU is visible (and asks the device whether it has bf16), so it is made with
    ``torch.cuda.is_available`` / ``is_bf16_supported`` answering ``True``; entered inside
    :func:`fake_cuda` it casts the fake CUDA tensors' ops as on a GPU."""
    saved = torch.cuda.is_available, torch.cuda.is_bf16_supported
    torch.cuda.is_available = torch.cuda.is_bf16_supported = lambda *args, **kwargs: True
    try:
        return torch.autocast("cuda", dtype=dtype)
    finally:
        torch.cuda.is_available, torch.cuda.is_bf16_supported = saved


real = unset_fake_temporarily  # ``with real(): ...`` runs host-side code on real tensors inside a trace


def seeing_a_gpu(fn):
    """``fn`` run with ``torch.cuda.is_available()`` answering ``True`` (a device choice such as
    the runtime's ``pick_device``); only around ``fn``: torch's own conversions to fake CUDA
    tensors ask it too, and then try the driver."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        available = torch.cuda.is_available
        torch.cuda.is_available = lambda: True
        try:
            return fn(*args, **kwargs)
        finally:
            torch.cuda.is_available = available
    return wrapper


def on_host(fn):
    """``fn`` run for real when called inside a trace (host-side code: reading a checkpoint,
    rebuilding a network on the CPU, slicing host bytes)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with real():
            return fn(*args, **kwargs)
    return wrapper


def on_fake_cuda(*modules: nn.Module) -> None:
    """Move ``modules`` to the fake CUDA device (inside :func:`fake_cuda`)."""
    for module in modules:
        module.to(CUDA)


def is_fake_cuda(t) -> bool:
    return isinstance(t, FakeTensor) and t.device.type == "cuda"


def build(method: str, backbone: str, resolutions: tuple[int, ...] | None = None, quant: dict | None = None):
    """``(method, net, resolutions)``: the tiny ``backbone`` trained by ``method`` (LQ-quantized
    with ``quant``), built for real on the CPU (``individual``: the highest resolution only)."""
    model_kwargs, default = BACKBONES[backbone]
    resolutions = tuple(resolutions or default)
    if method == "individual":
        resolutions = resolutions[:1]
    m = build_method(method, list(resolutions), **METHODS[method])
    net = create_model(backbone, method=m, num_classes=NUM_CLASSES, quant=quant, **model_kwargs)
    return m, net, resolutions


def fake_batch(resolution: int, batch: int = 2, channels: int = 3) -> MultiResBatch:
    """A normalised batch of one crop at ``resolution`` on the fake device (inside :func:`fake_cuda`)."""
    images = torch.randn(batch, channels, resolution, resolution, device=CUDA)
    return MultiResBatch(images, torch.randint(0, NUM_CLASSES, (batch,), device=CUDA))


class RealLoader:
    """A data loader whose batches are made for real (workers, transforms, collate on the host)
    while a fake trace runs around it, as the host makes them in a GPU run."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        with real():
            it = iter(self.loader)
        while True:
            with real():
                try:
                    batch = next(it)
                except StopIteration:
                    return
            yield batch

    def __getattr__(self, name):
        return getattr(self.loader, name)


def real_loaders(datamodule, *names: str) -> None:
    """Wrap the data module's loader methods ``names`` (e.g. ``val_dataloader``) in :class:`RealLoader`."""
    for name in names:
        make = getattr(datamodule, name)
        setattr(datamodule, name, lambda make=make: RealLoader(make()))
