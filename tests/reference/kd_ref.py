"""Reference side of the distillation-traces tests (run with $AUTOQAT_PYTHON).

    python kd_ref.py make OUT_DIR [--wikitext PATH]
        a small teacher pre-trained here with plain PyTorch on real text (so its traces carry
        something a student can learn), its byte-level BPE, a second BPE with another
        vocabulary (for projection), prompts, held-out prompts, train and eval text.

    python kd_ref.py project TOKENIZER_JSON POSITIONS_JSON TOP_K
        the projection of docs/contracts.md#the-distillation-traces-track written from its description: each teacher token maps to
        the FIRST sub-token of its student encoding (no special tokens), collisions merge with
        log-sum-exp, the rest is Other; with the cleaning rules of the hardening issue (see
        project()); prints the projected rows as JSON.

    python kd_ref.py check-traces TRACE_DIR TOKENIZER_JSON TOP_K
        reads the shards with pyarrow and counts rows that break the traces' invariants.
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


def gpt2_byte_chars():
    """GPT-2's byte-level alphabet: byte -> the character a byte-level BPE writes for it."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, n = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return chars


OTHER_FLOOR = 1e-6


def project(tok_path, positions_path, top_k):
    """The projection rules, written from docs/contracts.md#the-distillation-traces-track and the hardening issue: alternatives once
    per token, at most top_k by logprob; first student sub-token of the exact bytes (through the
    byte alphabet for a piece of a character when the student is byte-level; U+FFFD unmappable);
    collisions merged by log-sum-exp; a Top-K mass that reaches 1 by rounding rescaled to leave
    OTHER_FLOOR."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tok_path)
    chars = gpt2_byte_chars()
    vocab = tok.get_vocab()
    byte_level = all(c in vocab for c in chars.values())

    def first_id(b):
        try:
            s = bytes(b).decode("utf-8")
        except UnicodeDecodeError:
            if not byte_level:
                return None
            toks = tok.model.tokenize("".join(chars[x] for x in b))
            return toks[0].id if toks else None
        if not s or "\ufffd" in s:
            return None
        ids = tok.encode(s, add_special_tokens=False).ids
        return ids[0] if ids else None

    rows = []
    for pos in json.load(open(positions_path)):
        alts, seen = [], set()
        for b, lp in sorted(pos["top"], key=lambda t: -t[1]):
            if tuple(b) not in seen:
                seen.add(tuple(b))
                alts.append((b, lp))
        alts = alts[:top_k]
        merged = {}
        for b, lp in alts:
            i = first_id(b)
            if i is None:
                continue
            merged[i] = lp if i not in merged else float(torch.logaddexp(torch.tensor(merged[i], dtype=torch.float64),
                                                                         torch.tensor(lp, dtype=torch.float64)))
        kept = sum(math.exp(lp) for lp in merged.values())
        rest = 1.0 - kept
        if merged and rest < OTHER_FLOOR and kept <= 1.0 + 1e-3:
            shift = math.log(kept / (1.0 - OTHER_FLOOR))
            merged = {k: v - shift for k, v in merged.items()}
            rest = OTHER_FLOOR
        order = sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))
        s = first_id(pos["sample"])
        rows.append({"ids": [k for k, _ in order], "logprobs": [v for _, v in order],
                     "other": math.log(rest) if 0.0 < rest < 1.0 else None,
                     "sample": -1 if s is None else s})
    print(json.dumps(rows))


def check_traces(trace_dir, tok_path, top_k):
    """Reads every shard of a trace directory with pyarrow and counts the rows that break the
    traces' invariants: a valid row's Top-K plus Other must be a distribution, its ids distinct
    and at most top_k, and its sampled id the first student sub-token of its text (when the text
    is whole UTF-8)."""
    import glob

    import pyarrow.parquet as pq
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tok_path)
    replacement = tok.encode("\ufffd", add_special_tokens=False).ids
    out = {"rows": 0, "valid": 0, "max_lse_err": 0.0, "duplicate_ids": 0, "over_k": 0, "id_mismatch": 0,
           "replacement_ids": 0}
    for path in sorted(glob.glob(os.path.join(trace_dir, "shard-*.parquet"))):
        for r in pq.read_table(path).to_pylist():
            out["rows"] += 1
            valid = r["teacher_sample_id"] >= 0 and math.isfinite(r["other_logprob"]) and r["other_logprob"] < 0
            if replacement and replacement[0] in r["topk_ids"] and "\ufffd" not in r["teacher_sample_text"]:
                out["replacement_ids"] += 1
            if not valid:
                continue
            out["valid"] += 1
            lse = math.log(sum(math.exp(x) for x in r["topk_logprobs"] + [r["other_logprob"]]))
            out["max_lse_err"] = max(out["max_lse_err"], abs(lse))
            out["duplicate_ids"] += int(len(set(r["topk_ids"])) != len(r["topk_ids"]))
            out["over_k"] += int(len(r["topk_ids"]) > top_k)
            text = r["teacher_sample_text"]
            if text and "\ufffd" not in text:
                ids = tok.encode(text, add_special_tokens=False).ids
                out["id_mismatch"] += int(not ids or ids[0] != r["teacher_sample_id"])
    print(json.dumps(out))


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
        project(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif cmd == "check-traces":
        check_traces(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(f"unknown command {cmd}")
