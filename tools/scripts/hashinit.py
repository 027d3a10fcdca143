"""Deterministic pseudo-random weights that Python and Rust reproduce bit-exactly.

Used by the `marian-base-shape` fixture, whose weights are too big to commit. The formula (also in
tools/fixtures/README.md) for a tensor named N with flat (row-major) index i:

    h     = splitmix64(fnv1a64(utf8 bytes of N) ^ i)              # all u64, wrapping arithmetic
    u     = (h as u32) >> 8                                      # low 32 bits, then drop 8: 24-bit integer
    r     = (u as i32 - 8388608) as f32 * (1.0 / 8388608.0)       # exact, r in [-1, 1)
    value = offset + scale * r                                   # two f32 ops (f32 mul, then f32 add), no FMA

    fnv1a64(bytes):  h = 0xcbf29ce484222325; for b in bytes: h = (h ^ b) * 0x100000001b3
    splitmix64(x):   z = x + 0x9e3779b97f4a7c15
                     z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
                     z = (z ^ (z >> 27)) * 0x94d049bb133111eb
                     return z ^ (z >> 31)
"""

import numpy as np

MASK64 = (1 << 64) - 1


def fnv1a64(name: str) -> int:
    h = 0xCBF29CE484222325
    for b in name.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & MASK64
    return h


def splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised splitmix64 finaliser on a uint64 array (numpy uint64 arithmetic wraps modulo 2^64)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def hash_uniform(name: str, n: int) -> np.ndarray:
    """r in [-1, 1) as float32, exactly as the formula above."""
    i = np.arange(n, dtype=np.uint64)
    h = splitmix64(np.uint64(fnv1a64(name)) ^ i)
    u = (h & np.uint64(0xFFFFFFFF)) >> np.uint64(8)
    return (u.astype(np.int64) - 8388608).astype(np.float32) * np.float32(1.0 / 8388608.0)


def hash_tensor(name: str, shape, scale: float, offset: float) -> np.ndarray:
    n = int(np.prod(shape)) if len(shape) else 1
    r = hash_uniform(name, n)
    v = np.float32(offset) + (np.float32(scale) * r).astype(np.float32)
    return v.astype(np.float32).reshape(shape)


def rehash_model(model, load_cls, rule, attn_implementation="eager"):
    """Replace every tensor `model` saves (a tied head is not saved) with `hash_tensor(name, shape, *rule(name,
    shape))`, reload it through `load_cls.from_pretrained` (f32, `attn_implementation`: eager unless None, which
    keeps transformers' default) and check each tensor arrived.
    Returns the reloaded model, in eval mode, and the table of what was hashed (the fixture's `hash_init`)."""
    import os
    import tempfile

    import torch
    from safetensors.torch import load_file, save_file

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        saved = load_file(os.path.join(tmp, "model.safetensors"))
        table, state = [], {}
        for tname in sorted(saved):
            shape = list(saved[tname].shape)
            scale, offset = rule(tname, shape)
            v = hash_tensor(tname, shape, scale, offset)
            state[tname] = torch.from_numpy(v)
            table.append({"name": tname, "shape": shape, "scale": scale, "offset": offset,
                          "first": [float(x) for x in v.reshape(-1)[:4]],
                          "sum_f64": float(v.astype(np.float64).sum())})
        save_file(state, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        attn = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
        model = load_cls.from_pretrained(tmp, dtype=torch.float32, **attn)
        model.eval()
        sd = model.state_dict()
        for tname, t in state.items():
            assert torch.equal(sd[tname], t), tname
    return model, table


def _self_test():
    # Test vectors repeated in tools/fixtures/README.md.
    v = hash_uniform("x", 4)
    assert v.dtype == np.float32
    return v


if __name__ == "__main__":
    print(fnv1a64("x"), _self_test())
