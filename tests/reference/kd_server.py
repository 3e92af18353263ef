"""A loopback OpenAI-compatible chat-completions server whose answers and logprobs come from a
real (tiny) Hugging Face model, for the Rust tests of `autoqat kd collect` / `autoqat kd baseline`.
Those commands talk to a teacher over HTTP; testing them against a mock with canned numbers
would not show that what they store matches what a model actually computed, so this server runs
the checkpoint with transformers (greedy, float32, one thread) and reports every generated
token's logprob, its top alternatives and its exact bytes, and can misbehave on demand (fail the
first requests, demand an API key, answer slowly) to exercise retries, auth and timeouts. It uses
only the standard library plus torch and transformers, so it runs from $AUTOQAT_PYTHON as is.

    python kd_server.py MODEL_DIR --port-file FILE [--host 127.0.0.1] [--port 0]
        [--fail-first N] [--fail-status 429] [--require-key KEY] [--delay-s 0] [--quirk Q ...]

Quirks reproduce what real endpoints were seen to send (the numbers stay the model's own):
    confident   the greedy token at logprob 0.0 and its alternatives at -17 and below, as an API
                reports a near-certain position (the Top-K then sums to just over 1)
    positive    the first alternative at a positive log-probability (a broken server)
    duplicates  the second alternative listed twice
    extra-top   three more alternatives than asked for
    lossy       the last alternative replaced by a piece of a multi-byte character (the byte
                token 0xC3), sent as llama.cpp does: token "\ufffd", bytes null
    echo-key    the request's Authorization header echoed as the first generated token
    stall       half the body, then silence (until the client gives up)
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

MAX_TOP_LOGPROBS = 20  # OpenAI's limit; a client asking for more should see the 400 it would get there


def bytes_to_unicode():
    """GPT-2's table from each byte to the printable character a byte-level BPE stores it as."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


UNICODE_TO_BYTE = {c: b for b, c in bytes_to_unicode().items()}


class Teacher:
    def __init__(self, model_dir):
        torch.set_num_threads(1)
        self.name = os.path.basename(os.path.normpath(model_dir))
        self.tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"))
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        eos = self.model.config.eos_token_id
        self.eos = set() if eos is None else set(eos) if isinstance(eos, (list, tuple)) else {eos}
        # all_special_ids stays empty when no tokenizer_config.json names bos/eos, yet a token the
        # tokenizers library marked special (or added) is still whole text, not byte-level chars.
        self.literal_ids = set(self.tok.all_special_ids) | set(self.tok.added_tokens_decoder) \
            | set(self.tok.get_added_vocab().values())
        # One forward at a time: torch is limited to one thread anyway, and serializing keeps
        # concurrent requests from interleaving in ways that could perturb results.
        self.lock = threading.Lock()
        self._bytes_cache = {}

    def token_bytes(self, tid):
        b = self._bytes_cache.get(tid)
        if b is None:
            piece = self.tok.convert_ids_to_tokens(tid)
            if tid in self.literal_ids:
                b = piece.encode("utf-8")
            else:
                # A char outside the table cannot come from a byte-level vocab, but if one does,
                # its own UTF-8 is the closest truth available.
                b = b"".join(bytes([UNICODE_TO_BYTE[c]]) if c in UNICODE_TO_BYTE else c.encode("utf-8")
                             for c in piece)
            self._bytes_cache[tid] = b
        return b

    def token_entry(self, tid, logprob):
        b = self.token_bytes(tid)
        return {"token": b.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(b)}

    def generate(self, text, max_tokens, top_n):
        prompt = self.tok(text)["input_ids"]
        if not prompt:
            raise BadRequest("the prompt tokenizes to no tokens", "messages")
        ids = list(prompt)
        generated, entries, finish = [], [], "length"
        with self.lock, torch.inference_mode():
            for _ in range(max_tokens):
                logits = self.model(torch.tensor([ids], dtype=torch.long)).logits[0, -1].float()
                logp = torch.log_softmax(logits, -1)
                nxt = int(torch.argmax(logp))
                if nxt in self.eos:
                    finish = "stop"
                    break
                entry = self.token_entry(nxt, float(logp[nxt]))
                if top_n > 0:
                    vals, idx = torch.topk(logp, min(top_n, logp.numel()))
                    entry["top_logprobs"] = [self.token_entry(int(i), float(v)) for v, i in zip(vals, idx)]
                else:
                    entry["top_logprobs"] = []
                entries.append(entry)
                generated.append(nxt)
                ids.append(nxt)
        # Spaces are left as the tokens spell them, so the content is exactly the concatenated
        # token bytes (when they form valid UTF-8 and no special token is skipped).
        content = self.tok.decode(generated, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return content, entries, finish, len(prompt), len(generated)


class BadRequest(Exception):
    def __init__(self, message, param=None):
        super().__init__(message)
        self.param = param


def error_body(message, etype, code=None, param=None):
    return {"error": {"message": message, "type": etype, "param": param, "code": code}}


def message_text(content):
    if isinstance(content, str):
        return content
    # OpenAI also accepts a list of content parts; only text parts mean anything to this model.
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise BadRequest("each message needs string content", "messages")


def int_param(body, key, default, lo, hi):
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise BadRequest(f"{key} must be an integer in [{lo}, {hi}]", key)
    return v


def make_handler(teacher, args, state):
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1 keep-alive, as a real endpoint offers; every response carries Content-Length.
        protocol_version = "HTTP/1.1"
        server_version = "kd_server/1"

        def log_message(self, fmt, *a):
            # The default line would go to stderr unnumbered; the tests want one counted line.
            pass

        def send_json(self, status, obj, extra_headers=()):
            data = json.dumps(obj).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra_headers:
                self.send_header(k, v)
            note = ""
            try:
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                # A client that timed out has hung up: expected in the timeout tests, so one
                # line rather than socketserver's traceback.
                self.close_connection = True
                note = " (client gone)"
            with state["lock"]:
                state["served"] += 1
                n = state["served"]
            # Method, path and status only: the Authorization header must never reach a log.
            print(f"kd_server: {n} {self.command} {self.path} {status}{note}", file=sys.stderr, flush=True)

        def read_body(self):
            # Read the whole body even when the answer is an error, so the connection stays usable.
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_GET(self):
            if self.path.split("?")[0] == "/v1/models":
                self.send_json(200, {"object": "list", "data": [
                    {"id": teacher.name, "object": "model", "created": 0, "owned_by": "kd_server"}]})
            else:
                self.send_json(404, error_body(f"no route GET {self.path}", "invalid_request_error", "not_found"))

        def do_POST(self):
            raw = self.read_body()
            if args.delay_s > 0:
                time.sleep(args.delay_s)
            with state["lock"]:
                state["posts"] += 1
                post_no = state["posts"]
            if post_no <= args.fail_first:
                self.send_json(args.fail_status,
                               error_body(f"injected failure {post_no} of {args.fail_first}",
                                          "requests", "rate_limit_exceeded"),
                               [("Retry-After", "0")])
                return
            if args.require_key is not None and self.headers.get("Authorization") != f"Bearer {args.require_key}":
                self.send_json(401, error_body("Incorrect API key provided.", "invalid_request_error",
                                               "invalid_api_key"))
                return
            if self.path.split("?")[0] != "/v1/chat/completions":
                self.send_json(404, error_body(f"no route POST {self.path}", "invalid_request_error", "not_found"))
                return
            try:
                body = json.loads(raw.decode("utf-8"))
                if not isinstance(body, dict):
                    raise BadRequest("the body must be a JSON object")
                self.complete(body)
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                self.send_json(400, error_body(f"bad JSON body: {e}", "invalid_request_error"))
            except BadRequest as e:
                self.send_json(400, error_body(str(e), "invalid_request_error", param=e.param))

        def complete(self, body):
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
                raise BadRequest("messages must be a non-empty list of objects", "messages")
            text = "\n".join(message_text(m.get("content")) for m in messages)
            key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
            max_tokens = int_param(body, key, 16, 1, 1 << 20)
            want_logprobs = body.get("logprobs") is True
            top_n = int_param(body, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS)
            if body.get("top_logprobs") is not None and not want_logprobs:
                # OpenAI refuses this too; accepting it would hide a client that forgot logprobs.
                raise BadRequest("logprobs must be true when top_logprobs is set", "top_logprobs")
            content, entries, finish, n_prompt, n_gen = teacher.generate(text, max_tokens, top_n)
            content, entries = apply_quirks(args.quirk, teacher, entries, content, top_n,
                                            self.headers.get("Authorization", ""))
            model = body.get("model") if isinstance(body.get("model"), str) else teacher.name
            answer = {
                "id": "chatcmpl-" + uuid.uuid4().hex,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "logprobs": {"content": entries} if want_logprobs else None,
                    "finish_reason": finish,
                }],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_gen, "total_tokens": n_prompt + n_gen},
            }
            if "stall" in args.quirk:
                data = json.dumps(answer).encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                time.sleep(30)
                self.close_connection = True
                return
            self.send_json(200, answer)

    return Handler


def apply_quirks(quirks, teacher, entries, content, top_n, authorization):
    """The answer as a misbehaving endpoint would send it (see the module's doc)."""
    for e in entries:
        top = e.get("top_logprobs", [])
        if "confident" in quirks and top:
            e["logprob"] = 0.0
            top[0]["logprob"] = 0.0
            for j, t in enumerate(top[1:]):
                t["logprob"] = -17.0 - 0.25 * j
        if "positive" in quirks and top:
            top[0]["logprob"] = 0.5
        if "duplicates" in quirks and len(top) >= 2:
            top.append(dict(top[1]))
        if "extra-top" in quirks and top:
            worst = top[-1]["logprob"]
            for j in range(3):
                top.append({"token": f"extra{j}", "logprob": worst - 1.0 - j, "bytes": list(f"extra{j}".encode())})
        if "lossy" in quirks and top:
            # The byte token 0xC3 of a byte-level vocabulary (the character Ã in GPT-2's alphabet).
            top[-1] = {"token": "\ufffd", "logprob": top[-1]["logprob"], "bytes": None}
    if "echo-key" in quirks and entries:
        echoed = authorization.encode("utf-8")
        entries.insert(0, {"token": authorization, "logprob": -0.1, "bytes": list(echoed),
                           "top_logprobs": [{"token": authorization, "logprob": -0.1, "bytes": list(echoed)}]})
        content = authorization + content
    return content, entries


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--fail-first", type=int, default=0)
    ap.add_argument("--fail-status", type=int, default=429)
    ap.add_argument("--require-key")
    ap.add_argument("--delay-s", type=float, default=0.0)
    ap.add_argument("--quirk", action="append", default=[],
                    choices=["confident", "positive", "duplicates", "extra-top", "lossy", "echo-key", "stall"])
    args = ap.parse_args()

    teacher = Teacher(args.model_dir)
    state = {"lock": threading.Lock(), "posts": 0, "served": 0}
    server = ThreadingHTTPServer((args.host, args.port), make_handler(teacher, args, state))
    server.daemon_threads = True

    stop = threading.Event()
    # serve_forever runs in a thread so that the main thread, where signals land, can call
    # shutdown() without deadlocking on its own loop.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()

    # Written only once the socket listens, and atomically, so a test that polls the file never
    # reads a partial number nor connects before the server accepts.
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{server.server_address[1]}\n")
    os.replace(tmp, args.port_file)
    print(f"kd_server: listening on {args.host}:{server.server_address[1]}", file=sys.stderr, flush=True)

    while not stop.wait(0.2):
        pass
    server.shutdown()
    server.server_close()
    sys.stderr.flush()
    sys.stdout.flush()
    # A request may still be mid-forward in a daemon thread; leaving now, without interpreter
    # teardown racing that thread inside torch, is what makes the exit reliably status 0.
    os._exit(0)


if __name__ == "__main__":
    main()
