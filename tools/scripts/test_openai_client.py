"""The official `openai` Python client against `qkv serve`, unchanged: a streamed chat completion (and a plain
one, a completion and the model list) on the shared stories260k model, whose text must be what
`qkv generate --chat --greedy` prints for the same message.

    cargo build --release -p tools
    tools/scripts/venv.sh python -m pytest -q tools/scripts/test_openai_client.py

QKV_BIN names the qkv binary (default: target/release/qkv, else target/debug/qkv); QKV_SHARED_MODELS the shared
models (default: ../shared/models beside the repository). stories260k has no chat template: the test links its
files into a temporary directory with a small one added, as tools/tests/serve.rs does.
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import tempfile

import openai
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
QUESTION = "Tell me a story about a cat"
MAX_TOKENS = 40


def qkv_bin():
    if os.environ.get("QKV_BIN"):
        return os.environ["QKV_BIN"]
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    for p in (target / "release" / "qkv", target / "debug" / "qkv"):
        if p.exists():
            return str(p)
    pytest.fail(f"no qkv binary under {target}: cargo build --release -p tools, or set QKV_BIN")


@pytest.fixture(scope="module")
def model_dir():
    shared = pathlib.Path(os.environ.get("QKV_SHARED_MODELS", ROOT.parent / "shared" / "models"))
    src = shared / "stories260k"
    if not src.exists():
        pytest.fail(f"the shared stories260k model is not at {src} (set QKV_SHARED_MODELS)")
    with tempfile.TemporaryDirectory() as d:
        for f in src.iterdir():
            (pathlib.Path(d) / f.name).symlink_to(f)
        (pathlib.Path(d) / "tokenizer_config.json").write_text(json.dumps({"chat_template": TEMPLATE}))
        yield pathlib.Path(d)


@pytest.fixture(scope="module")
def server(model_dir):
    proc = subprocess.Popen(
        [qkv_bin(), "serve", "--model", str(model_dir), "--port", "0", "--served-model-name", "stories"],
        stderr=subprocess.PIPE,
        text=True,
    )
    addr = None
    for line in proc.stderr:
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            addr = m.group(1)
        if "ready in" in line:
            break
    assert addr, "the server did not start"
    yield addr
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def expected_text(model_dir):
    out = subprocess.run(
        [qkv_bin(), "generate", "--model", str(model_dir), "--chat", "--greedy", "--json",
         "--max-new-tokens", str(MAX_TOKENS), "--prompt", QUESTION],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout)["text"]


def test_streamed_chat_completion(server, model_dir):
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused")
    stream = client.chat.completions.create(
        model="stories",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=MAX_TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage, roles = "", None, None, []
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.role:
                roles.append(c.delta.role)
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert roles == ["assistant"]
    assert finish in ("stop", "length")
    assert text == expected_text(model_dir)
    assert usage.completion_tokens > 0 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_plain_calls(server, model_dir):
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused")
    assert [m.id for m in client.models.list()] == ["stories"]
    r = client.chat.completions.create(
        model="stories", messages=[{"role": "user", "content": QUESTION}], max_tokens=MAX_TOKENS, temperature=0
    )
    assert r.choices[0].message.content == expected_text(model_dir)
    c = client.completions.create(model="stories", prompt="Once upon a time", max_tokens=8, temperature=0)
    assert 1 <= c.usage.completion_tokens <= 8 and c.choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="stories", prompt="a", max_tokens=-1)
    assert "max_tokens" in str(e.value)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-9", prompt="a")
