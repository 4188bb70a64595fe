"""`--precision`: what each name means for the network's arithmetic."""

from __future__ import annotations

import copy

import pytest
import torch

from docsam_cli.precision import network_autocast, precision_dtype


def test_fp32_on_cuda_is_ieee_float32_for_the_network_only():
    """No TensorFloat-32 inside (cuDNN allows it by default), the process's settings back afterwards. Only
    flags are touched: no GPU needed."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with network_autocast(torch.device("cuda"), torch.float32):
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (False, False)
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_fp32_on_the_cpu_and_bf16_leave_the_settings_alone():
    before = torch.backends.cudnn.allow_tf32
    with network_autocast(torch.device("cpu"), torch.float32):
        assert torch.backends.cudnn.allow_tf32 == before
        assert not torch.is_autocast_enabled("cpu")
    with network_autocast(torch.device("cpu"), torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        assert torch.backends.cudnn.allow_tf32 == before


def test_precision_names():
    assert precision_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        precision_dtype("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown precision"):
        precision_dtype("fp8", torch.device("cpu"))


def test_class_name_embeddings_are_cached_per_precision(tiny_model):
    """One model run in bf16, then in float32 (a library user, `benchmarks/precision_agreement.py`): the
    float32 run got the bf16 embeddings cached by the first (and the reverse order measured bf16 with float32
    text embeddings). Each precision now gets its own."""
    encoder, names = tiny_model.text_encoder, ["marginal note", "running title"]
    device = torch.device("cpu")
    with torch.no_grad():
        float32 = encoder._encode(names, device)
        with network_autocast(device, torch.bfloat16):
            bfloat16 = encoder._encode(names, device)
            assert torch.equal(encoder(names), bfloat16)
        assert not torch.equal(bfloat16, float32)
        assert torch.equal(encoder(names), float32)
        with network_autocast(device, torch.bfloat16):
            assert torch.equal(encoder(names), bfloat16)


def test_class_name_embeddings_are_cached_per_weights_dtype(tiny_model):
    """A library user's model called in float32, then converted (`model.to(torch.bfloat16)`, to halve its
    memory): its bf16 calls got the float32 embeddings cached by the first, so its results depended on
    whether it had been called before the conversion (class logits up to 2.6 apart with the tiny weights).
    Each weights dtype now gets its own."""
    encoder, names = copy.deepcopy(tiny_model.text_encoder), ["marginal note", "running title"]
    with torch.no_grad():
        encoder(names)
        encoder.to(torch.bfloat16)
        assert torch.equal(encoder(names), encoder._encode(names, torch.device("cpu")))
