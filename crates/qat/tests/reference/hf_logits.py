"""Loads a Hugging Face directory with transformers and writes logits for given ids.

    python hf_logits.py MODEL_DIR IDS.safetensors OUT.safetensors
"""
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

model = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32, attn_implementation="eager")
model.eval()
ids = load_file(sys.argv[2])["ids"]
with torch.no_grad():
    logits = model(ids).logits
save_file({"logits": logits.contiguous()}, sys.argv[3])
