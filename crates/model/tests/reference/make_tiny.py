"""Builds the reference fixtures the Rust tests compare against (run with $AUTOQAT_PYTHON).

    python make_tiny.py OUT_DIR [--wikitext PATH] [--wiki-chars N]

Writes into OUT_DIR:
  tokenizer.json        a byte-level BPE trained here on the eval text (or a generated text)
  text.txt              the eval text (a prefix of WikiText-2 when given, else generated)
  <name>/               tiny random HF checkpoints saved with transformers, each with tokenizer.json:
                        llama   Llama, GQA 4:2, tied embeddings, Llama 3 rope scaling
                        qwen2   Qwen2, q/k/v bias, untied, GQA 4:1, sharded safetensors
                        qwen3   Qwen3, q/k RMSNorm, explicit head_dim, GQA 4:2
                        llama_bf16  the llama weights stored as bf16 on disk
  reference.safetensors fixed token ids, fp32 logits per model, the text's token ids
  reference.json        perplexity by the HF guide's algorithm per model and ctx/stride setting
"""

import argparse
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import LlamaForCausalLM

# The shared builders live in <repo>/python (this file is <repo>/crates/model/tests/reference/).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "python"))
from autoqat_ref.tiny import byte_level_bpe, generated_text, guide_loop, random_model, save  # noqa: E402

VOCAB = 384
SETTINGS = [(64, 64), (64, 32)]  # (ctx, stride): disjoint and overlapping windows
WORDS = "the a small model reads every token and predicts what comes next in plain text"


def randomize(model, seed):
    # HF init leaves biases at zero and norms at one; random values make every parameter matter.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))


def guide_ppl(model, ids, ctx, stride):
    """The HF guide's loop (batch 1) over the 1-D `ids`."""
    loss, n_tokens = guide_loop(model, ids.unsqueeze(0), ctx, stride)
    return {"eval_loss": loss, "eval_ppl": math.exp(loss), "tokens": n_tokens}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--wikitext")
    ap.add_argument("--wiki-chars", type=int, default=12000)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead

    if args.wikitext and os.path.exists(args.wikitext):
        with open(args.wikitext, encoding="utf-8") as f:
            text = f.read()[: args.wiki_chars]
        source = "wikitext"
    else:
        text = generated_text(WORDS, n_lines=250, words_per_line=12)
        source = "generated"
    with open(os.path.join(args.out, "text.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    tok = byte_level_bpe(text, VOCAB)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    text_ids = torch.tensor(tok.encode(text).ids, dtype=torch.int64)

    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=128, rms_norm_eps=1e-5,
                  attn_implementation="eager")
    # randomize() below overwrites every parameter, so transformers' init does not matter.
    models_ = {
        "llama": random_model(
            "llama", **common, num_key_value_heads=2, tie_word_embeddings=True,
            rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
            rope_theta=10000.0),
        "qwen2": random_model(
            "qwen2", **common, num_key_value_heads=1, tie_word_embeddings=False, rope_theta=1000000.0),
        "qwen3": random_model(
            "qwen3", **common, num_key_value_heads=2, head_dim=24, tie_word_embeddings=False,
            rope_theta=1000000.0),
    }
    fixed_ids = torch.randint(0, VOCAB, (2, 23), generator=torch.Generator().manual_seed(1))
    tensors = {"ids": fixed_ids, "text_ids": text_ids}
    ppl = {"source": source, "settings": [list(s) for s in SETTINGS], "models": {}}
    for i, (name, model) in enumerate(models_.items()):
        randomize(model, seed=10 + i)
        if model.config.tie_word_embeddings:
            model.tie_weights()
        model.eval()
        d = os.path.join(args.out, name)
        # The Qwen2 checkpoint is sharded to exercise model.safetensors.index.json.
        save(d, model, tok, max_shard_size="100KB" if name == "qwen2" else "1GB")
        with torch.no_grad():
            tensors[f"logits.{name}"] = model(fixed_ids).logits.float().contiguous()
        ppl["models"][name] = {f"{c}/{s}": guide_ppl(model, text_ids, c, s) for c, s in SETTINGS}

    # bf16 on disk: the same Llama rounded to bf16; its reference runs those weights in fp32.
    llama = models_["llama"].to(torch.bfloat16)
    d = os.path.join(args.out, "llama_bf16")
    save(d, llama, tok)
    # Reload from disk so the rope buffers are rebuilt in f32 (a .float() of the bf16 module
    # would keep inv_freq rounded to bf16).
    llama = LlamaForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    with torch.no_grad():
        tensors["logits.llama_bf16"] = llama(fixed_ids).logits.float().contiguous()

    save_file(tensors, os.path.join(args.out, "reference.safetensors"))
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(ppl, f, indent=1)


if __name__ == "__main__":
    main()
