"""Render images from label maps under imaging "domains" that shift what real scanners shift.

A model trained on the `source` domain is tested on held-out domains that each change one property:
contrast (inverted or remapped), noise, bias field, resolution, or raw intensity units.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from nnunetv2_dropgen.synthetic.names import CT_SOURCE, MR_TARGETS, SOURCE_DOMAIN, TARGET_DOMAINS

TEXTURE_SIGMA = 2.5
"""Correlation length (voxels) of the within-class texture: smooth enough to look like tissue variation."""

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class Domain:
    """The acquisition parameters of one domain; all intensities are in units before scale and offset.

    intensities: mean intensity of each class, background first (index = label value).
    noise_std: standard deviation of additive Gaussian noise.
    bias_field_strength: log-amplitude of a smooth multiplicative bias field (0 = none).
    blur_sigma: Gaussian point-spread width in voxels (0 = sharp).
    downsample: integer factor of resolution loss (downsample, then upsample back to the grid; 1 = none).
    intensity_scale, intensity_offset: raw-unit mapping applied last (image * scale + offset).
    texture_std: relative amplitude of the smooth within-class texture.
    """

    name: str
    intensities: tuple[float, ...]
    noise_std: float = 0.02
    bias_field_strength: float = 0.0
    blur_sigma: float = 0.0
    downsample: int = 1
    intensity_scale: float = 1.0
    intensity_offset: float = 0.0
    texture_std: float = 0.05

    def __post_init__(self) -> None:
        # Accept any sequence (e.g. a list read from JSON) but store a tuple, keeping the domain hashable.
        object.__setattr__(self, "intensities", tuple(float(v) for v in self.intensities))
        if not _NAME_PATTERN.match(self.name):
            raise ValueError(
                f"Domain name {self.name!r} must use only letters, digits, '_' and '-' "
                "(it becomes part of folder names)."
            )
        if len(self.intensities) < 2:
            raise ValueError(f"Domain {self.name!r} needs intensities for the background and >= 1 label.")
        if min(self.noise_std, self.bias_field_strength, self.blur_sigma, self.texture_std) < 0:
            raise ValueError(f"Domain {self.name!r}: noise, bias, blur and texture must not be negative.")
        if not isinstance(self.downsample, int) or self.downsample < 1:
            raise ValueError(f"Domain {self.name!r}: downsample must be an int >= 1, got {self.downsample!r}.")
        if self.intensity_scale == 0:
            raise ValueError(f"Domain {self.name!r}: intensity_scale must not be 0.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters (used to describe a generated dataset and to detect changed parameters)."""
        values = dataclasses.asdict(self)
        values["intensities"] = list(self.intensities)
        return values


def default_domains(num_labels: int = 3) -> dict[str, Domain]:
    """The source domain followed by the held-out targets, for label maps with `num_labels` structures."""
    if num_labels < 1:
        raise ValueError(f"num_labels must be at least 1, got {num_labels}.")
    source = tuple(round(float(v), 6) for v in (0.1, *np.linspace(0.4, 0.9, num_labels)))
    inverted = tuple(round(1.0 - v, 6) for v in source)
    # Rotate the label intensities (background kept) so the mapping is non-monotonic, unlike inversion;
    # with a single label the only non-identity permutation swaps it with the background.
    permuted = list(range(1, num_labels + 1)) if num_labels >= 2 else [0, 1]
    remapped = list(source)
    for target, origin in zip(permuted, permuted[1:] + permuted[:1], strict=True):
        remapped[target] = source[origin]
    inverted_name, noisy, bias, lowres, scaled, remapped_name = TARGET_DOMAINS
    domains = [
        Domain(SOURCE_DOMAIN, source),
        Domain(inverted_name, inverted),
        Domain(noisy, source, noise_std=0.15),
        Domain(bias, source, bias_field_strength=0.6),
        Domain(lowres, source, blur_sigma=1.0, downsample=2),
        Domain(scaled, source, intensity_scale=400.0, intensity_offset=-100.0),
        Domain(remapped_name, tuple(remapped)),
    ]
    return {domain.name: domain for domain in domains}


DEFAULT_DOMAINS: dict[str, Domain] = default_domains(3)
"""The default domains for three labels."""


def cross_modality_domains(num_labels: int = 3) -> dict[str, Domain]:
    """A CT source and MR-like targets of the same anatomy, for training on CT and testing on MR.

    ct: Hounsfield-like units (background -200, structures 100 to 600, as soft tissue to bone), the channel a
    user names CT, so nnU-Net applies CTNormalization. mr_t1, mr_t2: positive intensities on arbitrary scales
    (up to about 1200 and 600), each with its own order of the structures' brightness and a bias field, as
    two MR sequences; neither is any affine map of the CT, so only shape carries a label across.
    """
    base = default_domains(num_labels)[SOURCE_DOMAIN].intensities
    labels = list(base[1:])
    rotated = labels[1:] + labels[:1]
    reversed_ = labels[::-1]
    t1, t2 = MR_TARGETS
    domains = [
        Domain(CT_SOURCE, base, noise_std=0.02, intensity_scale=1000.0, intensity_offset=-300.0),
        Domain(t1, (0.05, *rotated), noise_std=0.03, bias_field_strength=0.4, intensity_scale=1200.0),
        Domain(t2, (0.6, *reversed_), noise_std=0.03, bias_field_strength=0.3, intensity_scale=600.0),
    ]
    return {domain.name: domain for domain in domains}


def _smooth_noise(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma)
    return field / max(float(field.std()), 1e-12)


def _bias_field(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A smooth field in [-1, 1]: three long-wavelength plane waves, like coil-sensitivity variation."""
    axes = [(np.arange(n) + 0.5) / n for n in shape]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    field = np.zeros(shape)
    for _ in range(3):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        cycles = rng.uniform(0.3, 0.8)
        phase = rng.uniform(0.0, 2.0 * np.pi)
        field += np.cos(2.0 * np.pi * cycles * (coords @ direction) + phase)
    return field / max(float(np.abs(field).max()), 1e-12)


def _resolution_loss(image: np.ndarray, factor: int) -> np.ndarray:
    """Resample to a grid `factor` times coarser and back (linear), as an upsampled low-resolution scan."""
    small = ndimage.zoom(image, 1.0 / factor, order=1, grid_mode=True, mode="nearest")
    restored = ndimage.zoom(
        small, np.array(image.shape) / np.array(small.shape), order=1, grid_mode=True, mode="nearest"
    )
    if restored.shape != image.shape:
        raise RuntimeError(f"Resampling {image.shape} by {factor} came back as {restored.shape}.")
    return restored


def render(labels: np.ndarray, domain: Domain, rng: np.random.Generator) -> np.ndarray:
    """A float32 image of `labels` as acquired in `domain`.

    Order of effects: class intensities with texture, multiplicative bias, noise, blur and resolution
    loss (so noise is smoothed too, as in an upsampled scan), then the raw-unit scale and offset.
    Every random field is drawn in the same order whatever the domain, so renders of one label map with
    equally seeded generators share texture, bias pattern and noise and differ only by the domain.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be a 3D array, got shape {labels.shape}.")
    if labels.min() < 0 or labels.max() >= len(domain.intensities):
        raise ValueError(
            f"labels hold values {int(labels.min())}..{int(labels.max())} but domain {domain.name!r} "
            f"defines intensities for 0..{len(domain.intensities) - 1}."
        )
    shape = labels.shape
    texture = _smooth_noise(shape, TEXTURE_SIGMA, rng)
    bias = _bias_field(shape, rng)
    noise = rng.standard_normal(shape)

    image = np.asarray(domain.intensities, dtype=np.float64)[labels] * (1.0 + domain.texture_std * texture)
    image *= np.exp(domain.bias_field_strength * bias)
    image += domain.noise_std * noise
    if domain.blur_sigma > 0:
        image = ndimage.gaussian_filter(image, sigma=domain.blur_sigma)
    if domain.downsample > 1:
        image = _resolution_loss(image, domain.downsample)
    return (image * domain.intensity_scale + domain.intensity_offset).astype(np.float32)
