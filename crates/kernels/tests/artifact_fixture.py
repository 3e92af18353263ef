"""Writes tests/fixtures/artifact_rows.txt: a random mixed-kind matrix in the compression
artifact's packing and the dense weight the artifact's own Python reader
(crates/compress/assets/modeling_autoqat.py, `unpack_weight`) decodes from it.

Run from the repository root: .venv/bin/python crates/kernels/tests/artifact_fixture.py
"""

import pathlib
import sys

import torch

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "crates/compress/assets"))
import modeling_autoqat as m  # noqa: E402

ROWS, COLS = 13, 130  # 130: partial last byte for every kind and a partial q4 group
g = torch.Generator().manual_seed(7)
kinds = torch.randint(0, 4, (ROWS,), generator=g)
kinds[:4] = torch.arange(4)  # every kind present
RANGE = {"binary": (0, 2), "ternary": (0, 3), "q4": (0, 15), "q8": (0, 256)}  # stored digits


def pack(digits, per_byte, base):
    pad = (-digits.shape[1]) % per_byte
    d = torch.nn.functional.pad(digits, (0, pad)).view(digits.shape[0], -1, per_byte).to(torch.int64)
    pows = base ** torch.arange(per_byte, dtype=torch.int64)
    return (d * pows).sum(-1).to(torch.uint8)


tensors = {"w.row_kind": pack(kinds.view(1, -1), 4, 4).view(-1)}
for code, kind in enumerate(m.KINDS):
    n = int((kinds == code).sum())
    per_byte, base, _ = m.PACKING[kind]
    lo, hi = RANGE[kind]
    tensors[f"w.{kind}.codes"] = pack(torch.randint(lo, hi, (n, COLS), generator=g), per_byte, base)
    groups = -(-COLS // 128) if kind == "q4" else 1
    tensors[f"w.{kind}.scales"] = (torch.rand(n, groups, generator=g) + 0.05).to(torch.float16)

dense = m.unpack_weight(tensors.__getitem__, "w", ROWS, COLS, torch.float32, "cpu")

out = [f"rows {ROWS}", f"cols {COLS}"]
for name, t in tensors.items():
    key = name[2:]
    if t.dtype == torch.float16:
        vals = t.reshape(-1).view(torch.int16).to(torch.int32) & 0xFFFF
    else:
        vals = t.reshape(-1).to(torch.int32)
    out.append(key + " " + " ".join(str(int(v)) for v in vals))
bits = dense.reshape(-1).contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
out.append("dense " + " ".join(str(int(v)) for v in bits))
path = pathlib.Path(__file__).parent / "fixtures/artifact_rows.txt"
path.write_text("\n".join(out) + "\n")
print(f"wrote {path}")
