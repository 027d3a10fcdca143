"""qkv from Python: the outputs of the qkv command line, every error path, streams, threads."""

import ast
import os
import pathlib
import threading
import time

import pytest

import qkv
from conftest import MEASURED

PROMPTS = ["Once upon a time", "Lily went to the park", "The cat"]
MAX_NEW = 64


@pytest.fixture(scope="module")
def stories(stories_dir):
    return qkv.Model(stories_dir)


@pytest.fixture(scope="module")
def aren(aren_dir):
    return qkv.Model(aren_dir)


def kind_of(excinfo) -> str:
    return excinfo.value.kind


# ------------------------------------------------------------------------------------------------
# Same tokens as the command line


@pytest.mark.parametrize("prompt", PROMPTS)
def test_generate_is_the_cli_greedy(stories, stories_dir, cli, prompt):
    want = cli.generate(stories_dir, prompt, "--greedy", "--max-new-tokens", str(MAX_NEW))
    out = stories.generate(prompt, max_new_tokens=MAX_NEW)  # temperature 0: greedy
    assert out.tokens == want["tokens"]
    assert out.text == want["text"]
    assert out.stop_reason == want["stop_reason"]
    assert out.timings.generated_tokens == len(out.tokens)
    assert out.timings.prompt_tokens > 0 and out.timings.total_s > 0


def test_sampling_is_the_cli_sampling(stories, stories_dir, cli):
    args = ("--temperature", "0.8", "--top-k", "40", "--top-p", "0.9", "--seed", "7", "--max-new-tokens", "80")
    want = cli.generate(stories_dir, "Once upon a time", *args)
    out = stories.generate("Once upon a time", temperature=0.8, top_k=40, top_p=0.9, seed=7, max_new_tokens=80)
    assert out.tokens == want["tokens"]
    assert out.text == want["text"]


def test_int8_weights_are_the_cli_int8(stories_dir, cli):
    want = cli.generate(stories_dir, "Once upon a time", "--greedy", "--weights", "int8")
    out = qkv.Model(stories_dir, weights="int8").generate("Once upon a time")
    assert out.tokens == want["tokens"]


@pytest.mark.parametrize("beam", [None, 1, 4])
def test_translate_is_the_cli(aren, aren_dir, aren_sources, cli, beam):
    extra = [] if beam is None else ["--beam-size", str(beam)]
    want = cli.translate(aren_dir, aren_sources, *extra)
    got = aren.translate(aren_sources, beam_size=beam)
    assert [t.tokens for t in got] == [w["tokens"] for w in want]
    assert [t.text for t in got] == [w["text"] for w in want]
    # the CLI prints f32 scores through JSON: equal to f32 precision
    assert [t.score for t in got] == pytest.approx([w["score"] for w in want], rel=1e-6)


def test_translate_accepts_utf8_bytes_and_batches(aren, aren_sources):
    as_str = aren.translate(aren_sources, batch_size=32)
    as_bytes = aren.translate([s.encode() for s in aren_sources], batch_size=3)
    assert [t.tokens for t in as_bytes] == [t.tokens for t in as_str]
    assert aren.translate([]) == []


def test_own_thread_pool_gives_the_same_tokens(stories_dir, stories):
    two = qkv.Model(stories_dir, threads=2, isa="scalar")
    assert two.threads == 2 and stories.threads is None
    assert two.generate("The cat", max_new_tokens=MAX_NEW).tokens == stories.generate("The cat", max_new_tokens=MAX_NEW).tokens


def test_stop_strings_end_generation(stories):
    full = stories.generate("Once upon a time", max_new_tokens=MAX_NEW).text
    stop = full.split()[3]
    out = stories.generate("Once upon a time", max_new_tokens=MAX_NEW, stop=[stop])
    assert out.stop_reason == "stop_string"
    assert stop not in out.text and full.startswith(out.text)


# ------------------------------------------------------------------------------------------------
# Streams


def test_stream_is_generate_one_token_at_a_time(stories):
    whole = stories.generate("Once upon a time", max_new_tokens=MAX_NEW)
    stream = stories.stream("Once upon a time", max_new_tokens=MAX_NEW)
    assert stream.stop_reason is None and stream.result() is None
    events = list(stream)
    assert [e.id for e in events] == whole.tokens
    assert "".join(e.text for e in events) == whole.text
    assert stream.stop_reason == whole.stop_reason
    assert stream.result().tokens == whole.tokens
    assert stream.tokens == whole.tokens
    with pytest.raises(StopIteration):
        next(stream)


def test_stopping_a_stream_early_is_cancelled(stories):
    """Python's callback stop: leave the loop (or close()); the tokens so far, stop_reason 'cancelled'."""
    whole = stories.generate("Once upon a time", max_new_tokens=MAX_NEW)
    stream = stories.stream("Once upon a time", max_new_tokens=MAX_NEW)
    for i, _ in enumerate(stream):
        if i == 4:
            break
    assert stream.tokens == whole.tokens[:5]
    assert stream.stop_reason is None  # still open: it could go on
    stream.close()
    assert stream.stop_reason == "cancelled"
    assert stream.result().tokens == whole.tokens[:5]
    assert list(stream) == []
    # the model serves the next call as before
    assert stories.generate("Once upon a time", max_new_tokens=MAX_NEW).tokens == whole.tokens


# ------------------------------------------------------------------------------------------------
# Errors: the engine's messages, a kind each


def test_missing_model(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(qkv.QkvError) as e:
        qkv.Model(missing)
    assert kind_of(e) == "load"
    assert str(missing) in str(e.value)


def test_none_is_a_type_error(stories):
    """Python's null pointer."""
    with pytest.raises(TypeError):
        qkv.Model(None)
    with pytest.raises(TypeError, match="prompt"):
        stories.generate(None)
    with pytest.raises(TypeError):
        stories.stream(None)


def test_bad_utf8(stories, aren):
    for bad in [b"Once \xff upon", "Once \udc80 upon"]:
        with pytest.raises(qkv.QkvError, match="prompt") as e:
            stories.generate(bad)
        assert kind_of(e) == "invalid_utf8"
        with pytest.raises(qkv.QkvError) as e:
            stories.stream(bad)
        assert kind_of(e) == "invalid_utf8"
    with pytest.raises(qkv.QkvError, match=r"texts\[1\]") as e:
        aren.translate(["ok", b"\xd8"])
    assert kind_of(e) == "invalid_utf8"


@pytest.mark.parametrize(
    "kwargs, kind, needle",
    [
        (dict(weights="int4"), "invalid_argument", "int4"),
        (dict(isa="avx1024"), "isa", "avx1024"),
        (dict(threads=0), "invalid_argument", "threads"),
    ],
)
def test_bad_load_options(stories_dir, kwargs, kind, needle):
    with pytest.raises(qkv.QkvError, match=needle) as e:
        qkv.Model(stories_dir, **kwargs)
    assert kind_of(e) == kind


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(temperature=-1.0), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_p=2.0), "top_p"),
        (dict(min_p=-0.5), "min_p"),
        (dict(repetition_penalty=0.0), "repetition_penalty"),
    ],
)
def test_bad_generate_options(stories, kwargs, needle):
    for call in (stories.generate, stories.stream):
        with pytest.raises(qkv.QkvError, match=needle) as e:
            call("Once", **kwargs)
        assert kind_of(e) == "invalid_argument"


def test_out_of_range_mistyped_and_unknown_options_are_python_errors(stories, aren):
    with pytest.raises(OverflowError, match="max_new_tokens"):
        stories.generate("Once", max_new_tokens=-1)
    with pytest.raises(TypeError, match="temperature"):
        stories.generate("Once", temperature="hot")
    with pytest.raises(TypeError, match="stop"):
        stories.stream("Once", stop="not a list")
    with pytest.raises(TypeError, match="max_tokens"):
        stories.generate("Once", max_tokens=3)
    with pytest.raises(TypeError, match="beam"):
        aren.translate(["x"], beam=3)
    with pytest.raises(TypeError, match="list"):
        aren.translate("one sentence, not a list")
    # None keeps the default
    assert stories.generate("Once", max_new_tokens=None, temperature=None).tokens == stories.generate("Once").tokens


def test_bad_translate_options(aren, aren_sources):
    with pytest.raises(qkv.QkvError, match="batch_size") as e:
        aren.translate(aren_sources, batch_size=0)
    assert kind_of(e) == "invalid_argument"
    with pytest.raises(qkv.QkvError, match="num_beams") as e:
        aren.translate(aren_sources, beam_size=0)
    assert kind_of(e) == "invalid_argument"


def test_wrong_family_and_limits(stories, aren, stories_dir):
    # an encoder-decoder model generates from the prompt as its source (T5's text-to-text prompts)
    assert isinstance(aren.generate("x", max_new_tokens=4).text, str)
    with pytest.raises(qkv.QkvError, match="decoder-only") as e:
        stories.translate(["x"])
    assert kind_of(e) == "invalid_argument"
    with pytest.raises(qkv.QkvError, match="512") as e:
        stories.generate("a " * 10000)
    assert kind_of(e) == "invalid_argument"
    with pytest.raises(qkv.QkvError, match="1024 bytes") as e:
        qkv.Model(stories_dir, max_cache_bytes=1024).generate("Once")
    assert kind_of(e) == "memory"


def test_error_kinds_are_the_documented_ones():
    assert set(qkv.ERROR_KINDS) == {
        "null_pointer", "invalid_utf8", "invalid_argument", "load", "isa", "memory", "engine", "panic"
    }
    assert issubclass(qkv.QkvError, Exception)


# ------------------------------------------------------------------------------------------------
# Threads


def _run_threads(n: int, target) -> tuple[float, float]:
    """Run `target(i)` on n threads: (wall seconds, CPU seconds of this process)."""
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    c0, t0 = os.times(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, c1 = time.perf_counter() - t0, os.times()
    return wall, (c1.user - c0.user) + (c1.system - c0.system)


def test_four_threads_share_one_model(stories):
    """Each of 4 threads gets its serial result; the wall time of 4 concurrent calls is reported."""
    calls = [dict(prompt=p, max_new_tokens=400, temperature=t, seed=s) for p in PROMPTS for (t, s) in [(0.0, 0), (0.9, 5)]]
    serial = [stories.generate(**c).tokens for c in calls]
    results: dict[int, list] = {}

    def work(i):
        results[i] = [stories.generate(**c).tokens for c in calls]

    for _ in range(4):
        results.clear()
        _run_threads(4, work)
        assert all(results[i] == serial for i in range(4))

    # the same work on 1 thread and on 4 at once, best of 3 each; CPU/wall above 1 means the threads
    # computed at the same time (with the GIL held it stays at or below 1)
    one = min(_run_threads(1, work) for _ in range(3))
    four = min(_run_threads(4, work) for _ in range(3))
    MEASURED.append(
        f"{len(calls)} generations of <= 400 tokens (stories260k, one shared Model) per thread: 1 thread "
        f"{one[0]:.3f} s wall; 4 threads {four[0]:.3f} s wall = {four[0] / one[0]:.2f}x one "
        f"(4x if serialized, 4/cores if fully parallel), CPU/wall {four[1] / four[0]:.2f}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )


def test_threads_streaming_from_one_model_each_get_the_serial_tokens(stories):
    """Each stream step computes without the GIL, interleaved with the other threads' steps."""
    want = stories.generate("The cat", max_new_tokens=200).tokens
    got: dict[int, list] = {}

    def work(i):
        got[i] = [e.id for e in stories.stream("The cat", max_new_tokens=200)]

    _run_threads(4, work)
    assert all(got[i] == want for i in range(4))


# ------------------------------------------------------------------------------------------------
# The stubs describe the module


def test_stubs_name_what_the_module_has(stories, aren):
    stub = pathlib.Path(qkv.__file__).with_name("_qkv.pyi")
    tree = ast.parse(stub.read_text())
    native = qkv._qkv
    options = {"GenerateOptions": (stories.generate, stories.stream), "TranslateOptions": (aren.translate,)}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in options:
            # every keyword the stubs name is taken (None keeps its default)
            keys = [i.target.id for i in node.body if isinstance(i, ast.AnnAssign)]
            for call in options.pop(node.name):
                arg = ["x"] if call == aren.translate else "Once"
                for key in keys:
                    call(arg, **{key: None})
        elif isinstance(node, ast.ClassDef):
            cls = getattr(native, node.name)
            stubbed = {i.name for i in node.body if isinstance(i, ast.FunctionDef)} | {
                i.target.id for i in node.body if isinstance(i, ast.AnnAssign)
            }
            for name in stubbed - {"kind"}:
                assert hasattr(cls, name), f"{node.name}.{name} is in the stubs only"
            public = {n for n in dir(cls) if not n.startswith("_")}
            assert public <= stubbed | {"args", "with_traceback", "add_note"}, f"{node.name}: {public - stubbed}"
        elif isinstance(node, ast.AnnAssign):
            assert hasattr(native, node.target.id), node.target.id
    assert not options, f"no stub for {options}"
    assert qkv.__version__ == native.__version__
    # an unknown keyword fails even when None
    with pytest.raises(TypeError, match="bogus"):
        stories.generate("Once", bogus=None)


def test_readme_python_example_runs_as_written(stories_dir, capsys):
    text = (pathlib.Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = text[text.index("## Use from Python"):]
    block = section[section.index("```python\n") + len("```python\n"):]
    block = block[: block.index("```")]
    assert len(block.splitlines()) <= 5, block
    models = str(stories_dir.parent) + "/"
    exec(compile(block.replace("../shared/models/", models), "README.md", "exec"), {})
    out = capsys.readouterr().out
    model = qkv.Model(stories_dir)
    greedy = model.generate("Once upon a time", max_new_tokens=32).text
    sampled = model.generate("Once upon a time", temperature=0.8, seed=7).text
    name = qkv.Model(stories_dir.parent / "aren-transliteration-ct2").translate(["محمد"], beam_size=4)[0].text
    assert out == f"{greedy}\n{sampled}{name}\n"


# ------------------------------------------------------------------------------------------------
# Attention as NumPy arrays: the command line's numbers


def test_attention_is_the_cli_json(stories, stories_dir, cli):
    import numpy as np

    want = cli.attention(stories_dir, "Once upon a time")
    att = stories.attention("Once upon a time")
    assert att.ids == want["ids"] and att.tokens == want["tokens"]
    assert att.weights.dtype == np.float32 and att.weights.shape == (5, 8, len(att.ids), len(att.ids))
    # the same f32 numbers the CLI prints
    assert np.array_equal(att.weights, np.array(want["attentions"], dtype=np.float32))
    assert np.abs(att.weights.sum(-1) - 1).max() < 1e-6
    assert (np.triu(att.weights, 1) == 0).all()
    assert np.array_equal(stories.attention(ids=att.ids).weights, att.weights)


def test_translation_attention_is_the_cli_json(aren, aren_dir, cli, tmp_path):
    import numpy as np

    names = ["محمد", "فاطمة"]
    want = cli.translate(aren_dir, names, "--attention", "--out-dir", str(tmp_path))
    out = aren.translation_attention(names)
    for w, a, name in zip(want, out, names):
        assert a.translation.text == w["text"] and a.translation.tokens == w["tokens"]
        assert np.array_equal(a.cross, np.array(w["cross_attention"], dtype=np.float32))
        assert a.cross.shape[2:] == (len(a.target_tokens), len(name))
        assert a.encoder.shape[2:] == (len(name), len(name))


def test_attention_errors(stories, aren):
    with pytest.raises(qkv.QkvError) as e:
        aren.attention("x")
    assert kind_of(e) == "invalid_argument" and "encoder-decoder" in str(e.value)
    with pytest.raises(qkv.QkvError) as e:
        stories.attention(ids=[])
    assert "empty" in str(e.value)
    with pytest.raises(TypeError):
        stories.attention()
