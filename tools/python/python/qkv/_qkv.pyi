"""Type stubs of the native module qkv._qkv (tools/python/src/lib.rs)."""

import os
import pathlib
from typing import Iterator, Literal, Optional, Sequence, TypedDict, Union

from typing_extensions import Unpack

import numpy

__version__: str

ErrorKind = Literal[
    "null_pointer", "invalid_utf8", "invalid_argument", "load", "isa", "memory", "engine", "panic"
]
StopReason = Literal["eos", "stop_string", "max_tokens", "length", "cancelled"]
Text = Union[str, bytes]

ERROR_KINDS: list[str]
STOP_REASONS: list[str]

class GenerateOptions(TypedDict, total=False):
    """Keyword options of Model.generate and Model.stream; a missing one (or None) has the default shown."""

    max_new_tokens: Optional[int]  # 128: most tokens generated, EOS included
    temperature: Optional[float]  # 0.0: greedy; > 0 samples with the filters and the seed
    top_k: Optional[int]  # 0 = off
    top_p: Optional[float]  # 1.0 = off; in (0, 1]
    min_p: Optional[float]  # 0.0 = off; in [0, 1]
    seed: Optional[int]  # 0
    repetition_penalty: Optional[float]  # 1.0 = off; > 0
    stop: Optional[Sequence[str]]  # stop strings (not returned)
    chat: Optional[bool]  # False: wrap the prompt in the model's chat template when True

class TranslateOptions(TypedDict, total=False):
    """Keyword options of Model.translate; missing (or None): the model's default."""

    beam_size: Optional[int]  # 1 = greedy
    max_length: Optional[int]  # most tokens per sentence, EOS included
    min_length: Optional[int]
    length_penalty: Optional[float]
    batch_size: Optional[int]  # 32: sentences encoded and decoded together

class QkvError(Exception):
    """An error of qkv: str(e) is the engine's message (naming the file, tensor or option)."""

    kind: ErrorKind

class Timings:
    """Where the time of a generation went, in seconds."""

    @property
    def prompt_tokens(self) -> int: ...
    @property
    def generated_tokens(self) -> int: ...
    @property
    def prefill_s(self) -> float: ...
    @property
    def ttft_s(self) -> float: ...
    @property
    def decode_s(self) -> float: ...
    @property
    def total_s(self) -> float: ...

class Generation:
    """A finished generation."""

    @property
    def text(self) -> str:
        """The generated text (no prompt, no stop string, no special tokens)."""
    @property
    def tokens(self) -> list[int]:
        """The generated ids (EOS included when it ended the generation)."""
    @property
    def stop_reason(self) -> StopReason: ...
    @property
    def timings(self) -> Timings: ...

class TokenEvent:
    """One generated token and the text it completes (often empty: held back until complete)."""

    @property
    def id(self) -> int: ...
    @property
    def text(self) -> str: ...

class Stream(Iterator[TokenEvent]):
    """A streamed generation; leaving the loop early (or close()) ends it as "cancelled"."""

    def __iter__(self) -> "Stream": ...
    def __next__(self) -> TokenEvent: ...
    def close(self) -> None: ...
    @property
    def tokens(self) -> list[int]:
        """The ids generated so far."""
    @property
    def stop_reason(self) -> Optional[StopReason]:
        """Why it ended; None while it runs."""
    def result(self) -> Optional[Generation]:
        """The whole generation once the stream has ended (None while it runs)."""

class Translation:
    @property
    def text(self) -> str: ...
    @property
    def tokens(self) -> list[int]:
        """The target ids (EOS included when emitted)."""
    @property
    def score(self) -> float:
        """Length-normalised log-probability."""

class Attention:
    """Self-attention probabilities over a prompt (Model.attention)."""

    @property
    def tokens(self) -> list[str]: ...
    @property
    def ids(self) -> list[int]: ...
    @property
    def weights(self) -> numpy.ndarray:
        """float32 [layers, heads, query, key]: each row sums to 1, future keys are exactly 0."""

class TranslationAttention:
    """A translation and its attention probabilities (Model.translation_attention)."""

    @property
    def translation(self) -> Translation: ...
    @property
    def source_tokens(self) -> list[str]: ...
    @property
    def target_tokens(self) -> list[str]:
        """The generated tokens the rows stand for (EOS not included)."""
    @property
    def encoder(self) -> numpy.ndarray:
        """float32 [layers, heads, source, source]."""
    @property
    def decoder(self) -> numpy.ndarray:
        """float32 [layers, heads, target, target]."""
    @property
    def cross(self) -> numpy.ndarray:
        """float32 [layers, heads, target, source]."""

class Model:
    """A loaded model: Llama or GPT-2 generate, Marian or CTranslate2 Transformer translate.

    Thread-safe: share one Model between threads; each call releases the GIL while it computes.
    """

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]"],
        *,
        threads: Optional[int] = None,
        weights: Literal["stored", "int8"] = "stored",
        isa: Optional[Literal["scalar", "avx2", "avx512", "neon"]] = None,
        max_cache_bytes: Optional[int] = None,
    ) -> None:
        """Load a model directory. threads: a pool of this model's own (None: one per core, shared);
        weights="int8" quantizes the linear layers at load; isa forces an instruction set."""
    @property
    def path(self) -> pathlib.Path: ...
    @property
    def threads(self) -> Optional[int]: ...
    def generate(self, prompt: Text, **options: Unpack[GenerateOptions]) -> Generation:
        """Generate after prompt (str, or UTF-8 bytes); see GenerateOptions."""
    def stream(self, prompt: Text, **options: Unpack[GenerateOptions]) -> Stream:
        """As generate, one TokenEvent at a time."""
    def translate(self, texts: Sequence[Text], **options: Unpack[TranslateOptions]) -> list[Translation]:
        """Translate sentences in batches, in input order; see TranslateOptions."""
    def attention(self, prompt: Optional[Text] = None, *, ids: Optional[Sequence[int]] = None) -> Attention:
        """Self-attention probabilities of a decoder-only model over prompt, or over token ids (needs numpy)."""
    def translation_attention(
        self, texts: Sequence[str], **options: Unpack[TranslateOptions]
    ) -> list[TranslationAttention]:
        """Translate and record each translation's encoder, decoder and cross-attention (needs numpy)."""
