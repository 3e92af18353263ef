"""Benchmark (not a test): batch-1 decode of the same ternary weights on autoqat's packed kernels
(`autoqat bench-decode`, a packed W1.58A8 student) and on llama.cpp's TQ2_0 (through
llama-cpp-python's libllama), at 1 and 2 threads, in one script. Prints tokens/s and the ratio.

llama.cpp needs its GGUF converter, which the llama-cpp-python wheel does not ship; its source
distribution on PyPI does (vendor/llama.cpp/convert_hf_to_gguf.py, same version as the wheel):

    curl -sL -o /tmp/lcp.tar.gz "$(curl -s https://pypi.org/simple/llama-cpp-python/ \\
        | grep -o 'https://[^"#]*llama_cpp_python-0.3.36.tar.gz' | head -1)"
    tar xzf /tmp/lcp.tar.gz -C /tmp
    .venv/bin/python benches/decode_vs_llamacpp.py --llama-cpp-src /tmp/llama_cpp_python-0.3.36/vendor/llama.cpp

The shape has every projection's input width a multiple of 256 (TQ2_0's block; at SmolLM2's
576 llama.cpp falls back to Q4_0): hidden 768, MLP 2048, 24 layers, 12 query and 4 key/value
heads, vocabulary 49,152, tied embedding (about 189M parameters), random weights made exactly
ternary per row so both formats hold the same values. Both keep the tied embedding/head in f32
(llama.cpp's TQ2_0 default would make it Q4_K: `token_embedding_type` is set to F32 here).
llama.cpp quantizes its activations to 8 bits per 256-value block (Q8_K); the student runs int8
per token.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from decode_bench import TEXT, bandwidth_gbs, bench, is_proj, write_student  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))
from autoqat_ref.tiny import tiny_checkpoint  # noqa: E402

SHAPE = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=24, num_attention_heads=12,
             num_key_value_heads=4, vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True)
LLAMA_FTYPE_MOSTLY_TQ2_0 = 37
GGML_TYPE_F32 = 0


def ternarize(state):
    """Every projection made exactly ternary per row (absmean scale), in place."""
    for name, w in state.items():
        if is_proj(name):
            scale = w.abs().mean(-1, keepdim=True).clamp_min(1e-5)
            state[name] = ((w / scale).round().clamp(-1, 1) * scale).contiguous()


def to_tq2(src, work, llama_src, py):
    """The dense checkpoint as GGUF f32 (llama.cpp's converter), then TQ2_0 (llama.cpp's quantizer)."""
    import llama_cpp

    f32 = os.path.join(work, "model-f32.gguf")
    out = os.path.join(work, "model-tq2_0.gguf")
    conv = os.path.join(llama_src, "convert_hf_to_gguf.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([llama_src, os.path.join(llama_src, "gguf-py")]))
    # The converter as it is, with its vocabulary detection told what we know: the tokens are
    # ids fed directly (no tokenizer is exercised), so the test tokenizer is written as a GPT-2
    # style BPE vocabulary and no sentencepiece model is looked for.
    wrapper = (
        "import sys, runpy\n"
        "import conversion.base as b\n"
        "def no_spm(self, *a, **k): raise FileNotFoundError('no tokenizer.model')\n"
        "b.TextModel._set_vocab_sentencepiece = no_spm\n"
        "b.TextModel.get_vocab_base_pre = lambda self, tokenizer: 'gpt-2'\n"
        f"sys.argv = ['convert_hf_to_gguf.py', {src!r}, '--outtype', 'f32', '--outfile', {f32!r}]\n"
        f"runpy.run_path({conv!r}, run_name='__main__')\n"
    )
    r = subprocess.run([py, "-c", wrapper], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"convert_hf_to_gguf.py failed:\n{r.stderr[-3000:]}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_FTYPE_MOSTLY_TQ2_0
    params.token_embedding_type = GGML_TYPE_F32
    params.nthread = 2
    if llama_cpp.llama_model_quantize(f32.encode(), out.encode(), params) != 0:
        sys.exit("llama_model_quantize to TQ2_0 failed")
    return out


def llama_decode(gguf, threads, prompt, new_tokens):
    """Prefill and greedy decode tokens/s of llama.cpp, from its own perf counters."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=gguf, n_threads=threads, n_threads_batch=threads, n_ctx=len(prompt) + new_tokens + 16, n_batch=512,
                          verbose=False)
    ctx = llm._ctx.ctx
    llama_cpp.llama_perf_context_reset(ctx)
    ids = []
    for tok in llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0):
        ids.append(tok)
        if len(ids) >= new_tokens:
            break
    perf = llama_cpp.llama_perf_context(ctx)
    prefill = perf.n_p_eval / max(perf.t_p_eval_ms, 1e-9) * 1e3
    decode = perf.n_eval / max(perf.t_eval_ms, 1e-9) * 1e3
    del llm
    return prefill, decode, ids


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(HERE)
    ap.add_argument("--llama-cpp-src", required=True, help="vendor/llama.cpp of the llama-cpp-python sdist")
    ap.add_argument("--bin", default=os.path.join(root, "target/release/autoqat"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--keep", help="build the models in this directory and keep them")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = args.keep or tmp
        src = os.path.join(d, "dense")
        _, model = tiny_checkpoint(src, TEXT, 1024, special_tokens=(), **SHAPE, rms_norm_eps=1e-5, rope_theta=10000.0)
        with open(os.path.join(src, "config.json")) as f:
            config = json.load(f)
        state = {k: v.detach().float() for k, v in model.state_dict().items()}
        state.pop("lm_head.weight", None)
        ternarize(state)
        # The dense checkpoint llama.cpp converts holds the same ternary values.
        save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(src, "model.safetensors"),
                  metadata={"format": "pt"})
        params = sum(v.numel() for v in state.values())
        student = os.path.join(d, "student")
        write_student(src, student, state, config)
        t0 = time.time()
        gguf = to_tq2(src, d, args.llama_cpp_src, sys.executable)
        print(f"model: {params / 1e6:.1f}M parameters; TQ2_0 GGUF {os.path.getsize(gguf) / 2**20:.1f} MiB "
              f"({time.time() - t0:.0f} s to convert and quantize)")
        import llama_cpp

        print("llama.cpp:", llama_cpp.llama_print_system_info().decode().strip())
        prompt = [(7 * i + 11) % (SHAPE["vocab_size"] - 2) + 1 for i in range(args.prompt_tokens)]
        print(f"{'runtime':30s} {'thr':>3s} {'prefill tok/s':>13s} {'decode tok/s':>12s} {'vs llama.cpp':>12s} "
              f"{'% of BW':>8s}")
        for threads in [int(t) for t in args.threads.split(",")]:
            # Weight bytes read per token over the read bandwidth at this thread count.
            bw = bandwidth_gbs(threads) * 1e9
            print(f"read bandwidth at {threads} thread(s): {bw / 1e9:.1f} GB/s")
            ours, ours_avx2, ours_libtorch, theirs = [], [], [], []
            for _ in range(args.repeats):
                theirs.append(llama_decode(gguf, threads, prompt, args.new_tokens))
                ours.append(bench(args.bin, student, "auto", threads, args))
                # The same kernels with libtorch ops between the products (before the host step).
                ours_libtorch.append(bench(args.bin, student, "auto", threads, args, ("--libtorch-step",)))
                # The same instruction set as the llama.cpp build (scripts/test builds it with
                # AVX2 and without AVX-512).
                os.environ["AUTOQAT_KERNEL"] = "avx2"
                try:
                    ours_avx2.append(bench(args.bin, student, "auto", threads, args))
                finally:
                    del os.environ["AUTOQAT_KERNEL"]
            t_pre, t_dec, _ = max(theirs, key=lambda r: r[1])
            share = 100 * t_dec * os.path.getsize(gguf) / bw
            print(f"{'llama.cpp TQ2_0 (Q8_K acts)':30s} {threads:3d} {t_pre:13.1f} {t_dec:12.2f} {1.0:12.2f} "
                  f"{share:7.1f}%")
            for name, runs in (("autoqat W1.58A8", ours), ("autoqat W1.58A8", ours_avx2),
                               ("autoqat W1.58A8 libtorch step", ours_libtorch)):
                o = max(runs, key=lambda r: r["decode_tokens_per_s"])
                share = 100 * o["decode_tokens_per_s"] * o["weight_bytes"] / bw
                print(f"{name:30s} {threads:3d} {o['prefill_tokens_per_s']:13.1f} "
                      f"{o['decode_tokens_per_s']:12.2f} {o['decode_tokens_per_s'] / t_dec:12.2f} {share:7.1f}%  "
                      f"({o['kernel_path']}, {o['weight_bytes'] / 2**20:.0f} MiB of weights)")


if __name__ == "__main__":
    main()
