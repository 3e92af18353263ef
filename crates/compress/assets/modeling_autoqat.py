"""An autoqat rowmix artifact for transformers (written by `autoqat compress`).

Every quantized matrix `P.weight` is stored as `P.row_kind` (2-bit kind per row, four per byte:
0 binary, 1 ternary, 2 q4, 3 q8) and, for each kind present, `P.<kind>.codes` (u8, whole bytes
per row) and `P.<kind>.scales` (f16; one per row, one per 128 values for q4). Weights are
`code * scale`; every other tensor is stored as is. Loading unpacks into ordinary parameters, so
the model runs, counts its parameters and saves like the architecture it extends.

Load with `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`. The model is built
with its parameters on the meta device, then each is unpacked straight into the requested dtype
(float32 by default) on its device (CUDA where there is one), one matrix at a time, reading the
weights file tensor by tensor: the host never holds a float32 copy of a float16 model, nor a
dense copy of one bound for a GPU. Comment lines are dropped from the copy inside an artifact
(its bytes count against the budget); this file in autoqat's repository has them.
"""


import torch
from safetensors import safe_open
from transformers import LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM
from transformers.utils import cached_file

try:
    from transformers import Qwen3_5ForCausalLM
except ImportError:  # transformers 4.x: the other architectures still load
    Qwen3_5ForCausalLM = None

KINDS = ("binary", "ternary", "q4", "q8")
# (values per byte, base, offset of the stored digit) per kind
PACKING = {"binary": (8, 2, 0), "ternary": (5, 3, 1), "q4": (2, 16, 7), "q8": (1, 256, 128)}


def digits(packed, per_byte, base, n):
    x = packed.to(torch.int32).unsqueeze(-1)
    pows = base ** torch.arange(per_byte, dtype=torch.int32, device=x.device)
    return torch.div(x, pows, rounding_mode="floor").remainder(base).flatten(1)[:, :n]


def unpack_weight(get, prefix, rows, n_in, dtype, device):
    """The dense weight [rows, n_in] of the quantized matrix `prefix`, in `dtype` on `device`."""
    kinds = digits(get(prefix + ".row_kind").to(device).view(1, -1), 4, 4, rows)[0]
    w = torch.zeros(rows, n_in, dtype=dtype, device=device)
    # Rows are unpacked in blocks of about 4M values, so the integer and float32 temporaries stay
    # small beside the model whatever the matrix (an embedding of 250k rows included).
    block = max(1, (1 << 22) // n_in)
    for code, kind in enumerate(KINDS):
        idx = (kinds == code).nonzero().squeeze(1)
        if idx.numel():
            per_byte, base, offset = PACKING[kind]
            packed, scales = get(f"{prefix}.{kind}.codes").to(device), get(f"{prefix}.{kind}.scales").to(device)
            for i in range(0, idx.numel(), block):
                c = digits(packed[i:i + block], per_byte, base, n_in).float()
                c = c * 2 - 1 if kind == "binary" else c - offset
                s = scales[i:i + block].float().repeat_interleave(128 if kind == "q4" else n_in, dim=1)[:, :n_in]
                w[idx[i:i + block]] = (c * s).to(dtype)
    return w


class AutoqatMixin:
    """Loads the packed weights into an ordinary model of the base architecture."""

    @classmethod
    def from_pretrained(cls, path, *args, config=None, **kw):
        dtype = kw.pop("dtype", None) or kw.pop("torch_dtype", None)
        dev = kw.pop("device_map", None)
        hub = {k: kw[k] for k in ("cache_dir", "revision", "token", "local_files_only") if k in kw}
        if config is None:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(path, trust_remote_code=True, **hub)
        if dtype == "auto":
            dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype or torch.float32
        # Straight to the GPU where there is one: a caller that moves the model there after
        # loading (as the track's validator does) would first hold it all on the host.
        dev = torch.device(dev if isinstance(dev, (str, torch.device)) and dev != "auto" else
                           "cuda" if torch.cuda.is_available() else "cpu")
        f = safe_open(cached_file(path, "model.safetensors", **hub), framework="pt")
        stored = set(f.keys())
        register = torch.nn.Module.register_parameter

        def on_meta(module, name, p):
            # Parameters take no memory until read; buffers (rotary tables) stay real.
            # (a parameter already on meta is kept as is, so tied weights stay one object)
            if p is not None and p.device.type != "meta":
                p = torch.nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)
            register(module, name, p)

        torch.nn.Module.register_parameter = on_meta
        try:
            model = cls(config)
        finally:
            torch.nn.Module.register_parameter = register
        with torch.no_grad():
            for name, p in list(model.named_parameters()):
                prefix = name[:-7] if name.endswith(".weight") else name
                if prefix + ".row_kind" in stored:
                    v = unpack_weight(f.get_tensor, prefix, p.shape[0], p.shape[1], dtype, dev)
                elif name in stored:
                    v = f.get_tensor(name).to(dev, dtype)
                else:
                    raise ValueError(f"{path}: no tensor for parameter {name}")
                if v.shape != p.shape:
                    raise ValueError(f"{name}: the artifact holds {tuple(v.shape)}, the config {tuple(p.shape)}")
                owner, _, leaf = name.rpartition(".")
                model.get_submodule(owner)._parameters[leaf] = torch.nn.Parameter(v, requires_grad=p.requires_grad)
        model.tie_weights()
        return model.to(dev).eval()


class AutoqatLlamaForCausalLM(AutoqatMixin, LlamaForCausalLM):
    pass


class AutoqatQwen2ForCausalLM(AutoqatMixin, Qwen2ForCausalLM):
    pass


class AutoqatQwen3ForCausalLM(AutoqatMixin, Qwen3ForCausalLM):
    pass


if Qwen3_5ForCausalLM is not None:

    class AutoqatQwen3_5ForCausalLM(AutoqatMixin, Qwen3_5ForCausalLM):
        pass
