#!/usr/bin/python3
"""../shared/bench/torch_ref.py with bf16 autocast, as a PyTorch user would get it on the CPU.

The same subcommands and arguments (train-step, encode, decode, ...). The autoencoder's forward
passes and both losses run under torch.autocast("cpu", dtype=torch.bfloat16), as accelerate's
--mixed_precision bf16 does; backward passes and the optimizers run outside it. GroupNorm gets its
input in fp32: PyTorch 1.13's CPU kernel refuses bf16 input with fp32 weights under autocast
("expected scalar type BFloat16 but found Float"), so without this the step does not run at all.
vavae does the same (its GroupNorm normalises in the weights' dtype).

Usage: VAVAE_TORCH_REF=path/to/torch_ref.py bench/torch_ref_bf16.py SUBCOMMAND [ARGS]
"""
import functools
import importlib.util
import os
import sys

import torch
import torch.nn.functional as F

here = os.path.dirname(os.path.abspath(__file__))
path = os.environ.get("VAVAE_TORCH_REF", os.path.join(here, "..", "..", "shared", "bench", "torch_ref.py"))
spec = importlib.util.spec_from_file_location("torch_ref", path)
ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)


def autocast(fn):
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn(*args, **kwargs)
    return wrapped


plain_group_norm = F.group_norm
F.group_norm = lambda x, groups, weight=None, bias=None, eps=1e-5: plain_group_norm(x.float(), groups, weight, bias, eps)
ref.AutoencoderKL.encode = autocast(ref.AutoencoderKL.encode)
ref.AutoencoderKL.decode = autocast(ref.AutoencoderKL.decode)
ref.generator_loss = autocast(ref.generator_loss)
ref.discriminator_loss = autocast(ref.discriminator_loss)
plain_emit = ref.emit
ref.emit = lambda d: plain_emit(dict(d, precision="bf16 autocast"))

if __name__ == "__main__":
    sys.exit(ref.main())
