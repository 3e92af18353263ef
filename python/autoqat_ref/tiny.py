"""Tiny Hugging Face checkpoints for the reference scripts and the benchmarks: a byte-level BPE
tokenizer trained on a text, random-weight Llama/Qwen models saved with transformers, and the
loop of the HF guide "Perplexity of fixed-length models" that measures them.

Callers pass their own sizes and seeds, so a fixture or a benchmark holds the same bytes
whoever builds it. The Rust tests key their fixture caches on this file as well as on their
script, so an edit here regenerates the fixtures.
"""

import os
import random

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM,
                          Qwen3_5ForCausalLM, Qwen3_5TextConfig, Qwen3Config, Qwen3ForCausalLM)

ENDOFTEXT = "<|endoftext|>"

ARCHS = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
    "qwen3_5": (Qwen3_5TextConfig, Qwen3_5ForCausalLM),
}


def generated_text(words, n_lines, words_per_line, seed=0):
    """Lines of `words` (a space-separated string) drawn at random, each ending in a period:
    a corpus for when no real text is at hand."""
    rng = random.Random(seed)
    words = words.split()
    lines = [" ".join(rng.choice(words) for _ in range(words_per_line)) + "." for _ in range(n_lines)]
    return "\n".join(lines) + "\n"


def byte_level_bpe(text, vocab_size, special_tokens=(ENDOFTEXT,)):
    """A byte-level BPE (GPT-2 pre-tokenizer and decoder, no prefix space) trained on `text`."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=list(special_tokens), show_progress=False)
    tok.train_from_iterator([text], trainer)
    return tok


def random_model(arch="llama", seed=0, **config):
    """A `arch` model ("llama", "qwen2", "qwen3", "qwen3_5") with transformers' own init under `seed`."""
    config_cls, model_cls = ARCHS[arch]
    torch.manual_seed(seed)
    return model_cls(config_cls(**config))


def save(out, model, tokenizer, **save_kwargs):
    """Saves the model as transformers does (`save_kwargs` go to `save_pretrained`) and the
    tokenizer as `tokenizer.json` beside it."""
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, **save_kwargs)
    tokenizer.save(os.path.join(out, "tokenizer.json"))


def tiny_checkpoint(out, text, tokenizer_vocab, arch="llama", seed=0, special_tokens=(ENDOFTEXT,),
                    save_kwargs=None, **config):
    """Trains a tokenizer on `text` and saves it into `out` with a random `arch` model built from
    `config` (whose `vocab_size` defaults to the tokenizer's). Returns (tokenizer, model)."""
    tok = byte_level_bpe(text, tokenizer_vocab, special_tokens)
    config.setdefault("vocab_size", tok.get_vocab_size())
    model = random_model(arch, seed, **config)
    save(out, model, tok, **(save_kwargs or {}))
    return tok, model


def guide_loop(model, ids, ctx, stride):
    """The HF guide's sliding-window loop over `ids` (shape (1, T)): returns the mean NLL per
    scored token and the number of scored tokens. Windows that score nothing are skipped."""
    seq_len = ids.size(1)
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    for begin in range(0, seq_len, stride):
        end = min(begin + ctx, seq_len)
        trg_len = end - prev_end
        input_ids = ids[:, begin:end]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target_ids).loss
        # The model shifts labels by one, so each row scores one token fewer than it marks.
        n = (target_ids != -100).sum().item() - target_ids.size(0)
        if n > 0:
            # .item() of an fp32 scalar is exact in a Python float (a double).
            nll_sum += loss.item() * n
            n_tokens += n
        prev_end = end
        if end == seq_len:
            break
    return nll_sum / n_tokens, n_tokens


def doc_protocol_nll(model, docs, batch):
    """The compression track's document protocol over `docs` (lists of token ids, already
    truncated): batches of `batch` right-padded with an attention mask, the shifted next-token
    cross entropy masked on padding. Returns (summed NLL, tokens scored)."""
    nll, count = 0.0, 0
    for i in range(0, len(docs), batch):
        group = docs[i:i + batch]
        width = max(len(e) for e in group)
        ids = torch.zeros(len(group), width, dtype=torch.long)
        mask = torch.zeros(len(group), width, dtype=torch.long)
        for j, e in enumerate(group):
            ids[j, :len(e)] = torch.tensor(e)
            mask[j, :len(e)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float().cpu()
        labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels.reshape(-1),
                                                 ignore_index=-100, reduction="sum")
        nll += loss.double().item()
        count += int((labels != -100).sum())
    return nll, count
