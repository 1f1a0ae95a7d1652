"""Generated products: determinism, exact masks, visible but non-trivial defects, the MVTec layout."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from hdm.data.images import load_image, load_mask
from hdm.data.mvtec import MVTecCategory, TestDataset
from hdm.data.synthetic import DEFECT_TYPES, MATERIALS, ProductGenerator, write_dataset
from hdm.metrics import image_auroc

SIZE = 64


@pytest.fixture(scope="module", params=MATERIALS)
def generator(request) -> ProductGenerator:
    return ProductGenerator(SIZE, seed=3, material=request.param)


def test_same_seeds_give_the_same_images(generator):
    twin = ProductGenerator(SIZE, seed=3, material=generator.material)
    for draw in (lambda g, rng: g.normal(rng), lambda g, rng: g.defective(rng)[0]):
        a, b = draw(generator, np.random.default_rng(5)), draw(twin, np.random.default_rng(5))
        assert a.shape == (SIZE, SIZE, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    other_product = ProductGenerator(SIZE, seed=4, material=generator.material)
    this, other = (g.normal(np.random.default_rng(5)) for g in (generator, other_product))
    assert not np.array_equal(this, other)
    rng = np.random.default_rng(5)
    assert not np.array_equal(generator.normal(rng), generator.normal(rng))  # the next sample differs


@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_mask_is_exactly_the_pixels_that_differ_from_the_defect_free_render(generator, defect):
    for i in range(6):
        rendered = generator.render(np.random.default_rng(i), defect)
        assert np.array_equal(rendered.clean, generator.normal(np.random.default_rng(i)))
        differs = (rendered.image != rendered.clean).any(axis=2)
        assert rendered.mask.dtype == np.float32 and set(np.unique(rendered.mask)) == {0.0, 1.0}
        assert np.array_equal(rendered.mask > 0, differs)
        assert ndimage.label(differs, np.ones((3, 3)))[1] == 1  # one defect, in one piece


@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_defects_are_visible(defect):
    generator = ProductGenerator(128, seed=0)
    for i in range(8):
        rendered = generator.render(np.random.default_rng(i), defect)
        change = np.abs(rendered.image.astype(int) - rendered.clean).max(axis=2)[rendered.mask > 0]
        assert change.min() >= 2  # no invisible defect pixel
        assert change.mean() >= 10  # sensor noise has a standard deviation of 3 levels
        assert 15 <= change.size <= 0.05 * 128 * 128


def test_defects_are_not_found_by_comparing_with_a_template():
    """Pose, lighting and texture vary so much between normal samples that the difference from
    the median normal image does not tell defective samples apart: a detector must learn the product."""
    generator = ProductGenerator(SIZE, seed=0)
    rng = np.random.default_rng(0)
    template = np.median(np.stack([generator.normal(rng) for _ in range(60)]), axis=0)
    normal = [generator.normal(rng) for _ in range(40)]
    defective = [generator.defective(rng)[0] for _ in range(40)]
    scores = [np.abs(image - template).max() for image in normal + defective]
    assert image_auroc([0] * 40 + [1] * 40, scores) < 0.75


def test_random_defect_types_cover_all_kinds():
    generator = ProductGenerator(32, seed=0)
    rng = np.random.default_rng(0)
    kinds = {generator.defective(rng)[2] for _ in range(30)}
    assert kinds == set(DEFECT_TYPES)


def test_missing_material_shows_the_belt():
    generator = ProductGenerator(128, seed=0)
    rendered = generator.render(np.random.default_rng(2), "missing")
    inside = rendered.mask > 0
    # the belt is dark, the plate bright: where material is gone the image turns dark
    assert rendered.image[inside].mean() < 0.5 * rendered.clean[inside].mean()


def test_bad_arguments():
    with pytest.raises(ValueError, match="material"):
        ProductGenerator(32, material="glass")
    with pytest.raises(ValueError, match="defect"):
        ProductGenerator(32).render(np.random.default_rng(0), "dent")
    with pytest.raises(ValueError, match="at least 16"):
        ProductGenerator(8)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen") / "plates"
    return write_dataset(root, size=32, seed=1, n_train=6, n_test_good=3, n_test_defect=8)


def test_write_dataset_is_an_mvtec_category(written):
    category = MVTecCategory(written)
    assert category.name == "plates" and len(category.train_paths) == 6
    assert sorted((s.defect, s.path.name) for s in category.test_samples if s.label) == sorted(
        (kind, f"{n:03d}.png") for kind in DEFECT_TYPES for n in range(2)
    )
    assert sum(1 for s in category.test_samples if not s.label) == 3
    assert {s.mask_path.name for s in category.test_samples if s.label} == {"000_mask.png", "001_mask.png"}


def test_written_files_match_the_generator(written):
    """Defect i of the test split is rendered from the stream (seed, 2, i): its file and mask must
    hold exactly that sample, and load back aligned through TestDataset."""
    generator = ProductGenerator(32, seed=1)
    expected = generator.render(np.random.default_rng((1, 2, 5)), DEFECT_TYPES[5 % 4])  # hole 001
    path = written / "test" / "hole" / "001.png"
    assert np.array_equal(load_image(path, 32), expected.image)
    assert np.array_equal(load_mask(written / "ground_truth" / "hole" / "001_mask.png", 32), expected.mask)
    samples = [s for s in MVTecCategory(written).test_samples if s.path == path]
    _, mask, label = TestDataset(samples, 32)[0]
    assert label == 1 and np.array_equal(mask[0].numpy(), expected.mask)
    first_train = generator.render(np.random.default_rng((1, 0, 0)), None).image
    assert np.array_equal(load_image(written / "train" / "good" / "000.png", 32), first_train)


def test_write_dataset_is_reproducible_and_refuses_a_used_folder(written, tmp_path):
    again = write_dataset(tmp_path / "plates", size=32, seed=1, n_train=6, n_test_good=3, n_test_defect=8)
    files = sorted(p.relative_to(written) for p in written.rglob("*.png"))
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.png")) and len(files) == 6 + 3 + 8 + 8
    assert all((written / f).read_bytes() == (again / f).read_bytes() for f in files)
    with pytest.raises(FileExistsError, match="not empty"):
        write_dataset(again, size=32)
