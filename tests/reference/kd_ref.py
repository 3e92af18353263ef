"""Reference side of the distillation-traces tests (run with $AUTOQAT_PYTHON).

    python kd_ref.py make OUT_DIR [--wikitext PATH]
        a small teacher pre-trained here with plain PyTorch on real text (so its traces carry
        something a student can learn), its byte-level BPE, a second BPE with another
        vocabulary (for projection), prompts, held-out prompts, train and eval text.

    python kd_ref.py project TOKENIZER_JSON POSITIONS_JSON
        the projection of DESIGN.md 9 written from its description: each teacher token maps to
        the FIRST sub-token of its student encoding (no special tokens), collisions merge with
        log-sum-exp, the rest is Other; prints the projected rows as JSON.
"""

import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
from autoqat_ref.tiny import byte_level_bpe, generated_text, random_model, save  # noqa: E402

WORDS = ("the little model reads a story and guesses the next word while the teacher knows "
         "which words follow which and the student learns it from the traces")


def make(out, wikitext=None):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    if wikitext:
        with open(wikitext, encoding="utf-8") as f:
            text = f.read()[:400000]
    else:
        text = generated_text(WORDS, 6000, 14, seed=3)
    lines = [l.strip() for l in text.splitlines() if len(l.split()) >= 12]
    n = len(lines)
    train_lines, eval_lines = lines[: n * 8 // 10], lines[n * 8 // 10:]
    with open(os.path.join(out, "train.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(train_lines) + "\n")
    with open(os.path.join(out, "eval.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(eval_lines[16:136]) + "\n")
    # Prompts: the opening words of training lines; held-out ones from the eval lines.
    with open(os.path.join(out, "prompts.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(" ".join(l.split()[:6]) for l in train_lines[:96]) + "\n")
    with open(os.path.join(out, "heldout.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(" ".join(l.split()[:6]) for l in eval_lines[:16]) + "\n")

    tok = byte_level_bpe("\n".join(train_lines), 512)
    other = byte_level_bpe("\n".join(train_lines[::-1]), 300)
    os.makedirs(os.path.join(out, "other_tok"), exist_ok=True)
    other.save(os.path.join(out, "other_tok", "tokenizer.json"))

    model = random_model("llama", seed=1, vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=176,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=True, eos_token_id=None, bos_token_id=None)
    ids = torch.tensor(tok.encode("\n".join(train_lines)).ids)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    seq, batch, steps = 64, 16, 400
    g = torch.Generator().manual_seed(2)
    model.train()
    for step in range(steps):
        starts = torch.randint(0, len(ids) - seq - 1, (batch,), generator=g)
        x = torch.stack([ids[s:s + seq + 1] for s in starts])
        logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        for group in opt.param_groups:
            group["lr"] = 3e-3 * min(1.0, (step + 1) / 40) * 0.5 * (1 + math.cos(math.pi * step / steps))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    save(os.path.join(out, "teacher"), model, tok)
    with open(os.path.join(out, "teacher", "trained.json"), "w") as f:
        json.dump({"final_train_loss": loss.item()}, f)
    with open(os.path.join(out, "done.json"), "w") as f:
        json.dump({"lines": n, "source": "wikitext" if wikitext else "generated"}, f)


def project(tok_path, positions_path):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tok_path)

    def first_id(b):
        try:
            s = bytes(b).decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not s:
            return None
        ids = tok.encode(s, add_special_tokens=False).ids
        return ids[0] if ids else None

    rows = []
    for pos in json.load(open(positions_path)):
        merged = {}
        for b, lp in pos["top"]:
            i = first_id(b)
            if i is None:
                continue
            merged[i] = lp if i not in merged else float(torch.logaddexp(torch.tensor(merged[i], dtype=torch.float64),
                                                                         torch.tensor(lp, dtype=torch.float64)))
        kept = sum(math.exp(lp) for lp in merged.values())
        rest = 1.0 - kept
        order = sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))
        s = first_id(pos["sample"])
        rows.append({"ids": [k for k, _ in order], "logprobs": [v for _, v in order],
                     "other": math.log(rest) if 0.0 < rest < 1.0 else None,
                     "sample": -1 if s is None else s})
    print(json.dumps(rows))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        args = sys.argv[2:]
        wt = None
        if "--wikitext" in args:
            i = args.index("--wikitext")
            wt = args[i + 1]
            args = args[:i] + args[i + 2:]
        make(args[0], wt)
    elif cmd == "project":
        project(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {cmd}")
