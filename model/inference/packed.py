"""Boolean masks packed eight pixels to a byte: how post-processing holds a patch's candidates until its NMS.

With random DocSAM-Base weights every one of the 900 queries of every patch survives selection; upsampled to
their patch, the candidate masks of an A4 page (900 × 0.41 Mpx per window, 900 × 0.9 Mpx for the thumbnail)
take about 3 GB as bytes, all of them held until the patch NMS has decided which to keep. Packed they take an
eighth. The NMS's intersection counts read the pixels of many masks: they are counted over chunks of pixels
unpacked in turn (exact integer counts, whatever the chunking); only the kept masks are unpacked whole.

Packing views eight mask bytes (0 or 1) as one int64 and gathers their bits into its top byte with a single
multiplication by `_SPREAD`, which has one bit every 9 positions: byte i's bit lands on bit 63 − i, and no two
partial products share a bit, so nothing carries (torch's int64 products wrap modulo 2⁶⁴: the partial
products above bit 63 are dropped). Unpacking multiplies a byte by the same constant, which puts copies of it
9 bits apart, so that bit 7 − i of the byte lands on the top bit of byte i. The bytes are NumPy's `packbits`
of each flattened mask (on little-endian machines: x86, ARM, CUDA). Element-wise integer work on the device,
no host synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.inference.geometry import Size

_SPREAD = 0x8040201008040201 - (1 << 64)  # bits 0, 9, 18, ..., 63, as a signed int64
_LOW_BITS = 0x0101010101010101  # the lowest bit of every byte


@dataclass
class PackedMasks:
    """`(K, H, W)` boolean masks, each flattened row by row and packed into `ceil(H·W / 8)` bytes (the
    padding bits are 0)."""

    bits: torch.Tensor  # (K, B) uint8
    size: Size  # (H, W)

    @classmethod
    def empty(cls, count: int, size: Size, device: torch.device) -> PackedMasks:
        byte_count = -(-size[0] * size[1] // 8)
        return cls(torch.empty(count, byte_count, dtype=torch.uint8, device=device), size)

    @classmethod
    def of(cls, masks: torch.Tensor) -> PackedMasks:
        packed = cls.empty(masks.shape[0], (masks.shape[1], masks.shape[2]), masks.device)
        packed.put(slice(0, masks.shape[0]), masks)
        return packed

    def __len__(self) -> int:
        return self.bits.shape[0]

    def put(self, rows: slice, masks: torch.Tensor) -> None:
        """Pack the `(k, H, W)` boolean `masks` into `rows`."""
        flat = masks.reshape(masks.shape[0], self.size[0] * self.size[1]).view(torch.uint8)
        eights = _in_eights(flat, self.bits.shape[1])
        self.bits[rows] = eights.mul(_SPREAD).bitwise_right_shift_(56).bitwise_and_(0xFF)

    def unpack(self, index: slice | torch.Tensor) -> torch.Tensor:
        """The masks at `index`, `(k, H, W)` bool."""
        height, width = self.size
        flat = unpack_bits(self.bits[index])[:, : height * width]
        return flat.reshape(flat.shape[0], height, width)


def unpack_bits(bits: torch.Tensor) -> torch.Tensor:
    """`(k, B)` packed bytes → `(k, 8·B)` bool."""
    spread = bits.to(torch.int64).mul_(_SPREAD).bitwise_right_shift_(7).bitwise_and_(_LOW_BITS)
    return spread.view(torch.uint8).view(torch.bool).reshape(bits.shape[0], bits.shape[1] * 8)


def _in_eights(flat: torch.Tensor, words: int) -> torch.Tensor:
    """`(k, N)` bytes as `(k, words)` int64 of eight bytes each: a view where the bytes allow it, else a copy
    zero-padded to `8 · words` bytes."""
    if flat.shape[1] == 8 * words and flat.is_contiguous() and flat.storage_offset() % 8 == 0:
        return flat.view(torch.int64)
    padded = flat.new_zeros(flat.shape[0], 8 * words)
    padded[:, : flat.shape[1]] = flat
    return padded.view(torch.int64)
