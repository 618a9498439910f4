"""The embedded ``synthetic`` data set: coarse shape x fine texture, rendered on the fly.

Each class is a pair (shape, fine cue). The shape (disc, square, triangle, ring, cross) survives
downsampling; the fine cue (a sinusoidal grating, period log-uniform in 2.5-12 px at 64 px, vertical
or horizontal, or a checker for more than 10 classes) modulates the brightness of the shape and fades
when the image is shrunk to under ~2 px per period. Accuracy therefore falls with resolution, and a
net trained only at a high resolution meets unfamiliar (texture-less, smaller) inputs at a low one.

Colours are random and identically distributed for every class (colour is no shortcut); the grating
is grey (a luminance modulation), so one oriented filter detects it whatever the colours; position,
size, rotation, period, phase and stripe orientation (+-20 degrees) are random too. Every sample is a
pure function of ``(image_seed, split, index)``: a ``torch.Generator`` seeded from a stable hash of the
three. ``image_seed`` (``data.synthetic.image_seed``, default 0) is NOT the run's ``seed``: every run seed
trains on the same images (the seed draws the initialisation, crops and order); another image seed
draws another, disjoint set of images (a transfer target, a second data set).
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import ConfigError

SHAPES = ("disc", "square", "triangle", "ring", "cross")
FINE_CUES = ("v-stripes", "h-stripes", "checker")

_NUM_PARAMS = 20  # uniform draws per sample (see `_render`)
_NOISE_STD = 0.06



def sample_seed(seed: int, split: str, index: int) -> int:
    """Stable 63-bit seed for one sample (independent of PYTHONHASHSEED and process)."""
    digest = hashlib.blake2b(f"{seed}/{split}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def class_names(num_classes: int) -> list[str]:
    """Names ``"<shape>/<fine cue>"``; shapes vary fastest within a cue so 10 classes = 5 shapes x 2 cues."""
    num_cues = 2 if num_classes <= 2 * len(SHAPES) else 3
    if not 2 <= num_classes <= len(SHAPES) * num_cues:
        raise ConfigError(f"synthetic: num_classes must be in [2, {len(SHAPES) * len(FINE_CUES)}], got {num_classes}")
    pairs = [(s, c) for s in SHAPES for c in FINE_CUES[:num_cues]]
    return [f"{s}/{c}" for s, c in pairs[:num_classes]]


class SyntheticScaleDataset(Dataset):
    """``ds[i] -> (uint8 tensor (3, native_size, native_size), int label)``, label = i % num_classes.

    Deterministic per (image_seed, split, index). ``cache_mb``: renders are kept in memory up to this
    many MiB (per process; 0: none) and returned again unchanged, so epochs after the first skip the
    rendering. ``classes`` lists the class names.
    """

    def __init__(
        self, num_samples: int, split: str = "train", image_seed: int = 0, native_size: int = 64,
        num_classes: int = 10, cache_mb: float = 512,
    ) -> None:
        if num_samples < 1 or native_size < 8:
            raise ConfigError(f"synthetic: need num_samples >= 1 and native_size >= 8, got {num_samples}, {native_size}")
        self.num_samples = int(num_samples)
        self.split = split
        self.image_seed = int(image_seed)
        self.native_size = int(native_size)
        self.num_classes = int(num_classes)
        self.classes = class_names(self.num_classes)
        self._cues = [name.split("/") for name in self.classes]
        centres = torch.arange(self.native_size, dtype=torch.float32) + 0.5
        self._ys, self._xs = torch.meshgrid(centres, centres, indexing="ij")  # (N, N) pixel-centre coords
        if cache_mb < 0:
            raise ConfigError(f"data.synthetic.cache_mb must be >= 0, got {cache_mb}")
        self._cache: dict[int, Tensor] = {}
        self._cache_capacity = int(cache_mb * 2**20) // (3 * self.native_size**2)  # images that fit

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        label = index % self.num_classes
        image = self._cache.get(index)
        if image is None:
            gen = torch.Generator().manual_seed(sample_seed(self.image_seed, self.split, index))
            image = self._render(*self._cues[label], gen)
            if len(self._cache) < self._cache_capacity:
                self._cache[index] = image
        return image.clone(), label

    def shape_mask(self, shape: str, u: list[float]) -> tuple[Tensor, Tensor, Tensor]:
        """The shape's (N, N) coverage in [0, 1] (1-px anti-aliased edge) and the pixel offsets
        (dx, dy) from its centre, from the image's parameter draws ``u`` (radius, centre, rotation)."""
        n = self.native_size
        radius = (0.20 + 0.14 * u[0]) * n
        cx, cy = n * (0.5 + 0.3 * (u[1] - 0.5)), n * (0.5 + 0.3 * (u[2] - 0.5))
        rot = 2 * math.pi * u[3]
        dx, dy = self._xs - cx, self._ys - cy
        pu, pv = dx * math.cos(rot) + dy * math.sin(rot), dy * math.cos(rot) - dx * math.sin(rot)
        mask = (signed_distance(shape, pu, pv, dx, dy, radius) + 0.5).clamp_(0.0, 1.0)
        return mask, dx, dy

    @staticmethod
    def draw_parameters(gen: torch.Generator) -> list[float]:
        """The image's uniform draws (geometry, texture, colours), first from ``gen``."""
        return torch.rand(_NUM_PARAMS, generator=gen).tolist()

    def _render(self, shape: str, cue: str, gen: torch.Generator) -> Tensor:
        """One image (3, N, N) uint8; all geometry in native pixels, scaled by N/64."""
        n, unit = self.native_size, self.native_size / 64.0
        u = self.draw_parameters(gen)
        mask, dx, dy = self.shape_mask(shape, u)

        period = 2.5 * (12.0 / 2.5) ** u[4] * unit  # log-uniform in [2.5, 12] px at 64
        phase = 2 * math.pi * u[5]
        jitter = math.radians(40.0 * (u[6] - 0.5))
        angle = jitter + (math.pi / 2 if cue == "h-stripes" else 0.0)  # angle of the wave vector
        k = 2 * math.pi / period
        along = self._xs * math.cos(angle) + self._ys * math.sin(angle)
        wave = torch.sin(along * k + phase)
        if cue == "checker":
            across = self._ys * math.cos(angle) - self._xs * math.sin(angle)
            wave = wave * torch.sin(across * k + 2 * math.pi * u[7]) * 1.4
        # colours: fill mean m, stripes m +- d (grey), background on the other side of m in brightness
        m = torch.tensor(u[8:11]) * 0.3 + 0.35
        d = torch.full((3,), 0.15 + 0.10 * u[14])  # luminance stripes (one oriented filter sees them)
        sign = 1.0 if u[15] < 0.5 else -1.0
        bg = (m + sign * (0.22 + 0.2 * torch.tensor(u[16:19]))).clamp_(0.0, 1.0)
        fill = m.view(3, 1, 1) + d.view(3, 1, 1) * wave
        ramp = 0.15 * (u[19] - 0.5) * (dx + dy) / n  # gentle background gradient
        image = torch.lerp(bg.view(3, 1, 1) + ramp, fill, mask)
        image = image + _NOISE_STD * torch.randn(image.shape, generator=gen)
        return image.mul_(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8)


def signed_distance(shape: str, pu: Tensor, pv: Tensor, dx: Tensor, dy: Tensor, r: float) -> Tensor:
    """Approximate signed distance in px, > 0 inside; (pu, pv) rotated and (dx, dy) plain offsets."""
    if shape == "disc":
        return r - torch.hypot(dx, dy)
    if shape == "ring":
        return 0.3 * r - (torch.hypot(dx, dy) - 0.75 * r).abs()
    if shape == "square":
        return 0.85 * r - torch.maximum(pu.abs(), pv.abs())
    if shape == "triangle":
        circum = 1.4 * r
        dists = [pu * math.cos(a) + pv * math.sin(a) for a in (math.pi / 2 + i * 2 * math.pi / 3 for i in range(3))]
        return circum / 2 - torch.maximum(torch.maximum(dists[0], dists[1]), dists[2])
    if shape == "cross":
        au, av = pu.abs(), pv.abs()
        arm_a = torch.minimum(r - au, 0.35 * r - av)
        arm_b = torch.minimum(r - av, 0.35 * r - au)
        return torch.maximum(arm_a, arm_b)
    raise ConfigError(f"unknown shape {shape!r}")
