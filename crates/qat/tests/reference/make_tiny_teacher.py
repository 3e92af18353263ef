"""Makes a tiny Hugging Face Llama checkpoint for the QAT tests (run with $AUTOQAT_PYTHON).

    python make_tiny_teacher.py OUT_DIR [TRAIN_TEXT]

OUT_DIR gets config.json, model.safetensors (saved by transformers) and tokenizer.json
(a byte-level BPE trained here on TRAIN_TEXT, or on a generated text), and train.txt.
"""
import os
import sys

# The shared builders live in <repo>/python (this file is <repo>/crates/qat/tests/reference/).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "python"))
from autoqat_ref.tiny import generated_text, tiny_checkpoint  # noqa: E402

WORDS = "the cat sat on a mat and the dog ran to the park with a red ball"


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    if len(sys.argv) > 2:
        with open(sys.argv[2], encoding="utf-8") as f:
            text = f.read()
    else:
        text = generated_text(WORDS, n_lines=400, words_per_line=10)
    with open(os.path.join(out, "train.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    tiny_checkpoint(out, text, tokenizer_vocab=320, hidden_size=64, intermediate_size=128,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=True,
                    rope_theta=10000.0, save_kwargs=dict(safe_serialization=True))


if __name__ == "__main__":
    main()
