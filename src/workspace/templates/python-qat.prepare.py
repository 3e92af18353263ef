"""prepare.py: the data, tokenizer, evaluation, budget and run files of this workspace.

Read-only: the research loop lets its proposer edit train.py only (autoqat.toml's
mutable_paths), so what a trial is scored on cannot move. train.py imports this file:

    batches(seed)        the training budget: STEPS batches of BATCH_SIZE x SEQ_LEN tokens, once
    evaluate(model)      the eval protocol of `autoqat trial` and `autoqat eval`: sliding windows
                         of EVAL_CTX tokens every EVAL_STRIDE over the first EVAL_MAX_TOKENS tokens
                         of EVAL_TEXT, shifted next-token cross entropy, token-weighted (the
                         Hugging Face guide "Perplexity of fixed-length models")
    Run(run_dir)         steps.tsv and summary.json with the columns and keys of `autoqat trial`;
                         the steps and tokens it reports are the batches handed out, not a claim

`python prepare.py` checks the layout and scores the full-precision model; `python prepare.py
--eval DIR [--text FILE]` scores any Hugging Face directory and prints one JSON line.
"""
import json
import math
import os
import random
import sys
import time

try:
    import torch
    import torch.nn.functional as F
    import transformers
    from tokenizers import Tokenizer
except ImportError as e:
    sys.exit(
        f"prepare.py: cannot import {e.name} with {sys.executable} (hint: `{sys.executable} -m pip install "
        "transformers` (and torch), or point AUTOQAT_PYTHON at a Python that has them; `autoqat doctor` "
        "shows which one trials use)"
    )

# The goalposts: every trial gets this model, these texts, this budget and this eval protocol.
MODEL_DIR = "teacher"  # Hugging Face directory of the full-precision model (config, weights, tokenizer.json)
TRAIN_TEXT = "data/train.txt"
EVAL_TEXT = "data/eval.txt"
SEQ_LEN = {{seq_len}}  # training tokens per sequence
BATCH_SIZE = {{batch}}  # sequences per optimizer step
STEPS = {{steps}}  # optimizer steps per trial
EVAL_EVERY = {{eval_every}}  # evaluate every this many steps (and at the end)
EVAL_CTX = {{seq_len}}  # tokens per eval window (autoqat's data.eval_ctx)
EVAL_STRIDE = {{seq_len}}  # tokens between window starts; = EVAL_CTX: disjoint windows (data.eval_stride)
EVAL_MAX_TOKENS = {{eval_max_tokens}}  # score the first this many tokens of the eval text; 0 = all (data.eval_max_tokens)
EVAL_BATCH = 4  # windows per forward pass (speed only)

STEPS_COLUMNS = ["step", "lambda", "train_loss", "train_ppl", "eval_ppl", "eval_bpb", "lr", "time_s",
                 "best_ppl", "q_neg1", "q_zero", "q_pos1"]


def device():
    """cuda > mps > cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def tokenizer(model_dir=MODEL_DIR):
    """The model's tokenizer.json, read by the library autoqat reads it with."""
    return Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))


def load_model(model_dir=MODEL_DIR):
    """The full-precision model in fp32, on the device."""
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model.to(device())


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def eval_tokens(tok, text, max_tokens=EVAL_MAX_TOKENS):
    """The scored ids and the UTF-8 bytes they cover, as autoqat cuts them: the whole text, or
    its first `max_tokens` tokens (a prefix at least one token longer is encoded, so that the
    last kept token is not cut by the prefix; bytes up to the end of the last kept token)."""
    data = text.encode("utf-8")
    if max_tokens == 0:
        return tok.encode(text).ids, len(data)

    def boundary(cut):
        while cut < len(data) and (data[cut] & 0xC0) == 0x80:
            cut += 1
        return cut

    cut = boundary(min(len(data), max_tokens * 16 + 1024))
    while True:
        prefix = data[:cut].decode("utf-8")
        enc = tok.encode(prefix)
        if len(enc.ids) > max_tokens or cut == len(data):
            n = min(max_tokens, len(enc.ids))
            if n == len(enc.ids):
                return enc.ids, cut
            end_char = enc.offsets[n - 1][1] if n > 0 else 0
            return enc.ids[:n], len(prefix[:end_char].encode("utf-8"))
        cut = boundary(min(len(data), cut * 2))


_EVAL = {}


@torch.no_grad()
def evaluate(model, text_path=EVAL_TEXT, ctx=EVAL_CTX, stride=EVAL_STRIDE, max_tokens=EVAL_MAX_TOKENS, tok=None):
    """eval_loss (nats/token), eval_ppl, eval_bpb, tokens, bytes of `model` on the eval text.

    The guide's loop: windows [begin, begin + ctx) every `stride` tokens; a window scores its
    last trg_len = end - prev_end labels, their mean loss weighted by trg_len - 1 (the guide's
    count); a window of weight 0 is skipped. stride = ctx: the plain token-weighted mean."""
    key = (text_path, ctx, stride, max_tokens)
    if key not in _EVAL:
        _EVAL[key] = eval_tokens(tok or tokenizer(), _read(text_path), max_tokens)
    ids, n_bytes = _EVAL[key]
    if len(ids) < 2:
        raise ValueError(f"{text_path} has {len(ids)} token(s); perplexity needs at least 2")
    if not (2 <= ctx and 1 <= stride <= ctx):
        raise ValueError(f"eval ctx {ctx} / stride {stride}: need ctx >= 2 and 1 <= stride <= ctx")
    windows, prev_end, begin = [], 0, 0
    while begin < len(ids):
        end = min(begin + ctx, len(ids))
        windows.append((begin, end, end - prev_end))
        prev_end = end
        if end == len(ids):
            break
        begin += stride
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    nll_sum, n_tokens, i = 0.0, 0, 0
    while i < len(windows):
        length = windows[i][1] - windows[i][0]
        j = i + 1
        while j < len(windows) and j - i < EVAL_BATCH and windows[j][1] - windows[j][0] == length:
            j += 1
        group = windows[i:j]
        x = torch.tensor([ids[b:e] for b, e, _ in group], device=dev)
        logits = model(input_ids=x).logits[:, :-1].float()
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="none")
        nll = nll.view(len(group), length - 1).double().cpu()
        for row, (b, e, trg_len) in zip(nll, group):
            weight = trg_len - 1
            if weight == 0:
                continue
            first = max(length - trg_len, 1)  # first scored label position
            nll_sum += row[first - 1:].mean().item() * weight
            n_tokens += weight
        i = j
    model.train(was_training)
    loss = nll_sum / n_tokens
    return {"eval_loss": loss, "eval_ppl": math.exp(loss), "eval_bpb": loss * n_tokens / (n_bytes * math.log(2)),
            "tokens": n_tokens, "bytes": n_bytes}


USED = {"steps": 0, "tokens": 0}  # what batches() has handed out: the summary's steps and tokens


def train_ids(tok=None):
    """The ids of the train text: the token cache `autoqat prepare` writes beside it (u32 ids in
    `<text>.tokens`, described by `<text>.tokens.json`) when it is newer than the text and the
    tokenizer and covers the text's bytes, else encoded here."""
    cache, meta = TRAIN_TEXT + ".tokens", TRAIN_TEXT + ".tokens.json"
    try:
        with open(meta) as f:
            m = json.load(f)
        newest = max(os.path.getmtime(TRAIN_TEXT), os.path.getmtime(os.path.join(MODEL_DIR, "tokenizer.json")))
        if os.path.getmtime(meta) >= newest and m["bytes"] == os.path.getsize(TRAIN_TEXT):
            return torch.from_file(cache, size=m["tokens"], dtype=torch.int32).long()
    except (OSError, KeyError, ValueError, RuntimeError):
        pass
    return torch.tensor((tok or tokenizer()).encode(_read(TRAIN_TEXT)).ids, dtype=torch.long)


def batches(seed, tok=None):
    """The training budget: STEPS batches (x, y) of BATCH_SIZE random windows of SEQ_LEN tokens
    of the train text, y shifted by one; one pass per trial, nothing more."""
    if USED["steps"]:
        raise RuntimeError("prepare.batches() was called twice: the budget is one pass of STEPS batches")
    ids = train_ids(tok)
    if len(ids) <= SEQ_LEN + 1:
        raise ValueError(f"{TRAIN_TEXT} has {len(ids)} tokens; a training window needs {SEQ_LEN + 1}")
    rng = random.Random(seed)
    dev = device()
    for _ in range(STEPS):
        starts = [rng.randrange(len(ids) - SEQ_LEN - 1) for _ in range(BATCH_SIZE)]
        chunk = torch.stack([ids[s:s + SEQ_LEN + 1] for s in starts]).to(dev)
        USED["steps"] += 1
        USED["tokens"] += BATCH_SIZE * SEQ_LEN
        yield chunk[:, :-1], chunk[:, 1:]


def peak_mem_mb():
    """Peak resident memory of this process in MB (VmHWM), NaN where unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


class Run:
    """A run directory: steps.tsv (one row per eval, flushed at once for the pruner and `autoqat
    status`) and summary.json, with the columns and keys of `autoqat trial`. An exception that
    ends the trial before its summary writes one with status crash and the exception."""

    def __init__(self, run_dir):
        self.dir = run_dir
        os.makedirs(run_dir, exist_ok=True)
        self.start = time.time()
        self.best = math.inf
        self.done = False
        with open(os.path.join(run_dir, "steps.tsv"), "w") as f:
            f.write("\t".join(STEPS_COLUMNS) + "\n")
        hook = sys.excepthook

        def crash(kind, value, tb):
            if not self.done:
                self.summary("crash", error=f"{kind.__name__}: {value}")
            hook(kind, value, tb)

        sys.excepthook = crash

    def row(self, step, lam, train_loss, ev, lr, q):
        """One steps.tsv row: `ev` from evaluate(), `q` the (-1, 0, +1) fractions."""
        self.best = min(self.best, ev["eval_ppl"])
        cells = [str(step), f"{lam:.6f}", f"{train_loss:.6f}", f"{math.exp(min(train_loss, 700)):.4f}",
                 f"{ev['eval_ppl']:.4f}", f"{ev['eval_bpb']:.6f}", f"{lr:.6e}", f"{time.time() - self.start:.2f}",
                 f"{self.best:.4f}", f"{q[0]:.6f}", f"{q[1]:.6f}", f"{q[2]:.6f}"]
        with open(os.path.join(self.dir, "steps.tsv"), "a") as f:
            f.write("\t".join(cells) + "\n")

    def summary(self, status, ev=None, train_loss=None, q=(None, None, None), fp_ppl=None, error=None):
        """summary.json, written whole (renamed into place); NaN and Inf are written as null. Its
        steps and tokens are what batches() handed out."""
        def num(v):
            return v if v is not None and math.isfinite(v) else None
        ev = ev or {}
        s = {"status": status, "eval_ppl": num(ev.get("eval_ppl")), "eval_bpb": num(ev.get("eval_bpb")),
             "eval_loss": num(ev.get("eval_loss")), "train_loss": num(train_loss), "steps": USED["steps"], "tokens": USED["tokens"],
             "time_s": time.time() - self.start, "peak_mem_mb": num(peak_mem_mb()), "device": device().type,
             "q_neg1": num(q[0]), "q_zero": num(q[1]), "q_pos1": num(q[2]), "fp_ppl": num(fp_ppl), "error": error,
             "artifact_size_bytes": None, "bits_per_param": None}
        path = os.path.join(self.dir, "summary.json")
        with open(path + ".tmp", "w") as f:
            json.dump(s, f, indent=2)
        os.replace(path + ".tmp", path)
        self.done = True
        return s


def export(model, state_dict, out_dir, model_dir=MODEL_DIR):
    """A Hugging Face directory of `state_dict` (the quantized weights, dequantized) with the
    tokenizer: transformers and `autoqat eval --model DIR` load it."""
    model.save_pretrained(out_dir, state_dict=state_dict)
    with open(os.path.join(model_dir, "tokenizer.json"), "rb") as src, \
            open(os.path.join(out_dir, "tokenizer.json"), "wb") as dst:
        dst.write(src.read())


def main(argv):
    """`python prepare.py`: check the layout and score MODEL_DIR; `--eval DIR [--text F]`: one
    JSON line with the metrics of DIR under this protocol."""
    model_dir, text = MODEL_DIR, EVAL_TEXT
    if "--eval" in argv:
        model_dir = argv[argv.index("--eval") + 1]
    if "--text" in argv:
        text = argv[argv.index("--text") + 1]
    for path in [os.path.join(model_dir, "config.json"), os.path.join(model_dir, "tokenizer.json"), TRAIN_TEXT, text]:
        if not os.path.exists(path):
            sys.exit(f"prepare.py: {path} is missing (hint: `autoqat prepare` fills teacher/ and data/)")
    ev = evaluate(load_model(model_dir), text_path=text, tok=tokenizer(model_dir))
    print(json.dumps(ev))


if __name__ == "__main__":
    main(sys.argv[1:])
