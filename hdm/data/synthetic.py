"""Generated products with ground-truth defects, for demos, tests and the camera simulator.

A product is a plate of one material (brushed metal, woven fabric or wood) with four
mounting holes, lying on a dark conveyor belt. Each sample varies the plate's position
and rotation, the part of the material it was cut from, the lighting and the sensor
noise. A defect is one of:

    scratch   a thin curved line, brighter or darker than the surface, tapered at the ends
    hole      a dark round pit with a bright rim
    stain     a soft blotch of another colour (rust, oil, water mark)
    missing   a chipped edge or a cut-out, showing the belt beneath

The mask of a defective sample is exactly the set of pixels that differ from the same
sample rendered without the defect. Everything follows from the generator's seed
(the product) and the sample's random generator (the sample). A 128 px sample takes
a few milliseconds, all numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

DEFECT_TYPES = ("scratch", "hole", "stain", "missing")
MATERIALS = ("metal", "fabric", "wood")

_HALF_SIDE = 0.40  # plate half-width, in image widths
_CORNER = 0.07
_SCREW_OFFSET = 0.31  # mounting holes at (+-0.31, +-0.31)
_SCREWS = np.array([(-1, -1), (-1, 1), (1, -1), (1, 1)], dtype=np.float32) * _SCREW_OFFSET
_SCREW_RADIUS = 0.03
_BANK_EXTENT = 1.5  # the texture bank covers 1.5 x 1.5 image widths and wraps around
_NOISE_SIGMA = 3.0 / 255
# A defect changes a pixel by at least this much (in one channel) or not at all, so the
# mask never contains invisible changes and the image never holds unmasked ones.
_MIN_CHANGE = 4.0 / 255
_BASE_COLOURS = {
    "metal": np.array([0.60, 0.62, 0.64], dtype=np.float32),
    "fabric": np.array([0.36, 0.42, 0.55], dtype=np.float32),
    "wood": np.array([0.62, 0.45, 0.28], dtype=np.float32),
}
_STAIN_COLOURS = np.array([(0.55, 0.30, 0.14), (0.18, 0.17, 0.22), (0.85, 0.84, 0.80)], dtype=np.float32)
_BELT_COLOUR = np.array([0.13, 0.14, 0.16], dtype=np.float32)


@dataclass(frozen=True)
class Rendered:
    """One sample: the image, its defect mask, the defect type ('good' for none) and the image without the defect."""

    image: np.ndarray
    mask: np.ndarray
    defect: str
    clean: np.ndarray


@dataclass(frozen=True)
class _Scene:
    """Float layers of one sample before noise: the lit plate surface, its coverage, the belt."""

    plate: np.ndarray  # (H, W, 3)
    coverage: np.ndarray  # (H, W) in [0, 1]
    belt: np.ndarray  # (H, W, 3)
    u: np.ndarray  # plate coordinates of each pixel, in image widths
    v: np.ndarray

    def composite(self) -> np.ndarray:
        c = self.coverage[..., None]
        return c * self.plate + (1.0 - c) * self.belt


class ProductGenerator:
    """Renders normal and defective samples of one product (fixed by `seed` and `material`)."""

    def __init__(self, size: int, seed: int = 0, material: str = "metal"):
        if size < 16:
            raise ValueError(f"size must be at least 16 pixels, got {size}")
        if material not in MATERIALS:
            raise ValueError(f"material must be one of {', '.join(MATERIALS)}, got {material!r}")
        self.size = size
        self.material = material
        rng = np.random.default_rng([seed, 7919])
        self._bank = _texture_bank(rng, 2 * size, size, material)
        self._colour = _BASE_COLOURS[material] * rng.uniform(0.92, 1.08, 3).astype(np.float32)
        centres = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
        self._y, self._x = np.meshgrid(centres, centres, indexing="ij")
        bank_scale = self._bank.shape[1] / _BANK_EXTENT
        self._belt_rows = ((self._y + 0.5) * bank_scale).astype(np.intp)
        self._belt_cols = ((self._x + 0.5) * bank_scale).astype(np.intp)

    def normal(self, rng: np.random.Generator) -> np.ndarray:
        """A defect-free sample, uint8 (S, S, 3)."""
        return self.render(rng, None).image

    def defective(self, rng: np.random.Generator, defect: str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
        """(image uint8 (S, S, 3), mask float32 (S, S) in {0, 1}, defect type); a random type when None."""
        sample = self.render(rng, defect or DEFECT_TYPES[int(rng.integers(len(DEFECT_TYPES)))])
        return sample.image, sample.mask, sample.defect

    def render(self, rng: np.random.Generator, defect: str | None) -> Rendered:
        """A sample with the given defect (None for a normal one), with its defect-free twin.

        The scene and the sensor noise are drawn before the defect, so `render(rng, d).clean`
        equals `render(copy of rng, None).image`.
        """
        if defect is not None and defect not in DEFECT_TYPES:
            raise ValueError(f"defect must be one of {', '.join(DEFECT_TYPES)}, got {defect!r}")
        scene = self._scene(rng)
        noise = rng.normal(0.0, _NOISE_SIGMA, (self.size, self.size, 3)).astype(np.float32)
        clean = scene.composite()
        clean_u8 = _quantise(clean + noise)
        if defect is None:
            return Rendered(clean_u8, np.zeros((self.size, self.size), np.float32), "good", clean_u8)
        damaged = _DEFECTS[defect](self, scene, rng).composite().astype(np.float32)  # same rounding as clean
        changed = np.abs(damaged - clean).max(axis=2) >= _MIN_CHANGE
        image = _quantise(np.where(changed[..., None], damaged, clean) + noise)
        mask = (image != clean_u8).any(axis=2)
        return Rendered(image, mask.astype(np.float32), defect, clean_u8)

    # -- the defect-free scene --

    def _scene(self, rng: np.random.Generator) -> _Scene:
        s = self.size
        angle = np.deg2rad(rng.uniform(-4, 4))
        shift = rng.uniform(-0.03, 0.03, 2)
        cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        x, y = self._x - np.float32(shift[0]), self._y - np.float32(shift[1])
        u, v = cos * x + sin * y, -sin * x + cos * y
        inside = _rounded_square_distance(u, v) * s
        coverage = np.clip(0.5 - inside, 0.0, 1.0)

        offset = rng.uniform(0, _BANK_EXTENT, 2)
        scale = self._bank.shape[1] / _BANK_EXTENT
        coords = np.stack([(v + offset[1]) * scale, (u + offset[0]) * scale])
        fine, coarse = (ndimage.map_coordinates(b, coords, order=1, mode="grid-wrap") for b in self._bank)
        plate = self._colour * _surface(self.material, u, v, fine, coarse)[..., None]

        gain = rng.uniform(0.92, 1.08)
        gradient = rng.normal(0, 0.08, 2)
        light = gain * (1.0 + gradient[0] * self._x + gradient[1] * self._y - 0.35 * (self._x**2 + self._y**2))
        if self.material == "metal":  # the anisotropic highlight of brushed metal, across the brushing
            light = light + 0.18 * np.exp(-(((v - rng.uniform(-0.15, 0.15)) / 0.12) ** 2))
        bevel = 0.12 * np.exp(np.minimum(inside, 0.0) / 1.2)
        plate = plate * light[..., None] + bevel[..., None]
        plate = self._screw_holes(plate, u, v)

        belt_shift = int(rng.integers(self._bank.shape[1]))  # the belt moves along x only
        belt_grain = self._bank[1][self._belt_rows, (self._belt_cols + belt_shift) % self._bank.shape[1]]
        shadow = 1.0 - 0.5 * np.exp(-np.maximum(inside, 0.0) / (0.02 * s))
        belt = _BELT_COLOUR * ((1.0 + 0.15 * belt_grain) * shadow * gain)[..., None]
        return _Scene(plate.astype(np.float32), coverage.astype(np.float32), belt.astype(np.float32), u, v)

    def _screw_holes(self, plate: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        s = self.size
        d = np.hypot(np.abs(u) - _SCREW_OFFSET, np.abs(v) - _SCREW_OFFSET)  # to the hole of this quadrant
        hole = np.clip((_SCREW_RADIUS - d) * s + 0.5, 0.0, 1.0)
        rim = np.clip(1.0 - np.abs(d - _SCREW_RADIUS - 0.6 / s) * s / 1.2, 0.0, 1.0)
        plate = plate + 0.15 * rim[..., None]
        return plate * (1.0 - hole[..., None]) + 0.06 * hole[..., None]

    # -- defects: each returns a changed copy of the scene --

    def _defect_centre(self, rng: np.random.Generator, margin: float) -> np.ndarray:
        """A point on the plate at least `margin` inside its edge and away from the screw holes."""
        limit = _HALF_SIDE - margin
        while True:
            c = rng.uniform(-limit, limit, 2).astype(np.float32)
            if np.min(np.hypot(*(_SCREWS - c).T)) > _SCREW_RADIUS + margin:
                return c

    def _scratch(self, scene: _Scene, rng: np.random.Generator) -> _Scene:
        s = self.size
        start = self._defect_centre(rng, 0.05)
        length = rng.uniform(0.12, 0.4)
        direction = rng.uniform(0, 2 * np.pi)
        end = start + length * np.array([np.cos(direction), np.sin(direction)], dtype=np.float32)
        end = np.clip(end, -_HALF_SIDE + 0.03, _HALF_SIDE - 0.03)
        bend = rng.normal(0, 0.25 * length, 2).astype(np.float32)
        t = np.linspace(0, 1, 25, dtype=np.float32)[:, None]
        curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * ((start + end) / 2 + bend) + t**2 * end
        width = max(0.8, s * rng.uniform(0.004, 0.01))
        contrast = rng.choice([-1.0, 1.0]) * rng.uniform(0.12, 0.3)
        reach = (width + 2) / s
        near = _window(scene, curve.min(0) - reach, curve.max(0) + reach)
        distance, along = _distance_to_polyline(scene.u[near], scene.v[near], curve)
        alpha = np.clip(width * np.sqrt(np.sin(np.pi * along)) / 2 + 0.5 - distance * s, 0.0, 1.0)  # tapered
        plate = scene.plate.copy()
        plate[near] += (contrast * alpha)[:, None]
        return replace(scene, plate=plate)

    def _hole(self, scene: _Scene, rng: np.random.Generator) -> _Scene:
        s = self.size
        centre = self._defect_centre(rng, 0.05)
        radius = rng.uniform(0.012, 0.03)
        squash, turn = rng.uniform(0.7, 1.0), rng.uniform(0, np.pi)
        depth, rim_light = rng.uniform(0.25, 0.55), rng.uniform(0.08, 0.18)
        near = _window(scene, centre - radius - 3 / s, centre + radius + 3 / s)
        du, dv = scene.u[near] - centre[0], scene.v[near] - centre[1]
        a = (np.cos(turn) * du + np.sin(turn) * dv) / radius
        b = (-np.sin(turn) * du + np.cos(turn) * dv) / (radius * squash)
        r = np.hypot(a, b)  # 1 on the pit's edge
        pit = np.clip((1.0 - r) * radius * s + 0.5, 0.0, 1.0)
        rim = np.clip(1.0 - np.abs(r - 1.0 - 0.8 / (radius * s)) * radius * s, 0.0, 1.0) * (1.0 - pit)
        shade = depth * (1.0 + 0.3 * a)  # lit from one side
        plate = scene.plate.copy()
        plate[near] = plate[near] * (1.0 - pit * (1.0 - shade))[:, None] + (rim_light * rim)[:, None]
        return replace(scene, plate=plate)

    def _stain(self, scene: _Scene, rng: np.random.Generator) -> _Scene:
        centre = self._defect_centre(rng, 0.08)
        blob = _Blob.draw(rng, rng.uniform(0.04, 0.1), 0.15)
        opacity = rng.uniform(0.3, 0.7)
        colour = _STAIN_COLOURS[int(rng.integers(len(_STAIN_COLOURS)))]
        near = _window(scene, centre - blob.reach - 2 / self.size, centre + blob.reach + 2 / self.size)
        edge, rho = blob.edge(scene.u[near] - centre[0], scene.v[near] - centre[1])
        alpha = (opacity * np.clip((edge - rho) / (0.4 * blob.radius), 0.0, 1.0) ** 1.5)[:, None]
        plate = scene.plate.copy()
        surface = plate[near]
        brightness = surface.mean(axis=1, keepdims=True) / self._colour.mean()  # the texture shows through
        plate[near] = surface * (1.0 - alpha) + alpha * colour * brightness
        return replace(scene, plate=plate)

    def _missing(self, scene: _Scene, rng: np.random.Generator) -> _Scene:
        if rng.random() < 0.6:  # a chip out of the edge
            along, side = rng.uniform(-0.3, 0.3), int(rng.integers(4))
            centre = np.array([_HALF_SIDE, along], dtype=np.float32)
            centre = centre if side < 2 else centre[::-1].copy()
            centre = centre * (1 if side % 2 == 0 else -1)
            blob = _Blob.draw(rng, rng.uniform(0.04, 0.09), 0.2)
        else:  # a cut-out inside the plate
            centre = self._defect_centre(rng, 0.08)
            blob = _Blob.draw(rng, rng.uniform(0.025, 0.06), 0.2)
        near = _window(scene, centre - blob.reach - 2 / self.size, centre + blob.reach + 2 / self.size)
        edge, rho = blob.edge(scene.u[near] - centre[0], scene.v[near] - centre[1])
        coverage = scene.coverage.copy()
        coverage[near] *= 1.0 - np.clip((edge - rho) * self.size + 0.5, 0.0, 1.0)
        return replace(scene, coverage=coverage)


_DEFECTS = {
    "scratch": ProductGenerator._scratch,
    "hole": ProductGenerator._hole,
    "stain": ProductGenerator._stain,
    "missing": ProductGenerator._missing,
}


def write_dataset(
    root: str | Path,
    size: int = 128,
    seed: int = 0,
    n_train: int = 200,
    n_test_good: int = 40,
    n_test_defect: int = 60,
    material: str = "metal",
    progress: bool = False,
) -> Path:
    """Write a generated category in the MVTec AD layout under `root` and return `root`.

    Defect types take turns, so each appears n_test_defect / 4 times (give at least 4).
    Sample i of each split depends only on (seed, split, i). Refuses a non-empty `root`,
    so that no file of an earlier, different dataset is left among the new ones.
    """
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root}: exists and is not empty")
    if min(n_train, n_test_good, n_test_defect) < 0:
        raise ValueError("sample counts must not be negative")
    generator = ProductGenerator(size, seed, material)
    kinds = len(DEFECT_TYPES)
    # (split, kind, random stream, file number)
    jobs = [("train", "good", (seed, 0, i), i) for i in range(n_train)]
    jobs += [("test", "good", (seed, 1, i), i) for i in range(n_test_good)]
    jobs += [("test", DEFECT_TYPES[i % kinds], (seed, 2, i), i // kinds) for i in range(n_test_defect)]
    for split, kind, stream, number in tqdm(jobs, desc=f"writing {root.name}", unit="img", disable=not progress):
        sample = generator.render(np.random.default_rng(stream), None if kind == "good" else kind)
        _save(sample.image, root / split / kind / f"{number:03d}.png")
        if kind != "good":
            _save((sample.mask * 255).astype(np.uint8), root / "ground_truth" / kind / f"{number:03d}_mask.png")
    return root


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _quantise(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _texture_bank(rng: np.random.Generator, n: int, size: int, material: str) -> np.ndarray:
    """Two periodic noise fields (n x n, unit std): fine grain and coarse unevenness.

    Shaped in the Fourier domain, so they tile without seams; nothing finer than the
    image's Nyquist frequency, so sampling them does not alias.
    """
    k = np.fft.fftfreq(n, d=_BANK_EXTENT / n).astype(np.float32)  # cycles per image width
    ky, kx = np.meshgrid(k, k, indexing="ij")
    if material == "metal":  # long streaks along u
        fine = np.exp(-0.5 * ((kx / 2.0) ** 2 + (ky / (size / 5)) ** 2))
    else:  # isotropic grain
        fine = np.exp(-0.5 * (kx**2 + ky**2) / (size / 8) ** 2)
    coarse = np.exp(-0.5 * (kx**2 + ky**2) / 3.0**2)
    bank = []
    for spectrum in (fine, coarse):
        field = np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, n))) * np.sqrt(spectrum)).real
        bank.append((field - field.mean()) / field.std())
    return np.stack(bank).astype(np.float32)


def _surface(material: str, u: np.ndarray, v: np.ndarray, fine: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """Relative brightness of the material (around 1) at plate coordinates (u, v)."""
    if material == "metal":
        return 1.0 + 0.06 * fine + 0.03 * coarse
    if material == "fabric":  # plain weave: warp and weft threads alternate over and under
        pitch = 0.03
        cell = (np.floor(u / pitch) + np.floor(v / pitch)) % 2
        warp = np.cos(np.pi * u / pitch) ** 2
        weft = np.cos(np.pi * v / pitch) ** 2
        return 0.82 + 0.25 * np.where(cell == 0, weft, warp) + 0.05 * fine + 0.03 * coarse
    rings = np.sin(2 * np.pi * (v + 0.02 * coarse + 0.004 * fine) / 0.045)  # wood: distorted growth rings
    return 1.0 + 0.09 * rings + 0.04 * fine + 0.04 * coarse


def _rounded_square_distance(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (image widths) to the plate outline, negative inside."""
    qu, qv = np.abs(u) - _HALF_SIDE + _CORNER, np.abs(v) - _HALF_SIDE + _CORNER
    outside = np.hypot(np.maximum(qu, 0), np.maximum(qv, 0))
    return outside + np.minimum(np.maximum(qu, qv), 0) - _CORNER


def _distance_to_polyline(u: np.ndarray, v: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance from each pixel to the polyline, and the position (0..1) of the nearest point along it."""
    a, b = points[:-1], points[1:]
    ab = b - a
    pu, pv = u[..., None] - a[:, 0], v[..., None] - a[:, 1]
    t = np.clip((pu * ab[:, 0] + pv * ab[:, 1]) / np.maximum((ab**2).sum(1), 1e-12), 0.0, 1.0)
    d = np.hypot(pu - t * ab[:, 0], pv - t * ab[:, 1])
    nearest = np.argmin(d, axis=-1)
    along = (nearest + np.take_along_axis(t, nearest[..., None], -1)[..., 0]) / len(ab)
    return np.take_along_axis(d, nearest[..., None], -1)[..., 0], along


def _window(scene: _Scene, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The pixels whose plate coordinates lie in the box [low, high]: a defect only computes these."""
    u, v = scene.u, scene.v
    return (u >= low[0]) & (u <= high[0]) & (v >= low[1]) & (v <= high[1])


@dataclass(frozen=True)
class _Blob:
    """A roundish shape with a wavy edge: radius * (1 + sum_k a_k cos(k theta + phi_k)), k = 2..6."""

    radius: float
    amplitude: np.ndarray
    phase: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, radius: float, roughness: float) -> _Blob:
        harmonics = np.arange(2, 7)
        return cls(radius, rng.normal(0, roughness, 5) * 2 / harmonics, rng.uniform(0, 2 * np.pi, 5))

    @property
    def reach(self) -> float:
        """No part of the blob is further than this from its centre."""
        return self.radius * (1.0 + float(np.abs(self.amplitude).sum()))

    def edge(self, du: np.ndarray, dv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distance of the edge from the centre in the direction of each point, distance of the point)."""
        theta = np.arctan2(dv, du)
        waves = np.cos(theta[:, None] * np.arange(2, 7) + self.phase) @ self.amplitude
        return self.radius * (1.0 + waves), np.hypot(du, dv)
