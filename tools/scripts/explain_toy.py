"""Recompute `qkv explain --toy` with NumPy, independently of the Rust code, from the toy's definition
(engine/src/explain.rs, `Trace::toy`), and write tools/fixtures/explain-toy/reference.json, which
tools/tests/explain_cli.rs compares with `qkv explain --toy --json` number for number.

Run:  tools/scripts/venv.sh python tools/scripts/explain_toy.py

The toy: vocabulary = the sentence "Cat is sleeping on the mat" (ids 0..5), d_model 4, one layer, one head of 4
dims; w(s, i, j) = ((2 + 3i + 5j + 7s + i*j*(s+1)) mod 9) / 4 - 1; E = w(0) [6 x 4], W_q, W_k, W_v = w(1..3)
[4 x 4], W_1 = w(4) [4 x 8], W_2 = w(5) [8 x 4]; x = E + PE (sinusoidal, Vaswani et al.); scores
q k^T / sqrt(4) with a causal mask; h = LN(x + softmax(scores) v); y = LN(h + relu(h W_1) W_2); logits = y E^T
(LN: gamma 1, beta 0, no epsilon, population variance).
"""

import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "explain-toy"
WORDS = ["Cat", "is", "sleeping", "on", "the", "mat"]
D, FF = 4, 8


def w(s: int, rows: int, cols: int) -> np.ndarray:
    i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return ((2 + 3 * i + 5 * j + 7 * s + i * j * (s + 1)) % 9) / 4.0 - 1.0


def pe(n: int, d: int) -> np.ndarray:
    p = np.arange(n)[:, None]
    j = np.arange(d)[None, :]
    angle = p / np.power(10000.0, (j // 2 * 2) / d)
    return np.where(j % 2 == 0, np.sin(angle), np.cos(angle))


def ln(x: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / x.std(-1, keepdims=True)


def stats(x: np.ndarray) -> list:
    return [{"mean": float(r.mean()), "std": float(r.std()), "rms": float(np.sqrt((r * r).mean()))} for r in x]


def main() -> None:
    n = len(WORDS)
    E = w(0, n, D)
    P = pe(n, D)
    x = E + P
    q, k, v = x @ w(1, D, D), x @ w(2, D, D), x @ w(3, D, D)
    scale = 1 / np.sqrt(D)
    s = q @ k.T * scale
    mask = np.tril(np.ones((n, n), dtype=bool))
    e = np.where(mask, np.exp(s - np.where(mask, s, -np.inf).max(-1, keepdims=True)), 0.0)
    a = e / e.sum(-1, keepdims=True)
    o = a @ v
    r1 = x + o
    h = ln(r1)
    f = np.maximum(h @ w(4, D, FF), 0.0) @ w(5, FF, D)
    r2 = h + f
    y = ln(r2)
    logits = y[-1] @ E.T
    p = np.exp(logits - logits.max())
    p /= p.sum()
    top = sorted(range(n), key=lambda t: (-logits[t], t))[:5]
    ex = np.array([1.0, 3.0, 5.0])
    ref = {
        "made_by": "tools/scripts/explain_toy.py (NumPy %s)" % np.__version__,
        "tokens": WORDS,
        "ids": list(range(n)),
        "embedding": E.tolist(),
        "positions": P.tolist(),
        "q": q.tolist(),
        "k": k.tolist(),
        "v": v.tolist(),
        "scale": float(scale),
        "scores": [[float(s[i, j]) if mask[i, j] else None for j in range(n)] for i in range(n)],
        "weights": a.tolist(),
        "row_sums": a.sum(-1).tolist(),
        "weighted_sum": o.tolist(),
        "attention_norm_input": stats(r1),
        "ffn_norm_input": stats(r2),
        "ffn_output": f.tolist(),
        "top_next": [[WORDS[t], t, float(p[t])] for t in top],
        "norm_example": {"input": ex.tolist(), "mean": float(ex.mean()), "std": float(ex.std()),
                         "output": ((ex - ex.mean()) / ex.std()).tolist()},
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "reference.json").write_text(json.dumps(ref, indent=1) + "\n")
    print(f"wrote {OUT / 'reference.json'}")


if __name__ == "__main__":
    main()
