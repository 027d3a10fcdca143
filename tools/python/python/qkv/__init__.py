"""qkv: a hand-tuned CPU inference engine for Transformer models.

>>> import qkv
>>> model = qkv.Model("models/stories260k")
>>> out = model.generate("Once upon a time", max_new_tokens=32)   # temperature 0: greedy
>>> print(out.text, out.tokens)
>>> for event in model.stream("Once upon a time", temperature=0.8, seed=7):
...     print(event.text, end="", flush=True)
>>> qkv.Model("models/opus-mt-en-de").translate(["Hello world"], beam_size=4)[0].text
>>> model.attention("Once upon a time").weights.shape   # NumPy [layers, heads, query, key]

Calls release the GIL while the engine computes: threads sharing one Model run in parallel.
Errors raise qkv.QkvError (str(e) is the engine's message; e.kind its kind).
"""

from ._qkv import (
    ERROR_KINDS,
    Attention,
    STOP_REASONS,
    Generation,
    Model,
    QkvError,
    Stream,
    Timings,
    TokenEvent,
    Translation,
    TranslationAttention,
    __version__,
)

__all__ = [
    "ERROR_KINDS",
    "Attention",
    "STOP_REASONS",
    "Generation",
    "Model",
    "QkvError",
    "Stream",
    "Timings",
    "TokenEvent",
    "Translation",
    "TranslationAttention",
    "__version__",
]
