"""Reference side of the compression-track tests (run with $AUTOQAT_PYTHON).

    python compress_ref.py make OUT_DIR [--wikitext PATH]
        tiny random checkpoints saved by transformers (llama: tied, GQA; qwen2: untied, q/k/v
        bias; qwen3: q/k norms; qwen3_5: the Qwen3.5/3.6 hybrid inside its image-text wrapper, as the live track's
        model ships, and qwen3_5_text: the same decoder saved text-only), each with tokenizer.json, plus calib.txt and eval.txt (one document per line).

    python compress_ref.py check ARTIFACT_DIR SOURCE_DIR EVAL_TEXT DOC_TOKENS BATCH
        loads the artifact with AutoModelForCausalLM(trust_remote_code=True) and prints JSON:
        its perplexity by the track's validator protocol (written here from the protocol, not
        from autoqat), its parameter count as transformers counts it, and the largest
        difference between each loaded weight and plain-PyTorch row quantization of the source
        weight with the row kinds the artifact declares.

    python compress_ref.py validate ARTIFACT_ZIP EVAL_TEXT DOC_TOKENS BATCH BPP
        the track's scoring path, written here from its public description (not from autoqat):
        unzip, load the first directory holding config.json with AutoModelForCausalLM and the
        validator's exact keyword arguments, tokenize with AutoTokenizer from that directory,
        check both budget gates and the parameter cap, score by the document protocol; prints
        JSON.
"""

import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
from autoqat_ref.tiny import byte_level_bpe, doc_protocol_nll, generated_text, random_model, save  # noqa: E402

WORDS = ("the model reads every token and predicts what comes next a small ternary network keeps "
         "one scale per row while a binary row keeps only the sign of each weight")


def make(out, wikitext=None):
    os.makedirs(out, exist_ok=True)
    if wikitext:
        with open(wikitext, encoding="utf-8") as f:
            text = f.read()[:120000]
    else:
        text = generated_text(WORDS, 3000, 14, seed=3)
    lines = [l for l in text.splitlines() if l.strip()]
    half = len(lines) // 2
    with open(os.path.join(out, "calib.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines[:half]) + "\n")
    with open(os.path.join(out, "eval.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines[half:half + 160]) + "\n")
    tok = byte_level_bpe(text, 512)
    common = dict(vocab_size=tok.get_vocab_size(), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    for name, arch, extra in [("llama", "llama", dict(tie_word_embeddings=True)),
                              ("qwen2", "qwen2", dict(tie_word_embeddings=False)),
                              ("qwen3", "qwen3", dict(tie_word_embeddings=True, head_dim=64))]:
        model = random_model(arch, seed=5, **common, **extra)
        g = torch.Generator().manual_seed(11)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                # Heavier-tailed than HF's init, so rows differ in what quantization costs them.
                if "norm" in pname:
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                else:
                    scale = torch.exp(0.5 * torch.randn(p.shape[0], 1, generator=g)) if p.dim() == 2 else 1.0
                    p.copy_(0.05 * scale * torch.randn(p.shape, generator=g))
        save(os.path.join(out, name), model, tok)
    make_qwen3_5(os.path.join(out, "qwen3_5"), tok)


def make_qwen3_5(out, tok):
    """Gated DeltaNet and gated attention layers (L L F L), wrapped as Qwen3_5ForConditionalGeneration."""
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    text = dict(vocab_size=tok.get_vocab_size(), hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                layer_types=["linear_attention", "linear_attention", "full_attention", "linear_attention"],
                num_attention_heads=4, num_key_value_heads=2, head_dim=64, linear_num_key_heads=2,
                linear_num_value_heads=4, linear_key_head_dim=32, linear_value_head_dim=32,
                max_position_embeddings=256, tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25})
    torch.manual_seed(5)
    model = Qwen3_5ForConditionalGeneration(Qwen3_5Config(text_config=text, vision_config=dict(
        depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=256, patch_size=4,
        num_position_embeddings=16), tie_word_embeddings=False))
    g = torch.Generator().manual_seed(12)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("linear_attn.norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif "norm" in pname:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))  # scales by 1 + w
            elif "A_log" in pname or "dt_bias" in pname or "conv1d" in pname:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            else:
                scale = torch.exp(0.5 * torch.randn(p.shape[0], 1, generator=g)) if p.dim() == 2 else 1.0
                p.copy_(0.05 * scale * torch.randn(p.shape, generator=g))
    save(out, model, tok)
    # The same decoder saved text-only (model_type qwen3_5_text), as a compressed artifact is.
    from transformers import Qwen3_5ForCausalLM, Qwen3_5TextConfig

    text_only = Qwen3_5ForCausalLM(Qwen3_5TextConfig(**text)).eval()
    with torch.no_grad():
        text_only.model.load_state_dict(model.model.language_model.state_dict())
        text_only.lm_head.weight.copy_(model.lm_head.weight)
    save(out + "_text", text_only, tok)


# ---- plain PyTorch row quantizers, from the track's description (docs/contracts.md#the-compression-track) ----

def f16(t):
    return t.half().float()


def ref_binary(w):
    scale = f16(w.abs().mean(dim=1, keepdim=True))
    return torch.where(w >= 0, 1.0, -1.0) * scale


def ref_ternary(w):
    a = w.abs()
    keep = a > 0.7 * a.mean(dim=1, keepdim=True)
    scale = f16((a * keep).sum(dim=1, keepdim=True) / keep.sum(dim=1, keepdim=True).clamp(min=1))
    return torch.sign(w) * keep * scale


def ref_symmetric(w, qmax, group):
    rows, n = w.shape
    out = torch.empty_like(w)
    for start in range(0, n, group):
        g = w[:, start:start + group]
        scale = f16(g.abs().amax(dim=1, keepdim=True) / qmax)
        codes = torch.clamp(torch.round(g / scale.clamp(min=torch.finfo(torch.float64).tiny)), -qmax, qmax)
        out[:, start:start + group] = codes * scale
    return out


REF = {0: ref_binary, 1: ref_ternary, 2: lambda w: ref_symmetric(w, 7, 128),
       3: lambda w: ref_symmetric(w, 127, w.shape[1])}


def row_kinds(packed, rows):
    b = packed.to(torch.int64)
    kinds = torch.stack([(b >> (2 * i)) & 3 for i in range(4)], dim=1).flatten()
    return kinds[:rows]


def validator_ppl(model, tokenizer, docs, doc_tokens, batch):
    """The track's protocol: truncate each document, right-pad batches, masked token-weighted CE."""
    enc = [tokenizer(d, truncation=True, max_length=doc_tokens)["input_ids"] for d in docs]
    enc = [e for e in enc if len(e) >= 2]
    nll, count = doc_protocol_nll(model, enc, batch)
    return math.exp(nll / count), count, len(enc)


def check(artifact, source, eval_text, doc_tokens, batch):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    model = AutoModelForCausalLM.from_pretrained(artifact, trust_remote_code=True)
    src = AutoModelForCausalLM.from_pretrained(source)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=os.path.join(source, "tokenizer.json"))
    packed = load_file(os.path.join(artifact, "model.safetensors"))
    src_params = dict(src.named_parameters())
    worst, quantized, reshaped = 0.0, 0, 0
    params = dict(model.named_parameters())
    # Duplicated MLP units (Net2Net): pairs of units with identical gate and up rows. How alike
    # their quantized down columns are is what symmetry-breaking noise is meant to lower.
    dup_pairs, dup_equal, dup_total = 0, 0, 0
    for name, gate in params.items():
        if not name.endswith("gate_proj.weight"):
            continue
        up, down = params[name.replace("gate_proj", "up_proj")], params[name.replace("gate_proj", "down_proj")]
        first = {}
        for j in range(gate.shape[0]):
            key = (gate[j].detach().numpy().tobytes(), up[j].detach().numpy().tobytes())
            if key in first:
                i = first[key]
                dup_pairs += 1
                dup_equal += int((down[:, i] == down[:, j]).sum())
                dup_total += down.shape[0]
            else:
                first[key] = j
    for name, p in model.named_parameters():
        prefix = name[:-len(".weight")]
        if p.shape != src_params[name].shape:
            # Widened by the artifact: no source weight to quantize for comparison.
            reshaped += 1
            continue
        if prefix + ".row_kind" not in packed:
            # Stored in f16.
            worst = max(worst, (p.float() - f16(src_params[name].float())).abs().max().item())
            continue
        quantized += 1
        w = src_params[name].detach().float()
        kinds = row_kinds(packed[prefix + ".row_kind"], w.shape[0])
        ref = torch.zeros_like(w)
        for code, fn in REF.items():
            idx = (kinds == code).nonzero().squeeze(1)
            if idx.numel():
                ref[idx] = fn(w[idx])
        worst = max(worst, (p.float() - ref).abs().max().item())
    with open(eval_text, encoding="utf-8") as f:
        docs = [l for l in f.read().splitlines() if l.strip()]
    ppl, tokens, n_docs = validator_ppl(model, tokenizer, docs, doc_tokens, batch)
    print(json.dumps({
        "eval_ppl": ppl, "tokens": tokens, "docs": n_docs, "quantized_matrices": quantized,
        "max_weight_diff": worst, "reshaped_matrices": reshaped, "duplicate_units": dup_pairs,
        "duplicate_down_equal_frac": dup_equal / dup_total if dup_total else None,
        "param_count": sum(p.numel() for p in model.parameters()),
        "class": type(model).__name__,
    }))


REFERENCE_PARAMS = 27e9  # Qwen/Qwen3.6-27B, the live tracks' reference count


def validate(zip_path, eval_text, doc_tokens, batch, bpp):
    import tempfile
    import zipfile

    from transformers import AutoModelForCausalLM, AutoTokenizer

    size = os.path.getsize(zip_path)
    with tempfile.TemporaryDirectory() as d:
        with zipfile.ZipFile(zip_path) as z:
            z.extractall(d)
        model_dir = next(root for root, _, files in sorted(os.walk(d)) if "config.json" in files)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float16 if device == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True, local_files_only=True,
                                                     low_cpu_mem_usage=True, torch_dtype=dtype)
        model = model.to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        params = sum(p.numel() for p in model.parameters())
        with open(eval_text, encoding="utf-8") as f:
            docs = [l for l in f.read().splitlines() if l.strip()]
        ppl, tokens, n_docs = validator_ppl(model, tokenizer, docs, doc_tokens, batch)
    print(json.dumps({
        "eval_ppl": ppl, "tokens": tokens, "docs": n_docs, "param_count": params, "size_bytes": size,
        "gate_own": size * 8 <= math.ceil(params * bpp),
        "gate_reference": size * 8 <= math.ceil(REFERENCE_PARAMS * bpp),
        "gate_param_cap": params <= 16 * REFERENCE_PARAMS,
        "finite": math.isfinite(ppl), "tokenizer_class": type(tokenizer).__name__,
        "dtype": str(next(model.parameters()).dtype),
    }))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        wiki = sys.argv[sys.argv.index("--wikitext") + 1] if "--wikitext" in sys.argv else None
        make(sys.argv[2], wiki)
    elif sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
    elif sys.argv[1] == "validate":
        validate(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]))
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
