"""The benchmark's FLOP count covers attention and the mask NMS's int8 products on the CPU, where
FlopCounterMode alone misses them."""

import torch
import torch.nn.functional as F

from benchmarks.breakdown import flop_counter


def test_cpu_attention_is_counted_as_its_two_matrix_products():
    batch, heads, queries, keys, dim = 2, 4, 30, 50, 16
    query = torch.rand(batch, heads, queries, dim)
    key, value = torch.rand(batch, heads, keys, dim), torch.rand(batch, heads, keys, dim)
    mask = torch.rand(batch, heads, queries, keys) > 0.3
    with flop_counter() as counter:
        F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
    assert counter.get_total_flops() == 2 * (2 * batch * heads * queries * keys * dim)


def test_the_cpu_mask_nms_int8_product_is_counted_as_a_matrix_product():
    # On CUDA the mask NMS multiplies bfloat16 masks with `mm`, which FlopCounterMode counts; on the CPU it
    # takes `torch._int_mm`, which FlopCounterMode alone leaves at zero
    rows, pixels, columns = 32, 64, 48
    first = torch.randint(0, 2, (rows, pixels), dtype=torch.int8)
    second = torch.randint(0, 2, (pixels, columns), dtype=torch.int8)
    with flop_counter() as counter:
        torch._int_mm(first, second)
    assert counter.get_total_flops() == 2 * rows * pixels * columns
