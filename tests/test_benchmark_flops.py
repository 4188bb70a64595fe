"""The benchmark's FLOP count covers attention on the CPU, where FlopCounterMode alone misses it."""

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
