"""Qwen3.5/3.6 hybrid fixtures for the Rust tests (run with $AUTOQAT_PYTHON).

    python make_qwen3_5.py OUT_DIR [--wikitext PATH]

Writes into OUT_DIR:
  text.txt              the eval text (a prefix of WikiText-2 when given, else generated)
  text/                 a tiny random Qwen3_5ForCausalLM saved text-only (model_type qwen3_5_text):
                        irregular layer_types (L F L L F), GQA 4:2 in full attention, partial
                        rotary 0.25, Gated DeltaNet with 2 query/key heads serving 4 value heads
  wrapped/              the same decoder inside Qwen3_5ForConditionalGeneration (model_type
                        qwen3_5, weights under model.language_model., a tiny vision encoder), plus
                        mtp.* tensors as the real checkpoints ship them
  reference.safetensors fixed ids (2 x 150: three chunks of 64), fp32 logits of each directory as
                        AutoModelForCausalLM loads it, and the text's token ids
  reference.json        perplexity by the HF guide's loop and by the track's document protocol,
                        sum(p.numel()) of AutoModelForCausalLM on each directory, and the greedy
                        continuation transformers' generate() gives a prompt (its cached decoding)
"""

import argparse
import json
import math
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, Qwen3_5Config, Qwen3_5ForConditionalGeneration

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "python"))
from autoqat_ref.tiny import (byte_level_bpe, doc_protocol_nll, generated_text, guide_loop, random_model,  # noqa: E402
                              save)

VOCAB = 384
WORDS = "the hybrid model keeps a state per head and forgets a little of it at every token it reads"
LAYER_TYPES = ["linear_attention", "full_attention", "linear_attention", "linear_attention", "full_attention"]
TEXT = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=len(LAYER_TYPES),
            layer_types=LAYER_TYPES, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=8,
            linear_conv_kernel_dim=4, max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                             "mrope_section": [1, 1, 0], "mrope_interleaved": True})
SETTINGS = [(64, 64), (160, 80)]  # (ctx, stride): windows of one chunk and of several
DOC_TOKENS, DOC_BATCH = 96, 8


def randomize(model, seed):
    """Every parameter random, around what it multiplies: zero-centred norms (1 + w), the gated
    norm around one, the rest small."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("linear_attn.norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif "norm" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif "A_log" in name:
                p.copy_(torch.empty(p.shape).uniform_(-1.0, 1.0, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))


def doc_ppl(model, docs):
    """The track's protocol: truncated documents, right-padded batches of 8 with a mask."""
    nll, count = doc_protocol_nll(model, docs, DOC_BATCH)
    return {"eval_loss": nll / count, "eval_ppl": math.exp(nll / count), "tokens": count}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--wikitext")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    if args.wikitext and os.path.exists(args.wikitext):
        with open(args.wikitext, encoding="utf-8") as f:
            text = f.read()[:8000]
        source = "wikitext"
    else:
        text = generated_text(WORDS, n_lines=120, words_per_line=14)
        source = "generated"
    with open(os.path.join(args.out, "text.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    tok = byte_level_bpe(text, VOCAB)
    text_ids = torch.tensor(tok.encode(text).ids, dtype=torch.int64)
    docs = [tok.encode(l).ids[:DOC_TOKENS] for l in text.splitlines() if l.strip()]
    docs = [d for d in docs if len(d) >= 2]

    text_model = random_model("qwen3_5", seed=0, **TEXT, attn_implementation="eager")
    randomize(text_model, seed=20)
    text_model.eval()
    save(os.path.join(args.out, "text"), text_model, tok)

    # The image-text wrapper around the same decoder, as Qwen3.6 ships.
    wrapper_cfg = Qwen3_5Config(text_config=dict(TEXT), vision_config=dict(
        depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=4,
        temporal_patch_size=2, spatial_merge_size=2, num_position_embeddings=16), tie_word_embeddings=False)
    wrapper = Qwen3_5ForConditionalGeneration(wrapper_cfg).eval()
    with torch.no_grad():
        wrapper.model.language_model.load_state_dict(text_model.model.state_dict())
        wrapper.lm_head.weight.copy_(text_model.lm_head.weight)
    wdir = os.path.join(args.out, "wrapped")
    save(wdir, wrapper, tok)
    # The released checkpoints carry a multi-token-prediction head that no transformers class
    # loads; add one so the loader must skip it.
    st_path = os.path.join(wdir, "model.safetensors")
    tensors = load_file(st_path)
    tensors["mtp.fc.weight"] = torch.randn(64, 128)
    tensors["mtp.layers.0.input_layernorm.weight"] = torch.randn(64)
    save_file(tensors, st_path, metadata={"format": "pt"})

    fixed_ids = torch.randint(0, VOCAB, (2, 150), generator=torch.Generator().manual_seed(1))
    out = {"ids": fixed_ids, "text_ids": text_ids}
    ref = {"source": source, "settings": [list(s) for s in SETTINGS], "doc_tokens": DOC_TOKENS,
           "doc_batch": DOC_BATCH, "models": {}}
    for name in ["text", "wrapped"]:
        model = AutoModelForCausalLM.from_pretrained(os.path.join(args.out, name), dtype=torch.float32).eval()
        with torch.no_grad():
            out[f"logits.{name}"] = model(fixed_ids).logits.float().contiguous()
        entry = {"param_count": sum(p.numel() for p in model.parameters()), "class": type(model).__name__}
        for c, s in SETTINGS:
            loss, n = guide_loop(model, text_ids.unsqueeze(0), c, s)
            entry[f"{c}/{s}"] = {"eval_loss": loss, "eval_ppl": math.exp(loss), "tokens": n}
        entry["docs"] = doc_ppl(model, docs)
        with torch.no_grad():
            prompt = text_ids[:70].unsqueeze(0)  # a prefill longer than one chunk
            gen = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=24,
                                 do_sample=False, eos_token_id=None, pad_token_id=0)
        entry["greedy"] = {"prompt": prompt[0].tolist(), "continuation": gen[0, prompt.size(1):].tolist()}
        ref["models"][name] = entry
    save_file(out, os.path.join(args.out, "reference.safetensors"))
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)


if __name__ == "__main__":
    main()
