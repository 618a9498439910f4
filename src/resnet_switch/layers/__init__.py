from . import (
    scale_conv,  # noqa: F401  (registers the "san" and "private_conv" layer factories)
    slimmable,  # noqa: F401  (registers the "slimmable" layer factory)
)
from .factory import LAYER_FACTORIES, build_layers, list_layer_factories, register_layer_factory
from .quant import QUANTIZERS, list_quantizers, register_quantizer

__all__ = ["LAYER_FACTORIES", "QUANTIZERS", "build_layers", "list_layer_factories", "list_quantizers",
           "register_layer_factory", "register_quantizer"]
