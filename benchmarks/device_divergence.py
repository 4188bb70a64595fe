"""Where the network on CUDA first departs from the same network on the CPU, for a GPU run that fails parity.

The tiny parity configuration with seeded random weights runs the parity fixture's inputs on both devices;
every module's tensor output is compared with the same module's on the CPU, call by call (the n-th call of
a module with its n-th call), in the order the modules ran on CUDA. Twice: with PyTorch's default float32
settings (cuDNN convolutions in TensorFloat-32) and under `ieee_float32`, as `--precision fp32` runs.

    python -m benchmarks.device_divergence --reference ../shared/fixtures/reference
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from safetensors.torch import load_file
from torch import nn

from docsam_cli.precision import ieee_float32
from model import DocSAM, DocSAMConfig

SHOWN = 8  # departing modules listed per setting


def module_outputs(model: nn.Module, inputs: list, names: list[str]) -> dict[tuple[str, int], torch.Tensor]:
    """{(module name, its n-th call): first tensor output, on the CPU}, in call order."""
    recorded: dict[tuple[str, int], torch.Tensor] = {}
    calls: Counter[str] = Counter()

    def hook(module, args, output, name):
        tensor = output[0] if isinstance(output, (tuple, list)) and output else output
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            recorded[name, calls[name]] = tensor.detach().float().cpu()
            calls[name] += 1

    handles = [
        module.register_forward_hook(lambda m, a, o, name=name: hook(m, a, o, name))
        for name, module in model.named_modules()
        if name
    ]
    try:
        with torch.no_grad():
            model(*inputs, names)
    finally:
        for handle in handles:
            handle.remove()
    return recorded


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reference", type=Path, default=Path("../shared/fixtures/reference"))
    parser.add_argument("--case", default="a")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="absolute difference that counts")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs CUDA")
    config = DocSAMConfig.from_json(args.reference / "tiny-config.json")
    io = load_file(str(args.reference / "tiny-io.safetensors"))
    names = json.loads((args.reference / "tiny-io.json").read_text())["cases"][args.case]["class_names"]
    inputs = [io[f"{args.case}.input.{key}"] for key in ("pixel_values", "pixel_mask", "image_bboxes")]
    inputs = [tensor.float() if tensor.is_floating_point() else tensor for tensor in inputs]
    torch.manual_seed(0)
    cpu_model = DocSAM(config).eval()
    cuda_model = copy.deepcopy(cpu_model).cuda()
    expected = module_outputs(cpu_model, inputs, names)
    for label, setting in (("PyTorch defaults", contextlib.nullcontext), ("ieee_float32", ieee_float32)):
        with setting():
            found = module_outputs(cuda_model, [tensor.cuda() for tensor in inputs], names)
        departing = []
        for (name, call), mine in found.items():
            theirs = expected.get((name, call))
            if theirs is not None and mine.shape == theirs.shape:
                difference = (mine - theirs).abs().max().item()
                if difference > args.tolerance:
                    departing.append((name, difference))
        print(
            f"{label}: {len(departing)} of {len(found)} module outputs differ by more than {args.tolerance}"
        )
        for name, difference in departing[:SHOWN]:
            print(f"  {difference:10.2e}  {name}")


if __name__ == "__main__":
    main()
