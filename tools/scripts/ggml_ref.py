"""llama.cpp's own ggml block quantiser and dequantiser, reached through the libggml-base shared library that
llama-cpp-python ships (ctypes; `pip install llama-cpp-python`, see venv.sh).

    quantize(x, qtype)    f32 rows -> raw blocks (uint8), ggml_quantize_chunk / quantize_row_q8_K_ref
    dequantize(raw, qtype) raw blocks -> f32, ggml's dequantize_row_<type>

The `gguf` package's `gguf.quants` is the primary oracle of the block math; this is the second one, and the
only one for Q8_K (the package has no Q8_K) and for quantising K-quants (the package dequantises them only).
"""

import ctypes
import os

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

_LIB = None


def lib():
    global _LIB
    if _LIB is None:
        import llama_cpp

        _LIB = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so"))
        _LIB.ggml_quantize_chunk.restype = ctypes.c_size_t
        _LIB.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                             ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        _LIB.quantize_row_q8_K_ref.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    return _LIB


def quantize(x: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    """Quantise f32 `x` ([..., n_per_row]) with llama.cpp's reference quantiser (no importance matrix)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    block, size = GGML_QUANT_SIZES[qtype]
    n_per_row = x.shape[-1]
    assert n_per_row % block == 0
    nrows = x.size // n_per_row
    out = np.zeros((*x.shape[:-1], n_per_row // block * size), dtype=np.uint8)
    if qtype == GGMLQuantizationType.Q8_K:
        lib().quantize_row_q8_K_ref(x.ctypes.data, out.ctypes.data, x.size)
    else:
        lib().ggml_quantize_chunk(int(qtype), x.ctypes.data, out.ctypes.data, 0, nrows, n_per_row, None)
    return out


def dequantize(raw: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    """Dequantise raw blocks ([..., n_bytes_per_row] uint8) with ggml's dequantize_row_<type>."""
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    block, size = GGML_QUANT_SIZES[qtype]
    n = raw.size // size * block
    out = np.zeros(n, dtype=np.float32)
    fn = getattr(lib(), f"dequantize_row_{qtype.name.lower().replace('_k', '_K')}")
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    fn(raw.ctypes.data, out.ctypes.data, n)
    return out.reshape((*raw.shape[:-1], raw.shape[-1] // size * block))
