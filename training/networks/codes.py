"""Binary codes of the S^f_B student: the one packing used everywhere (export, Milvus, similarity kernels).

A ±1 code vector of D dimensions is stored as D/8 bytes: bit = 1 where the code is +1, packed most
significant bit first (numpy `packbits(..., bitorder="big")`): dimension d lives in byte d // 8 at bit
7 - d % 8.  512 dimensions per region -> 64 bytes; a frame of 9 regions -> 576 bytes.
"""

from __future__ import annotations

import numpy as np

BITORDER = "big"


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """[..., D] float (±1, or sign of any real) -> [..., D/8] uint8.  Zero (padding) packs as -1 (bit 0)."""
    codes = np.asarray(codes)
    if codes.shape[-1] % 8:
        raise ValueError(f"code dimension {codes.shape[-1]} is not a multiple of 8")
    return np.packbits(codes > 0, axis=-1, bitorder=BITORDER)


def unpack_codes(packed: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """[..., B] uint8 -> [..., 8B] ±1 values of `dtype`."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise TypeError(f"packed codes must be uint8, got {packed.dtype}")
    bits = np.unpackbits(packed, axis=-1, bitorder=BITORDER)
    return (bits.astype(dtype) * 2 - 1).astype(dtype)
