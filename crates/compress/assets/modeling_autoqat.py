"""An autoqat rowmix artifact for transformers (written by `autoqat compress`).

Every quantized matrix `P.weight` is stored as `P.row_kind` (2-bit kind per row, four per byte:
0 binary, 1 ternary, 2 q4, 3 q8) and, for each kind present, `P.<kind>.codes` (u8, whole bytes
per row) and `P.<kind>.scales` (f16; one per row, one per 128 values for q4). Weights are
`code * scale`; every other tensor is stored as is. Loading unpacks into ordinary parameters, so
the model runs, counts its parameters and saves like the architecture it extends.

Load with `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`.
"""


import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM
from transformers.utils import cached_file

try:  # Qwen3.5/3.6 (Gated DeltaNet hybrids) need transformers 5.x
    from transformers import Qwen3_5ForCausalLM
except ImportError:  # an older transformers still loads the other architectures
    Qwen3_5ForCausalLM = None

KINDS = ("binary", "ternary", "q4", "q8")
# (values per byte, base, offset of the stored digit) per kind
PACKING = {"binary": (8, 2, 0), "ternary": (5, 3, 1), "q4": (2, 16, 7), "q8": (1, 256, 128)}
Q4_GROUP = 128


def unpack_codes(packed, kind, n_in):
    """Integer codes [rows, n_in] (float32) from packed bytes [rows, code_bytes]."""
    per_byte, base, offset = PACKING[kind]
    x = packed.to(torch.int64).unsqueeze(-1)
    pows = base ** torch.arange(per_byte, dtype=torch.int64)
    digits = torch.div(x, pows, rounding_mode="floor").remainder(base).flatten(1)[:, :n_in].float()
    return digits * 2 - 1 if kind == "binary" else digits - offset


def unpack_kinds(packed, rows):
    x = packed.to(torch.int64).unsqueeze(-1)
    return (torch.div(x, 4 ** torch.arange(4, dtype=torch.int64), rounding_mode="floor").remainder(4)).flatten()[:rows]


def unpack_weight(tensors, prefix, rows, n_in):
    """The dense float32 weight [rows, n_in] of the quantized matrix `prefix`."""
    kinds = unpack_kinds(tensors[prefix + ".row_kind"], rows)
    w = torch.zeros(rows, n_in, dtype=torch.float32)
    for code, kind in enumerate(KINDS):
        idx = (kinds == code).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        codes = unpack_codes(tensors[f"{prefix}.{kind}.codes"], kind, n_in)
        scales = tensors[f"{prefix}.{kind}.scales"].float()
        group = Q4_GROUP if kind == "q4" else n_in
        w[idx] = codes * scales.repeat_interleave(group, dim=1)[:, :n_in]
    return w


class AutoqatMixin:
    """Loads the packed weights into an ordinary model of the base architecture."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, **kwargs):
        dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None)
        device_map = kwargs.pop("device_map", None)
        hub = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only") if k in kwargs}
        if config is None:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(pretrained_model_name_or_path, trust_remote_code=True, **hub)
        if dtype == "auto":
            dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        path = cached_file(pretrained_model_name_or_path, "model.safetensors", **hub)
        tensors = load_file(path)
        model = cls(config)
        with torch.no_grad():
            for name, param in model.named_parameters():
                prefix = name[: -len(".weight")] if name.endswith(".weight") else None
                if prefix is not None and prefix + ".row_kind" in tensors:
                    param.copy_(unpack_weight(tensors, prefix, param.shape[0], param.shape[1]))
                elif name in tensors:
                    param.copy_(tensors[name].float())
                else:
                    raise ValueError(f"{path}: no tensor for parameter {name}")
        model.tie_weights()
        model.eval()
        if dtype is not None:
            model = model.to(dtype)
        if device_map == "auto":
            device_map = "cuda" if torch.cuda.is_available() else None
        if isinstance(device_map, (str, torch.device)):
            model = model.to(device_map)
        return model


class AutoqatLlamaForCausalLM(AutoqatMixin, LlamaForCausalLM):
    pass


class AutoqatQwen2ForCausalLM(AutoqatMixin, Qwen2ForCausalLM):
    pass


class AutoqatQwen3ForCausalLM(AutoqatMixin, Qwen3ForCausalLM):
    pass


if Qwen3_5ForCausalLM is not None:

    class AutoqatQwen3_5ForCausalLM(AutoqatMixin, Qwen3_5ForCausalLM):
        pass
