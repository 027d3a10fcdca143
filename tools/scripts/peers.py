#!/usr/bin/env python3
"""qkv (f32 and int8) against its peers on this machine: HF transformers (torch CPU f32), CTranslate2 (f32, int8),
llama.cpp.

Same weights, same inputs, same number of new tokens, same thread count for every engine; one table of tok/s with
qkv's ratio to each engine, and all figures as JSON with --out. See tools/scripts/PEERS.md.

    tools/scripts/peers.py --quick --engines hf,ct2,ct2-int8,qkv,qkv-int8 --out peers.json
    tools/scripts/peers.py --workloads smollm2 --threads 2

It is not part of CI. It re-runs itself inside the venv of tools/scripts/venv.sh (${QKV_VENV:-~/.cache/qkv/venv})
when torch / transformers / ctranslate2 / gguf are missing, and pip-installs llama-cpp-python (which builds llama.cpp
from source, long on few cores) only when llama.cpp rows are asked for.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

NEEDED = ("torch", "transformers", "ctranslate2", "gguf", "numpy", "sentencepiece", "safetensors")
ENGINES = ("hf", "ct2", "ct2-int8", "llama.cpp", "qkv", "qkv-int8", "qkv-int8-x", "qkv-q8_0")
# qkv-bench models: weights as stored / --weights int8 / --weights int8 --activations reduced (int8 x int8) /
# --weights q8_0 (GGUF blocks quantized at load)
QKV_ENGINES = ("qkv", "qkv-int8", "qkv-int8-x", "qkv-q8_0")
# qkv-bench flags of each qkv variant (a row's variant before qkv-bench names its dtype)
QKV_FLAGS = {"f32": [], "bf16": [], "int8": ["--weights", "int8"],
             "int8-x": ["--weights", "int8", "--activations", "reduced"], "bf16-x": ["--activations", "reduced"],
             "q8_0": ["--weights", "q8_0"]}
WORKLOADS = ("marian-base", "marian-big", "gpt2", "smollm2", "t5-small", "nllb-600m")
QKV_NA = "n/a (qkv-bench models unavailable)"

# Text for the real-tokenizer inputs (Marian sources, SmolLM2 prompt); wrapped around when more tokens are needed.
TEXT = (
    "The committee met on Tuesday morning to review the annual report, which describes how the regional water "
    "authority spent its budget over the last twelve months. Most of the money went to repairing old pipes in the "
    "northern districts, where leaks had caused repeated shortages during the summer. The engineers explained that "
    "new sensors now measure pressure along the main lines every few seconds and send an alert when a value drifts "
    "outside the expected range. Several members asked whether the same system could be installed in the southern "
    "towns, and the director answered that a pilot project would begin in the spring if the council approved the "
    "additional funds. A local teacher then presented a programme that brings students to the treatment plant, so "
    "that they can see how river water becomes safe to drink and why it matters to use it carefully at home. "
    "Before the meeting closed, the chair thanked the staff for their work during a difficult year and reminded "
    "everyone that the next public session would take place in the library on the first Monday of the month."
)


def bootstrap() -> None:
    """Re-exec inside tools/scripts/venv.sh's venv when the Python packages are missing here."""
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if not missing:
        return
    if os.environ.get("QKV_PEERS_BOOTSTRAPPED"):
        sys.exit(f"peers.py: still missing {missing} inside the venv; see tools/scripts/venv.sh")
    print(f"[peers] missing {missing}: re-running inside tools/scripts/venv.sh's venv", flush=True)
    env = dict(os.environ, QKV_PEERS_BOOTSTRAPPED="1")
    os.execve("/bin/bash", ["bash", str(HERE / "venv.sh"), "python", str(Path(__file__).resolve()), *sys.argv[1:]],
              env)


def ensure_llama_cpp() -> str | None:
    """Import llama_cpp, pip-installing llama-cpp-python into this venv if needed; None when usable, else why not."""
    if importlib.util.find_spec("llama_cpp") is not None:
        return None
    if sys.prefix == sys.base_prefix:
        return "llama-cpp-python not installed and this Python is not a venv (run through tools/scripts/venv.sh)"
    print("[peers] pip install llama-cpp-python: builds llama.cpp from source (tens of minutes on 2 cores)...",
          flush=True)
    p = subprocess.run([sys.executable, "-m", "pip", "install", "llama-cpp-python"])
    importlib.invalidate_caches()
    if p.returncode != 0 or importlib.util.find_spec("llama_cpp") is None:
        return f"pip install llama-cpp-python failed (exit {p.returncode})"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Rows


@dataclass
class Row:
    workload: str
    engine: str  # hf | ct2 | ct2-int8 | llama.cpp | qkv | qkv-int8 | qkv-int8-x
    variant: str  # weights / compute type shown in the table
    kind: str  # seq2seq | causal
    model: str  # path given to the engine
    batch: int
    beam: int
    prompt_len: int
    new_tokens: int
    result: dict | None = None  # from the worker / qkv-bench: best, median, runs, peak_rss_mb...
    note: str = ""
    ratio_qkv: dict = field(default_factory=dict)  # qkv tok/s / this engine's tok/s (best), per metric


def token_windows(ids: list[int], n_rows: int, length: int, stride: int) -> list[list[int]]:
    """n_rows windows of `length` ids taken every `stride` ids (wrapping around)."""
    need = (n_rows - 1) * stride + length
    src = (ids * (need // len(ids) + 1))[:need]
    return [src[r * stride: r * stride + length] for r in range(n_rows)]


def marian_sources(hf_dir: Path, n_rows: int, src_len: int) -> list[list[int]]:
    """Real English text through the real Marian tokenizer: src_len - 1 content ids, then </s>."""
    from transformers import MarianTokenizer

    tok = MarianTokenizer.from_pretrained(hf_dir)
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    return [w + [tok.eos_token_id] for w in token_windows(ids, n_rows, src_len - 1, 7)]


def random_sources(hf_dir: Path, n_rows: int, src_len: int) -> list[list[int]]:
    """Random ids past the special tokens, then EOS (a random model has no text to tokenize)."""
    import numpy as np

    cfg = json.loads((hf_dir / "config.json").read_text())
    rng = np.random.default_rng(0)
    return [[int(x) for x in rng.integers(4, cfg["vocab_size"], size=src_len - 1)] + [cfg["eos_token_id"]]
            for _ in range(n_rows)]


def gpt2_prompt(vocab: int, n_rows: int, length: int) -> list[list[int]]:
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.integers(0, vocab - 1, size=(n_rows, length)).tolist()


def smollm2_prompt(hf_dir: Path, length: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_dir)
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    return token_windows(ids, 1, length, 1)


def plan(args, work: Path, shared: Path) -> tuple[list[Row], dict, list[str]]:
    """Prepare models and list the rows to measure. Returns (rows, inputs per workload, notes)."""
    import peers_prepare as prep

    rows: list[Row] = []
    inputs: dict[str, list[list[int]]] = {}
    notes: list[str] = []
    eng = set(args.engines)
    q = args.quick

    def ct2_rows(wl: str, hf_dir: Path, kind: str, batch: int, beam: int, p: int, n: int):
        for name, quant, ctype in (("ct2", None, "float32"), ("ct2-int8", "int8", "int8")):
            if name not in eng:
                continue
            d, note = prep.prepare_ct2(hf_dir, quant)
            rows.append(Row(wl, name, ctype, kind, str(d) if d else "", batch, beam, p, n,
                            note=note if d else note or "conversion failed"))
            if d is None:
                rows[-1].result = {"error": note}

    def qkv_rows(wl: str, hf_dir: Path, kind: str, batch: int, beam: int, p: int, n: int):
        for name, variant in (("qkv", "f32"), ("qkv-int8", "int8"), ("qkv-int8-x", "int8-x"), ("qkv-q8_0", "q8_0")):
            if name in eng:
                rows.append(Row(wl, name, variant, kind, str(hf_dir), batch, beam, p, n))

    for wl in args.workloads:
        if wl in ("marian-base", "marian-big", "t5-small", "nllb-600m"):
            marian = wl.startswith("marian")
            hf_dir = prep.prepare_marian(work, shared, wl) if marian else prep.prepare_seq2seq_random(work, wl)
            src_len = 24
            for tag, batch, beam, n in (("greedy b1", 1, 1, 16 if q else 64), ("beam4 b16", 16, 4, 8 if q else 32)):
                name = f"{wl} {tag}"
                inputs[name] = (marian_sources if marian else random_sources)(hf_dir, batch, src_len)
                if "hf" in eng:
                    rows.append(Row(name, "hf", "torch f32", "seq2seq", str(hf_dir), batch, beam, src_len, n))
                ct2_rows(name, hf_dir, "seq2seq", batch, beam, src_len, n)
                qkv_rows(name, hf_dir, "seq2seq", batch, beam, src_len, n)
        elif wl == "gpt2":
            hf_dir = prep.prepare_gpt2(work)
            p, n = 128, 32 if q else 128
            name = "gpt2 b1"
            inputs[name] = gpt2_prompt(50257, 1, p)
            if "hf" in eng:
                rows.append(Row(name, "hf", "torch f32", "causal", str(hf_dir), 1, 1, p, n))
            ct2_rows(name, hf_dir, "causal", 1, 1, p, n)
            qkv_rows(name, hf_dir, "causal", 1, 1, p, n)
        elif wl == "smollm2":
            hf_dir, made_by = prep.prepare_smollm2_hf(work, shared, REPO, "f32")
            notes.append(f"smollm2 HF f32 directory: {made_by}")
            p, n = 128, 32 if q else 128
            name = "smollm2 b1"
            inputs[name] = smollm2_prompt(hf_dir, p)
            if "hf" in eng:
                rows.append(Row(name, "hf", "torch f32", "causal", str(hf_dir), 1, 1, p, n))
            ct2_rows(name, hf_dir, "causal", 1, 1, p, n)
            if "llama.cpp" in eng:
                why = ensure_llama_cpp()
                ggufs = [("q4_1 (shipped)", shared / prep.SMOLLM2_GGUF)]
                for v in prep.GGUF_VARIANTS:
                    try:
                        ggufs.append((v, prep.prepare_gguf_variant(work, shared, v)))
                    except Exception as e:  # noqa: BLE001 - a variant that cannot be written is a table note
                        ggufs.append((v, None))
                        notes.append(f"gguf {v}: not produced: {type(e).__name__}: {e}")
                f32 = dict(ggufs).get("f32")
                if f32 is not None:
                    notes.append("gguf f32 vs HF dir: " + prep.check_gguf_matches_hf(f32, hf_dir))
                for v, path in ggufs:
                    rows.append(Row(name, "llama.cpp", v, "causal", str(path or ""), 1, 1, p, n))
                    if why or path is None:
                        rows[-1].result = {"error": why or "GGUF variant not produced"}
                        rows[-1].note = why or "GGUF variant not produced"
            qkv_rows(name, hf_dir, "causal", 1, 1, p, n)
            if "qkv" in eng:
                bf16_dir, made_by = prep.prepare_smollm2_hf(work, shared, REPO, "bf16")
                notes.append(f"smollm2 HF bf16 directory: {made_by}")
                rows.append(Row(name, "qkv", "bf16", "causal", str(bf16_dir), 1, 1, p, n))
                rows.append(Row(name, "qkv", "bf16-x", "causal", str(bf16_dir), 1, 1, p, n))
    return rows, inputs, notes


# ---------------------------------------------------------------------------------------------------------------
# Running


def run_worker(row: Row, ids: list[list[int]], args) -> dict:
    """Measure one peer row in a fresh process (own thread settings and OpenMP runtime, own peak RSS)."""
    engine = "ct2" if row.engine.startswith("ct2") else row.engine
    spec = dict(engine=engine, kind=row.kind, model=row.model, compute_type=row.variant, threads=args.threads,
                beam=row.beam, new_tokens=row.new_tokens, ids=ids, runs=args.runs, warmup=args.warmup)
    res = run_spec(spec, args)
    if engine == "llama.cpp" and res.get("signal"):
        # Seen here: llama.cpp built with -march=native on a CPU with AMX dies (SIGSEGV) on quantised weights
        # when its extra buffer types are on (AMX / repacked weights; the sandbox may not grant AMX tile state).
        first = res["error"]
        spec["llama_extra_bufts"] = False
        res = run_spec(spec, args)
        res["llama_extra_bufts"] = False
        row.note = (f"with llama.cpp's extra buffer types (AMX / weight repacking) on: {first}; "
                    "measured with use_extra_bufts=false")
    return res


def run_spec(spec: dict, args) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", f.name], env=env,
                           capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    for line in p.stdout.splitlines():
        if line.startswith("PEERS-RESULT "):
            return json.loads(line[len("PEERS-RESULT "):])
    err = (p.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"worker exit {p.returncode}: {err}", "signal": p.returncode < 0}


def qkv_bench_path(args) -> Path | None:
    if args.qkv_bench:
        return Path(args.qkv_bench)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    exe = target / "release" / "qkv-bench"
    if args.rebuild or not exe.exists():
        if shutil.which("cargo") is None:
            return None
        print("[peers] cargo build --release -p bench", flush=True)
        if subprocess.run(["cargo", "build", "--release", "-p", "bench"], cwd=REPO).returncode != 0:
            return None
    return exe if exe.exists() else None


QKV_KEYS = ("prefill_tok_s", "decode_tok_s", "ttft_s", "peak_rss_mb")


def run_qkv(row: Row, exe: Path | None, args) -> dict:
    """qkv-bench models, warm-up + `runs` times; same best/median summary as the peers."""
    if exe is None:
        return {"error": QKV_NA, "why": "no qkv-bench binary (cargo build --release -p bench failed or no cargo)"}
    cmd = [str(exe), "--threads", str(args.threads), "models", "--model", row.model, "--prompt-len",
           str(row.prompt_len), "--new-tokens", str(row.new_tokens), "--batch", str(row.batch), "--beam",
           str(row.beam), "--json"]
    cmd += QKV_FLAGS[row.variant]
    runs = []
    for i in range(args.warmup + args.runs):
        p = subprocess.run(cmd, capture_output=True, text=True)
        try:
            out = json.loads(p.stdout)
            assert p.returncode == 0 and all(k in out for k in QKV_KEYS)
        except (ValueError, AssertionError):
            why = (p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or [""])[-1][:200]
            return {"error": QKV_NA, "why": f"exit {p.returncode}: {why}", "cmd": " ".join(cmd)}
        if i < args.warmup:
            continue
        b, n = row.batch, row.new_tokens
        total = out["ttft_s"] + (b * (n - 1) / out["decode_tok_s"] if out["decode_tok_s"] > 0 else float("inf"))
        runs.append({"ttft_s": out["ttft_s"], "total_s": total, "prefill_tok_s": out["prefill_tok_s"],
                     "decode_tok_s": out["decode_tok_s"], "e2e_tok_s": b * n / total, "qkv": out})
    from peers_engines import summarize

    plain = [{k: v for k, v in r.items() if k != "qkv"} for r in runs]
    return {"runs": runs, "best": summarize(plain, best=True), "median": summarize(plain, best=False),
            "peak_rss_mb": max(r["qkv"]["peak_rss_mb"] for r in runs), "dtype": runs[-1]["qkv"].get("dtype"),
            "cmd": " ".join(cmd)}


def add_ratios(rows: list[Row], stat: str) -> None:
    """qkv tok/s over each engine's tok/s, per workload, against the first usable qkv row (f32)."""
    for wl in dict.fromkeys(r.workload for r in rows):
        group = [r for r in rows if r.workload == wl]
        qkv = next((r for r in group if r.engine == "qkv" and r.result and stat in r.result), None)
        for r in group:
            if qkv is None or not r.result or stat not in r.result:
                continue
            for k in ("prefill_tok_s", "decode_tok_s", "e2e_tok_s"):
                mine = r.result[stat][k]
                r.ratio_qkv[k] = qkv.result[stat][k] / mine if mine else float("nan")


# ---------------------------------------------------------------------------------------------------------------
# Output


def fmt(x, digits=1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and x != x:
        return "nan"
    return f"{x:,.{digits}f}"


def table(rows: list[Row], stat: str) -> str:
    head = ["workload", "engine", "weights", "prefill tok/s", "decode tok/s", "e2e tok/s", "TTFT ms", "RSS MB",
            "qkv x prefill", "qkv x decode", "note"]
    lines = []
    for r in rows:
        res = r.result or {}
        if stat in res:
            s = res[stat]
            cells = [fmt(s["prefill_tok_s"]), fmt(s["decode_tok_s"]), fmt(s["e2e_tok_s"]), fmt(s["ttft_s"] * 1e3),
                     fmt(res.get("peak_rss_mb"), 0)]
            ratio = [fmt(r.ratio_qkv.get("prefill_tok_s"), 2), fmt(r.ratio_qkv.get("decode_tok_s"), 2)]
            if not r.ratio_qkv and r.engine != "qkv":
                ratio = ["n/a", "n/a"]
        else:
            cells = ["n/a"] * 5
            ratio = ["-", "-"]
        note = r.note or res.get("error", "")
        if r.engine in QKV_ENGINES and "error" in res:
            note = f"{res['error']}: {res.get('why', '')}"
        lines.append([r.workload, r.engine, r.variant, *cells, *ratio, note])
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(head)]
    widths[-1] = len(head[-1])
    out = [" | ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
    out.append("-|-".join("-" * w for w in widths))
    for l in lines:
        out.append(" | ".join(c.rjust(w) if 3 <= i <= 9 else c.ljust(w) for i, (c, w) in enumerate(zip(l, widths)))
                   .rstrip())
    return "\n".join(out)


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    v = {"python": platform.python_version()}
    for m in ("torch", "transformers", "ctranslate2", "gguf", "numpy", "llama-cpp-python"):
        try:
            v[m] = version(m)
        except PackageNotFoundError:
            v[m] = None
    return v


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "n_cpus": os.cpu_count(), "platform": platform.platform()}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        from peers_engines import worker_main

        worker_main(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every engine (default: all)")
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"comma list of {','.join(ENGINES)}")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma list of {','.join(WORKLOADS)}")
    ap.add_argument("--runs", type=int, default=None, help="timed runs after the warm-up (default 3, --quick 1)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="fewer new tokens and one run (a smoke test)")
    ap.add_argument("--stat", choices=("best", "median"), default="best", help="figure shown in the table")
    ap.add_argument("--out", help="write every figure as JSON here")
    ap.add_argument("--work", default=os.environ.get("QKV_PEERS_DIR", str(Path.home() / ".cache/qkv/peers")),
                    help="where prepared models go (about 5 GB; default ~/.cache/qkv/peers or $QKV_PEERS_DIR)")
    ap.add_argument("--shared", default=os.environ.get("QKV_SHARED_MODELS", str(REPO.parent / "shared/models")),
                    help="shared models folder (default ../shared/models or $QKV_SHARED_MODELS)")
    ap.add_argument("--qkv-bench", help="qkv-bench binary (default: target/release/qkv-bench, built if missing)")
    ap.add_argument("--rebuild", action="store_true", help="run cargo build --release -p bench first")
    args = ap.parse_args()
    args.engines = [e for e in args.engines.split(",") if e]
    args.workloads = [w for w in args.workloads.split(",") if w]
    for e in args.engines:
        if e not in ENGINES:
            ap.error(f"unknown engine {e}")
    for w in args.workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w}")
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    bootstrap()

    work, shared = Path(args.work), Path(args.shared)
    work.mkdir(parents=True, exist_ok=True)
    rows, inputs, notes = plan(args, work, shared)
    exe = qkv_bench_path(args) if any(r.engine in QKV_ENGINES for r in rows) else None
    for r in rows:
        if r.result is not None:  # already failed while preparing
            continue
        print(f"[peers] {r.workload}: {r.engine} {r.variant} ...", flush=True)
        load_before = os.getloadavg()[0]
        r.result = run_qkv(r, exe, args) if r.engine in QKV_ENGINES else run_worker(r, inputs[r.workload], args)
        r.result["loadavg_1min"] = [load_before, os.getloadavg()[0]]
        if r.engine in QKV_ENGINES and r.result.get("dtype"):
            r.variant = r.result["dtype"]  # what qkv-bench says it ran
        if "error" in r.result:
            print(f"[peers]   {r.result['error']} {r.result.get('why', '')}", flush=True)
        else:
            s = r.result[args.stat]
            print(f"[peers]   prefill {s['prefill_tok_s']:.1f} tok/s, decode {s['decode_tok_s']:.1f} tok/s",
                  flush=True)
    add_ratios(rows, args.stat)

    print()
    print(f"{machine()['cpu']}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f} (1 min): "
          "other processes on the machine skew every figure")
    print(f"threads {args.threads}, {args.stat} of {args.runs} run(s) after {args.warmup} warm-up; "
          "qkv x = qkv tok/s / engine tok/s (> 1: qkv faster); beam rows count returned sequences")
    print(table(rows, args.stat))
    for n in notes:
        print("note: " + n)
    if args.out:
        doc = {"machine": machine(), "versions": versions(), "settings": {k: v for k, v in vars(args).items()},
               "definitions": {
                   "prefill_tok_s": "batch * prompt_len / ttft (ttft: wall time of a 1-new-token generation)",
                   "decode_tok_s": "batch * (new_tokens - 1) / (total - ttft)",
                   "e2e_tok_s": "batch * new_tokens / total (total: wall time of the new_tokens generation)",
                   "ratio_qkv": f"qkv {args.stat} tok/s / this row's {args.stat} tok/s"},
               "inputs": inputs, "notes": notes, "rows": [asdict(r) for r in rows]}
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
