#!/usr/bin/env python3
"""Reference fixtures for the kernels' GGUF block types (kernels::BlockType: Q8_0, Q4_0, Q4_1 and the K-quants Q4_K,
Q5_K, Q6_K), made with the `gguf` Python package (llama.cpp's own NumPy quantizer and dequantizer,
`gguf.quants.quantize` / `dequantize`) and, for what the package lacks (quantizing K-quants, Q8_K), llama.cpp's ggml
library through tools/scripts/ggml_ref.py.

    tools/scripts/venv.sh python tools/scripts/gguf_block_refs.py     # writes tools/fixtures/gguf-blocks/

Files (little-endian, no headers; kernels/tests/blocks.rs reads them):
- `input.f32`: N_QUANT blocks of 32 f32 values to quantize (random normals at several scales, plus edge blocks: zeros,
  one value, ties at the rounding boundaries, constant blocks, negative maxima, tiny and huge values);
- `<type>.quant`: the package's `quantize(input, type)` bytes;
- `<type>.quant.f32`: `dequantize` of those bytes;
- `<type>.raw`: N_RAW random blocks (random bytes, the f16 scales drawn among finite values, with subnormals, zeros and
  negatives), and `<type>.raw.f32`: their `dequantize`.
K-quants (256-value super-blocks, their own seed so the files above stay as they were):
- `input_k.f32`: N_QUANT_K super-blocks of 256 f32 values (normals at several scales, zeros, one value, a constant
  block, sub-blocks of very different scales, all negative);
- `<q4_k|q5_k|q6_k>.quant`: llama.cpp's `quantize_row_<type>_ref` of them (ggml_quantize_chunk, no importance
  matrix), `.quant.f32` the package's `dequantize` of those; `.raw` / `.raw.f32` as above (N_RAW_K super-blocks);
- `q8_k.quant`: ggml's `quantize_row_q8_K_ref` of `input_k.f32` (the activations of K-quant products: f32 `d`,
  256 int8, 16 i16 sums), `q8_k.quant.f32` ggml's `dequantize_row_q8_K` of it.
Deterministic (fixed seeds). Sizes: about 90 kB in all.
"""

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tools" / "fixtures" / "gguf-blocks"
TYPES = {"q8_0": T.Q8_0, "q4_0": T.Q4_0, "q4_1": T.Q4_1}
N_RAW = 48
K_TYPES = {"q4_k": T.Q4_K, "q5_k": T.Q5_K, "q6_k": T.Q6_K}
N_RAW_K = 6


def quant_inputs(rng):
    blocks = []
    for scale in [1e-3, 0.02, 1.0, 30.0]:
        blocks += list(rng.standard_normal((8, 32)) * scale)
    blocks.append(np.zeros(32))
    one = np.zeros(32)
    one[7] = -0.75
    blocks.append(one)
    blocks.append(np.full(32, 0.125))  # constant: Q4_1's d = 0
    # Ties: values on the half steps of a Q8_0 grid (max 127 -> id 1) and of a Q4_0 grid (max -8 -> d = 1).
    blocks.append(np.concatenate([[127.0], np.arange(-15.5, 15.5, 1.0)[:31]]))
    blocks.append(np.concatenate([[-8.0], np.linspace(-7.5, 7.5, 31)]))
    blocks.append(-np.abs(rng.standard_normal(32)))  # all negative: Q4_0 keeps the sign of the largest
    both = rng.standard_normal(32)
    both[3], both[20] = 2.0, -2.0  # equal magnitudes: the first one wins
    blocks.append(both)
    blocks.append(rng.standard_normal(32) * 1e-6)  # scales in f16's subnormal range
    blocks.append(rng.standard_normal(32) * 6e4)  # near f16's largest
    return np.array(blocks, dtype=np.float32)


def raw_blocks(rng, qtype):
    block_size, type_size = quants.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(N_RAW, type_size), dtype=np.uint8)
    n_scales = 2 if qtype == T.Q4_1 else 1
    for k in range(n_scales):
        h = rng.standard_normal(N_RAW).astype(np.float16)
        h[:4] = np.array([0.0, -0.0, 6e-8, -3e-5], dtype=np.float16)  # zero, negative zero, subnormals
        raw[:, 2 * k : 2 * k + 2] = h.view(np.uint8).reshape(N_RAW, 2)
    if qtype == T.Q8_0:
        raw[0, 2:6] = [0x80, 0x7F, 0x81, 0x00]  # -128, 127, -127, 0
    return raw


def quant_inputs_k(rng):
    blocks = []
    for scale in [0.02, 1.0, 30.0]:
        blocks += list(rng.standard_normal((2, 256)) * scale)
    blocks.append(np.zeros(256))
    one = np.zeros(256)
    one[77] = -0.75
    blocks.append(one)
    blocks.append(np.full(256, 0.125))
    mixed = rng.standard_normal(256)
    mixed *= np.repeat(10.0 ** rng.integers(-4, 2, 16), 16)  # sub-blocks of very different scales
    blocks.append(mixed)
    blocks.append(-np.abs(rng.standard_normal(256)))
    return np.array(blocks, dtype=np.float32)


def raw_blocks_k(rng, qtype):
    _, type_size = quants.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(N_RAW_K, type_size), dtype=np.uint8)
    # f16 scales: d (and dmin) at the front of Q4_K/Q5_K, d at the end of Q6_K.
    offsets = [type_size - 2] if qtype == T.Q6_K else [0, 2]
    for off in offsets:
        h = rng.standard_normal(N_RAW_K).astype(np.float16)
        h[:2] = np.array([0.0, -3e-5], dtype=np.float16)
        raw[:, off : off + 2] = h.view(np.uint8).reshape(N_RAW_K, 2)
    return raw


def main_k():
    import ggml_ref

    rng = np.random.default_rng(1816)
    x = quant_inputs_k(rng)
    (OUT / "input_k.f32").write_bytes(x.astype("<f4").tobytes())
    for name, qtype in K_TYPES.items():
        q = ggml_ref.quantize(x, qtype)
        (OUT / f"{name}.quant").write_bytes(q.tobytes())
        (OUT / f"{name}.quant.f32").write_bytes(quants.dequantize(q, qtype).astype("<f4").tobytes())
        raw = raw_blocks_k(rng, qtype)
        (OUT / f"{name}.raw").write_bytes(raw.tobytes())
        want = quants.dequantize(raw, qtype).astype("<f4")
        assert want.tobytes() == ggml_ref.dequantize(raw, qtype).astype("<f4").tobytes(), name
        (OUT / f"{name}.raw.f32").write_bytes(want.tobytes())
    q8k = ggml_ref.quantize(x, T.Q8_K)
    (OUT / "q8_k.quant").write_bytes(q8k.tobytes())
    (OUT / "q8_k.quant.f32").write_bytes(ggml_ref.dequantize(q8k, T.Q8_K).astype("<f4").tobytes())
    print(f"wrote {OUT} ({len(x)} quantized super-blocks, {N_RAW_K} raw super-blocks per K type)")


def main():
    rng = np.random.default_rng(18)
    OUT.mkdir(parents=True, exist_ok=True)
    x = quant_inputs(rng)
    (OUT / "input.f32").write_bytes(x.astype("<f4").tobytes())
    for name, qtype in TYPES.items():
        q = quants.quantize(x, qtype)
        (OUT / f"{name}.quant").write_bytes(q.tobytes())
        (OUT / f"{name}.quant.f32").write_bytes(quants.dequantize(q, qtype).astype("<f4").tobytes())
        raw = raw_blocks(rng, qtype)
        (OUT / f"{name}.raw").write_bytes(raw.tobytes())
        (OUT / f"{name}.raw.f32").write_bytes(quants.dequantize(raw, qtype).astype("<f4").tobytes())
    print(f"wrote {OUT} ({len(x)} quantized blocks, {N_RAW} raw blocks per type)")
    main_k()


if __name__ == "__main__":
    main()
