"""Fixtures of the qkv Python tests: the shared models and the qkv command line (the reference).

QKV_BIN names the `qkv` binary (tools/python/ci.sh sets it); QKV_SHARED_MODELS the models directory
(default: ../shared/models beside the repository). Both are required: a missing one fails the tests.
"""

import json
import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]

# Figures the tests measured, printed at the end of the run (reported, never asserted).
MEASURED: list[str] = []


def pytest_terminal_summary(terminalreporter):
    if MEASURED:
        terminalreporter.section("qkv: measured (not asserted)")
        for line in MEASURED:
            terminalreporter.write_line(line)


def _shared(name: str) -> pathlib.Path:
    root = pathlib.Path(os.environ.get("QKV_SHARED_MODELS", REPO.parent / "shared" / "models"))
    path = root / name
    if not path.is_dir():
        pytest.fail(f"shared model {name!r} is missing: expected it at {path} (set QKV_SHARED_MODELS)")
    return path


@pytest.fixture(scope="session")
def stories_dir() -> pathlib.Path:
    return _shared("stories260k")


@pytest.fixture(scope="session")
def aren_dir() -> pathlib.Path:
    return _shared("aren-transliteration-ct2")


@pytest.fixture(scope="session")
def aren_sources() -> list[str]:
    ref = json.loads((REPO / "tools" / "fixtures" / "aren-ct2" / "reference.json").read_text())
    return ref["sources"][:12]


class Cli:
    """The `qkv` command line, whose outputs the bindings must reproduce."""

    def __init__(self, exe: str):
        self.exe = exe

    def _run(self, args: list[str]) -> str:
        out = subprocess.run([self.exe, *args], capture_output=True, text=True)
        assert out.returncode == 0, f"qkv {' '.join(args)} failed:\n{out.stderr}"
        return out.stdout

    def generate(self, model, prompt: str, *extra: str) -> dict:
        return json.loads(self._run(["generate", "--json", "--model", str(model), "--prompt", prompt, *extra]))

    def attention(self, model, prompt: str) -> dict:
        return json.loads(self._run(["attention", "--json", "--model", str(model), "--prompt", prompt]))

    def translate(self, model, texts: list[str], *extra: str) -> list[dict]:
        out = self._run(["translate", "--json", "--model", str(model), *extra, *texts])
        return [json.loads(line) for line in out.splitlines()]


@pytest.fixture(scope="session")
def cli() -> Cli:
    exe = os.environ.get("QKV_BIN")
    if not exe or not os.access(exe, os.X_OK):
        pytest.fail("QKV_BIN must name the qkv binary (cargo build -p tools --bin qkv); tools/python/ci.sh sets it")
    return Cli(exe)
