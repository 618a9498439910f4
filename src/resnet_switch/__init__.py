"""resnet_switch: one image classifier, many input resolutions and widths.

RS-Net, SAN and MutualNet (with US-Net/S-Net) on one PyTorch Lightning + Hydra machinery.
"""

from .switch import SubnetConfig, SwitchState

__version__ = "0.1.0"
__all__ = ["SubnetConfig", "SwitchState", "__version__"]
