from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.decoder import attention_blocks, dilate


@pytest.mark.parametrize("radius", [1, 2, 4, 8])
def test_separable_dilation_equals_square_max_pool(radius):
    logits = torch.randn(2, 7, 41, 37)
    assert torch.equal(dilate(logits, radius), F.max_pool2d(logits, 2 * radius + 1, stride=1, padding=radius))


def test_fully_blocked_queries_are_unblocked_and_padding_blocks():
    logits = torch.full((1, 2, 8, 8), -5.0)  # query 0 nowhere above 0.5: would be blocked everywhere
    logits[0, 1, :2, :2] = 5.0  # query 1 only in the top-left corner
    padding = torch.zeros(1, 16, dtype=torch.bool)
    padding[0, -1] = True
    (blocks,) = attention_blocks(logits, [(4, 4)], [padding])
    assert blocks.shape == (1, 1, 2, 16)
    assert not blocks[0, 0, 0, :-1].any()  # unblocked except the padded key
    assert blocks[0, 0, :, -1].all()
    assert not blocks[0, 0, 1, 5] and blocks[0, 0, 1, 10]  # dilated by 2 px, then resized


@pytest.mark.parametrize(
    ("size", "level"),
    [
        ((160, 160), (20, 20)),
        ((160, 160), (40, 40)),
        ((160, 160), (80, 80)),
        ((160, 160), (160, 160)),
        ((56, 48), (7, 6)),
        ((48, 56), (6, 7)),
        ((48, 44), (6, 6)),
        ((40, 40), (10, 10)),
    ],
)
def test_level_logits_equal_dilate_then_resize(size, level):
    from model.decoder import level_logits
    from model.layers import resize_bilinear

    logits = torch.randn(2, 5, *size) * 3
    scale = round(size[0] / level[0])
    expected = resize_bilinear(dilate(logits, scale), level)
    assert torch.equal(level_logits(logits, *level), expected)
