"""llama2.c formats in plain Python/NumPy, written from the format description (shared/models/stories260k/SOURCE.md):
the tokenizer of run.c (tok512.bin: encode / decode) and an independent forward pass of a legacy v0 checkpoint
(stories260K.bin) with interleaved (complex-pair) RoPE. Used by make_fixtures.py to cross-check Hugging Face.
"""

import struct
from pathlib import Path

import numpy as np


# ----------------------------------------------------------------------------------------------------------------------
# tokenizer (tok512.bin)


class Llama2cTokenizer:
    def __init__(self, path: Path, vocab_size: int):
        data = Path(path).read_bytes()
        (self.max_token_length,) = struct.unpack_from("<i", data, 0)
        off = 4
        self.pieces: list[bytes] = []
        self.scores: list[float] = []
        for _ in range(vocab_size):
            score, n = struct.unpack_from("<fi", data, off)
            off += 8
            self.pieces.append(data[off : off + n])
            off += n
            self.scores.append(score)
        assert off == len(data), f"{path}: {len(data) - off} trailing bytes"
        # run.c looks pieces up with bsearch over the sorted vocabulary: with duplicate pieces the id would be
        # ambiguous, so require none.
        assert len(set(self.pieces)) == len(self.pieces), "duplicate pieces"
        self.lookup = {p: i for i, p in enumerate(self.pieces)}

    def encode(self, text: str, bos: bool, eos: bool) -> list[int]:
        """run.c encode(): BOS, dummy-prefix " ", one piece per UTF-8 character (or its bytes + 3), then merge the
        adjacent pair whose concatenation has the highest score (strictly greater: leftmost wins ties) until none."""
        tokens = []
        if bos:
            tokens.append(1)
        raw = text.encode("utf-8")
        if raw:
            tokens.append(self.lookup[b" "])
        i = 0
        while i < len(raw):
            # one UTF-8 code point: a lead byte and up to 3 continuation bytes (run.c caps the buffer at 4 bytes)
            j = i + 1
            while j < len(raw) and (raw[j] & 0xC0) == 0x80 and j - i < 4:
                j += 1
            buf = raw[i:j]
            if buf in self.lookup:
                tokens.append(self.lookup[buf])
            else:
                tokens.extend(b + 3 for b in buf)  # byte fallback: <0x00> is id 3
            i = j
        while True:
            best_score, best_id, best_idx = -1e10, -1, -1
            for k in range(len(tokens) - 1):
                pid = self.lookup.get(self.pieces[tokens[k]] + self.pieces[tokens[k + 1]], -1)
                if pid != -1 and self.scores[pid] > best_score:
                    best_score, best_id, best_idx = self.scores[pid], pid, k
            if best_idx == -1:
                break
            tokens[best_idx : best_idx + 2] = [best_id]
        if eos:
            tokens.append(2)
        return tokens

    def decode_piece(self, prev: int, token: int) -> bytes:
        """run.c decode(): strip the leading space after BOS; <0xXX> pieces are raw bytes."""
        piece = self.pieces[token]
        if prev == 1 and piece.startswith(b" "):
            piece = piece[1:]
        if len(piece) == 6 and piece.startswith(b"<0x") and piece.endswith(b">"):
            return bytes([int(piece[3:5], 16)])
        return piece

    def decode(self, tokens: list[int], prev: int = 1) -> str:
        out = b""
        for t in tokens:
            out += self.decode_piece(prev, t)
            prev = t
        return out.decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------------------------------------------------
# checkpoint (legacy v0 .bin) and a float64 forward pass


class Llama2cModel:
    def __init__(self, path: Path):
        data = Path(path).read_bytes()
        dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len = struct.unpack_from("<7i", data, 0)
        self.shared_classifier = vocab_size > 0
        vocab_size = abs(vocab_size)
        self.dim, self.hidden_dim, self.n_layers = dim, hidden_dim, n_layers
        self.n_heads, self.n_kv_heads, self.vocab_size, self.seq_len = n_heads, n_kv_heads, vocab_size, seq_len
        head_size = dim // n_heads
        kv_dim = n_kv_heads * head_size
        floats = np.frombuffer(data, dtype="<f4", offset=28)
        pos = 0

        def take(*shape):
            nonlocal pos
            n = int(np.prod(shape))
            t = floats[pos : pos + n].reshape(shape).astype(np.float64)
            pos += n
            return t

        self.token_embedding = take(vocab_size, dim)
        self.rms_att = take(n_layers, dim)
        self.wq = take(n_layers, dim, dim)
        self.wk = take(n_layers, kv_dim, dim)
        self.wv = take(n_layers, kv_dim, dim)
        self.wo = take(n_layers, dim, dim)
        self.rms_ffn = take(n_layers, dim)
        self.w1 = take(n_layers, hidden_dim, dim)
        self.w2 = take(n_layers, dim, hidden_dim)
        self.w3 = take(n_layers, hidden_dim, dim)
        self.rms_final = take(dim)
        self.freq_cis_real = take(seq_len, head_size // 2)
        self.freq_cis_imag = take(seq_len, head_size // 2)
        self.wcls = self.token_embedding if self.shared_classifier else take(vocab_size, dim)
        assert pos == len(floats), f"{path}: {len(floats) - pos} floats left over"

    def rope_tables(self, n: int):
        """cos/sin [n, head_size/2] as run.c computes them: freq_i = 10000^(-2i/head_size), angle = pos * freq_i."""
        head_size = self.dim // self.n_heads
        i = np.arange(0, head_size, 2, dtype=np.float64)
        freq = 1.0 / np.power(10000.0, i / head_size)
        ang = np.arange(n, dtype=np.float64)[:, None] * freq[None, :]
        return np.cos(ang), np.sin(ang)

    def forward(self, tokens: list[int]) -> np.ndarray:
        """Logits [len, vocab] at every position (causal attention over the whole sequence, float64)."""
        n = len(tokens)
        dim, n_heads, n_kv = self.dim, self.n_heads, self.n_kv_heads
        hs = dim // n_heads
        kv_mul = n_heads // n_kv
        cos, sin = self.rope_tables(n)  # [n, hs/2]

        def rmsnorm(x, w):
            return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-5) * w

        def rope(x):  # x [n, heads, hs]: rotate each (even, odd) pair of a head as a complex number
            xr, xi = x[..., 0::2], x[..., 1::2]
            c, s = cos[:, None, :], sin[:, None, :]
            out = np.empty_like(x)
            out[..., 0::2] = xr * c - xi * s
            out[..., 1::2] = xr * s + xi * c
            return out

        x = self.token_embedding[tokens]  # [n, dim]
        causal = np.triu(np.full((n, n), -np.inf), k=1)
        for layer in range(self.n_layers):
            h = rmsnorm(x, self.rms_att[layer])
            q = rope((h @ self.wq[layer].T).reshape(n, n_heads, hs))  # [n, n_heads, hs]
            k = rope((h @ self.wk[layer].T).reshape(n, n_kv, hs))  # [n, n_kv, hs]
            v = (h @ self.wv[layer].T).reshape(n, n_kv, hs)  # [n, n_kv, hs]
            att_out = np.empty((n, n_heads, hs))
            for head in range(n_heads):
                kh = head // kv_mul
                scores = q[:, head] @ k[:, kh].T / np.sqrt(hs) + causal  # [n, n]
                scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
                scores /= scores.sum(axis=-1, keepdims=True)
                att_out[:, head] = scores @ v[:, kh]
            x = x + att_out.reshape(n, dim) @ self.wo[layer].T
            h = rmsnorm(x, self.rms_ffn[layer])
            a = h @ self.w1[layer].T
            g = a / (1.0 + np.exp(-a)) * (h @ self.w3[layer].T)  # silu(w1 x) * w3 x
            x = x + g @ self.w2[layer].T
        x = rmsnorm(x, self.rms_final)
        return x @ self.wcls.T
