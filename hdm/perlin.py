"""Perlin noise and the anomaly masks DAGM draws from it (deterministic from a numpy Generator)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def perlin_noise(size: int, res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One octave of 2-D gradient (Perlin) noise, (size, size) float32 in about [-1, 1].

    `res` is the number of noise periods along (rows, cols); any size works (the grid is
    computed on the next multiple of res and cropped).
    """
    ry, rx = res
    h = -(-size // ry) * ry
    w = -(-size // rx) * rx
    angles = rng.uniform(0, 2 * np.pi, (ry + 1, rx + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    ys = np.arange(h) * ry / h
    xs = np.arange(w) * rx / w
    yi, xi = ys.astype(int), xs.astype(int)
    fy, fx = (ys - yi)[:, None], (xs - xi)[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        g = grads[yi[:, None] + dy, xi[None, :] + dx]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    def fade(t: np.ndarray) -> np.ndarray:
        return 6 * t**5 - 15 * t**4 + 10 * t**3

    uy, ux = fade(fy), fade(fx)
    top = corner(0, 0) * (1 - ux) + corner(0, 1) * ux
    bottom = corner(1, 0) * (1 - ux) + corner(1, 1) * ux
    noise = np.sqrt(2) * (top * (1 - uy) + bottom * uy)
    return noise[:size, :size].astype(np.float32)


def fractal_noise(size: int, res: tuple[int, int], octaves: int, rng: np.random.Generator) -> np.ndarray:
    """Octaves of Perlin noise, each at twice the frequency and half the amplitude of the last."""
    total = np.zeros((size, size), dtype=np.float32)
    amplitude = 1.0
    for octave in range(octaves):
        scale = 2**octave
        total += amplitude * perlin_noise(size, (res[0] * scale, res[1] * scale), rng)
        amplitude /= 2
    return total


def perlin_mask(
    size: int,
    rng: np.random.Generator,
    scale_range: tuple[int, int] = (0, 5),
    coverage: float = 0.1,
    region: np.ndarray | None = None,
    octaves: int = 2,
    local: bool = False,
) -> np.ndarray:
    """A binary anomaly mask (size, size) float32 covering about `coverage` of `region`.

    Noise periods along each axis are 2**k for k drawn from scale_range (independently, so
    blobs can be elongated), the noise is rotated by a random angle, and the threshold is
    the quantile that gives the requested coverage inside `region` (a boolean foreground;
    the whole image when None). Pixels outside the region are never in the mask.
    `local` weights the noise by a Gaussian bump at a random place, so the mask gathers
    there as most real defects do instead of speckling the whole image.
    """
    lo, hi = scale_range
    # Periods of at least 4 px: with one period per pixel on both axes every sample falls on
    # a lattice point, where Perlin noise is 0, and the mask would come out empty.
    finest = max(1, size // 4)
    res = (min(2 ** int(rng.integers(lo, hi + 1)), finest), min(2 ** int(rng.integers(lo, hi + 1)), finest))
    noise = fractal_noise(size, res, octaves, rng)
    noise = ndimage.rotate(noise, float(rng.uniform(-90, 90)), reshape=False, order=1, mode="reflect")
    inside = np.ones((size, size), dtype=bool) if region is None else region.astype(bool)
    if not inside.any():
        inside = np.ones((size, size), dtype=bool)
    if local:
        noise = (noise - noise.min()) * _bump(size, inside, rng)
    threshold = np.quantile(noise[inside], 1.0 - coverage)
    return ((noise > threshold) & inside).astype(np.float32)


def _bump(size: int, inside: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A Gaussian bump centred on a random pixel of the region, 10-35% of the size wide."""
    ys, xs = np.nonzero(inside)
    pick = int(rng.integers(len(ys)))
    sigma = size * float(rng.uniform(0.1, 0.35))
    yy, xx = np.mgrid[:size, :size]
    return np.exp(-((yy - ys[pick]) ** 2 + (xx - xs[pick]) ** 2) / (2 * sigma**2)).astype(np.float32)
