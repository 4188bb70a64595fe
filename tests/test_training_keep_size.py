"""The keep-size training rule against its specification: start from the page's own size; multiply height
and width independently by 2^U(-0.2, 0.2) and round each; if the short side is below the range scale up to
its low end, above it scale down to its high end, else keep; round both; cap each side at twice the new
short side. Draw order: height's factor, width's factor, then the usual crop draws (no random short side)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from training_helpers import ScriptedRandom

from docsam_cli.training.annotations import Instance
from docsam_cli.training.augment import augment, keep_size_training_size
from docsam_cli.training.launch import validation_geometry
from docsam_cli.training.sample_random import SeededRandom
from docsam_cli.training.settings import AugmentSettings
from model.inference import Geometry
from model.inference.geometry import resized_size

RANGE = (640, 1280)


def jitter(*exponents: float) -> list[dict]:
    """Scripted answers of the two keep-size draws (height first)."""
    return [{"call": "random.uniform", "args": [-0.2, 0.2], "value": value} for value in exponents]


@pytest.mark.parametrize(
    ("page", "exponents", "expected"),
    [
        # Inside the range after the jitter: kept; 1000·2^0.2 = 1148.7 → 1149, 800·2^-0.2 = 696.4 → 696.
        ((1000, 800), (0.2, -0.2), (1149, 696)),
        # Short side 300 < 640: ×640/300 → (640, 1066.7 → 1067); cap 1280 not reached.
        ((300, 500), (0.0, 0.0), (640, 1067)),
        # Short side 2000 > 1280: ×0.64 → (1920, 1280).
        ((3000, 2000), (0.0, 0.0), (1920, 1280)),
        # In range but 5000 > 2·700: the long side is capped.
        ((5000, 700), (0.0, 0.0), (1400, 700)),
        # Scaled up to 640 first (×3.2 → 12800), then capped at 2·640.
        ((4000, 200), (0.0, 0.0), (1280, 640)),
        # The jitter pushes the short side out of the range: 660·2^-0.2 = 574.6 → 575 < 640, so both sides
        # are scaled by 640/575 after the jitter: 900 → 1001.7 → 1002.
        ((900, 660), (0.0, -0.2), (1002, 640)),
    ],
)
def test_sizes_follow_the_rule(page, exponents, expected) -> None:
    rng = ScriptedRandom(jitter(*exponents))
    assert keep_size_training_size(*page, RANGE, rng) == expected
    assert rng.used == 2


def test_without_jitter_it_is_the_test_time_rule() -> None:
    generator = np.random.default_rng(0)
    geometry = Geometry(short_range=RANGE, keep_size=True)
    for height, width in generator.integers(50, 5000, (200, 2)).tolist():
        size = keep_size_training_size(height, width, RANGE, ScriptedRandom(jitter(0.0, 0.0)))
        assert size == resized_size((height, width), geometry)


def test_factors_are_independent_and_span_the_range() -> None:
    """A page whose jittered sizes stay inside the range and under the cap: the result is the jitter."""
    height, width = 1000, 900
    samples = np.array(
        [keep_size_training_size(height, width, RANGE, SeededRandom(0, key)) for key in range(4000)], float
    )
    log_h, log_w = np.log2(samples[:, 0] / height), np.log2(samples[:, 1] / width)
    rounding = math.log2(1 + 0.5 / 870)  # one half pixel, relative to the smallest jittered side
    for factors in (log_h, log_w):
        assert factors.min() >= -0.2 - rounding and factors.max() <= 0.2 + rounding
        assert factors.min() < -0.19 and factors.max() > 0.19  # the whole interval is used
        assert abs(np.mean(factors < 0) - 0.5) < 0.04  # uniform in the exponent: half below 0
        assert abs(np.mean(np.abs(factors) < 0.1) - 0.5) < 0.04  # and half within ±0.1
    assert abs(np.corrcoef(log_h, log_w)[0, 1]) < 0.06  # independent factors, not one shared
    assert np.any((log_h > 0.1) & (log_w < -0.1)) and np.any((log_h < -0.1) & (log_w > 0.1))


def test_augment_draws_in_the_reference_order_and_scales_the_annotations() -> None:
    """400×600 page, range (200, 800): height ×2^0.2 → 459, width kept → 600; no crop (patch larger)."""
    settings = AugmentSettings(short_range=(200, 800), patch=(512, 640), keep_size=True)
    script = [
        *jitter(0.2, 0.0),
        {"call": "random.uniform", "args": [0, 1], "value": 0.5},  # crop, not the 20 % resize
        {"call": "random.randint", "args": [0, 0], "value": 0},  # top
        {"call": "random.randint", "args": [0, 0], "value": 0},  # left
    ]
    rng = ScriptedRandom(script)
    box = np.array([100.0, 50.0, 300.0, 150.0])
    polygon = np.array([[100.0, 50.0], [300.0, 50.0], [300.0, 150.0], [100.0, 150.0]])
    pixels, instances = augment(torch.zeros(3, 400, 600), [Instance(0, box, (polygon,), 0.0)], rng, settings)
    assert rng.used == len(script)
    assert tuple(pixels.shape) == (3, 459, 600)
    (instance,) = instances
    np.testing.assert_allclose(instance.box, [100.0, 50.0 * 459 / 400, 300.0, 150.0 * 459 / 400])


def test_default_rule_still_draws_a_short_side() -> None:
    settings = AugmentSettings(short_range=(100, 120), patch=(64, 64))
    script = [
        {"call": "random.randint", "args": [100, 120], "value": 100},
        {"call": "random.uniform", "args": [0, 1], "value": 0.1},  # the 20 % resize to the patch
    ]
    rng = ScriptedRandom(script)
    pixels, _ = augment(torch.zeros(3, 50, 80), [], rng, settings)
    assert rng.used == len(script) and tuple(pixels.shape) == (3, 64, 64)


def test_settings_and_validation_geometry() -> None:
    assert AugmentSettings().short_range == (704, 896)
    assert AugmentSettings(keep_size=True).short_range == RANGE
    assert AugmentSettings(short_range=(500, 600), keep_size=True).short_range == (500, 600)
    keep = AugmentSettings(keep_size=True, patch=(800, 800))
    assert validation_geometry(keep) == Geometry(short_range=RANGE, patch=(800, 800), keep_size=True)
    assert validation_geometry(AugmentSettings()) == Geometry(short_range=(800, 800), patch=(640, 640))
