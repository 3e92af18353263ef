"""Makes a tiny Hugging Face Llama checkpoint for the QAT tests (run with $AUTOQAT_PYTHON).

    python make_tiny_teacher.py OUT_DIR [TRAIN_TEXT]

OUT_DIR gets config.json, model.safetensors (saved by transformers) and tokenizer.json
(a byte-level BPE trained here on TRAIN_TEXT, or on a generated text), and train.txt.
"""
import os
import random
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM


def generated_text(n_lines=400, seed=0):
    rng = random.Random(seed)
    words = "the cat sat on a mat and the dog ran to the park with a red ball".split()
    return "\n".join(" ".join(rng.choice(words) for _ in range(10)) + "." for _ in range(n_lines)) + "\n"


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    text = open(sys.argv[2], encoding="utf-8").read() if len(sys.argv) > 2 else generated_text()
    with open(os.path.join(out, "train.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"], show_progress=False)
    tok.train_from_iterator([text], trainer)
    tok.save(os.path.join(out, "tokenizer.json"))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=True,
                      rope_theta=10000.0)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out, safe_serialization=True)


if __name__ == "__main__":
    main()
