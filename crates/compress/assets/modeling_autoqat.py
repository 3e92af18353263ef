"""An autoqat rowmix artifact for transformers (written by `autoqat compress`).

Every quantized matrix `P.weight` is stored as `P.row_kind` (2-bit kind per row, four per byte:
0 binary, 1 ternary, 2 q4, 3 q8) and, for each kind present, `P.<kind>.codes` (u8, whole bytes
per row) and `P.<kind>.scales` (f16; one per row, one per 128 values for q4). Weights are
`code * scale`; every other tensor is stored as is. Loading unpacks into ordinary parameters, so
the model runs, counts its parameters and saves like the architecture it extends.

Load with `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`. The model is built
with its parameters on the meta device and each one is unpacked straight into the requested
dtype (`torch_dtype`/`dtype`, float32 by default) on its device (CUDA where there is one, else the
CPU), one matrix at a time, reading the weights file tensor by tensor: the host never holds a
float32 copy of a model loaded in float16, nor a dense copy of one loaded onto a GPU.
"""


import contextlib
import json
import os

import torch
from safetensors import safe_open
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
    pows = base ** torch.arange(per_byte, dtype=torch.int64, device=packed.device)
    digits = torch.div(x, pows, rounding_mode="floor").remainder(base).flatten(1)[:, :n_in].float()
    return digits * 2 - 1 if kind == "binary" else digits - offset


def unpack_kinds(packed, rows):
    x = packed.to(torch.int64).unsqueeze(-1)
    pows = 4 ** torch.arange(4, dtype=torch.int64, device=packed.device)
    return (torch.div(x, pows, rounding_mode="floor").remainder(4)).flatten()[:rows]


def unpack_weight(get, prefix, rows, n_in, dtype, device):
    """The dense weight [rows, n_in] of the quantized matrix `prefix` in `dtype` on `device`;
    `get(name)` reads one stored tensor. Codes are multiplied out in float32 one row kind at a
    time, so no more than one matrix exists in float32 at once."""
    kinds = unpack_kinds(get(prefix + ".row_kind").to(device), rows)
    w = torch.zeros(rows, n_in, dtype=dtype, device=device)
    for code, kind in enumerate(KINDS):
        idx = (kinds == code).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        codes = unpack_codes(get(f"{prefix}.{kind}.codes").to(device), kind, n_in)
        scales = get(f"{prefix}.{kind}.scales").to(device).float()
        group = Q4_GROUP if kind == "q4" else n_in
        w[idx] = (codes * scales.repeat_interleave(group, dim=1)[:, :n_in]).to(dtype)
        del codes, scales
    return w


@contextlib.contextmanager
def parameters_on_meta():
    """Builds a model whose parameters take no memory (buffers stay real, so rotary tables and
    the like are computed as usual): each parameter is moved to the meta device as it is
    registered, and filled from the artifact afterwards."""
    register = torch.nn.Module.register_parameter

    def on_meta(module, name, param):
        if param is not None and param.device.type != "meta":
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    torch.nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


class StoredTensors:
    """The artifact's tensors, read one at a time from `model.safetensors` (or the shards an
    index names) without loading the file."""

    def __init__(self, name_or_path, hub):
        try:
            index = cached_file(name_or_path, "model.safetensors.index.json", **hub)
        except Exception:  # noqa: BLE001 - a single file is the usual case
            index = None
        if index and os.path.exists(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            files = {n: os.path.join(os.path.dirname(index), f) for n, f in weight_map.items()}
        else:
            path = cached_file(name_or_path, "model.safetensors", **hub)
            with safe_open(path, framework="pt") as f:
                files = {n: path for n in f.keys()}
        self.files = files
        self.handles = {}

    def __contains__(self, name):
        return name in self.files

    def get(self, name):
        path = self.files[name]
        if path not in self.handles:
            self.handles[path] = safe_open(path, framework="pt")
        return self.handles[path].get_tensor(name)


def set_parameter(model, name, value):
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    old = module._parameters[leaf]
    module._parameters[leaf] = torch.nn.Parameter(value, requires_grad=old.requires_grad)


class AutoqatMixin:
    """Loads the packed weights into an ordinary model of the base architecture."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, **kwargs):
        dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None)
        device_map = kwargs.pop("device_map", None)
        # Always honoured: the model is never built in full before its weights are read.
        kwargs.pop("low_cpu_mem_usage", None)
        hub = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only") if k in kwargs}
        if config is None:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(pretrained_model_name_or_path, trust_remote_code=True, **hub)
        if dtype == "auto":
            dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        dtype = dtype or torch.float32
        # Straight to the GPU where there is one: a caller that moves the model with .to(device)
        # after loading (as the track's validator does) would otherwise hold it all on the host.
        if device_map in (None, "auto"):
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        elif isinstance(device_map, (str, torch.device)):
            device = torch.device(device_map)
        else:
            raise ValueError(f"device_map {device_map!r} is not supported by autoqat artifacts (use a device name)")
        stored = StoredTensors(pretrained_model_name_or_path, hub)
        with parameters_on_meta():
            model = cls(config)
        with torch.no_grad():
            for name, param in list(model.named_parameters()):
                prefix = name[: -len(".weight")] if name.endswith(".weight") else None
                if prefix is not None and prefix + ".row_kind" in stored:
                    value = unpack_weight(stored.get, prefix, param.shape[0], param.shape[1], dtype, device)
                elif name in stored:
                    value = stored.get(name).to(device=device, dtype=dtype)
                else:
                    raise ValueError(f"{pretrained_model_name_or_path}: the artifact has no tensor for parameter {name}")
                if tuple(value.shape) != tuple(param.shape):
                    raise ValueError(f"{name}: the artifact holds {tuple(value.shape)}, the config implies {tuple(param.shape)}")
                set_parameter(model, name, value)
        model.tie_weights()
        model.to(device)  # the buffers (rotary tables) join the parameters
        model.eval()
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
