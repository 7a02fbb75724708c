#!/usr/bin/python3
"""../shared/bench/torch_ref.py on another device or in bf16, as a PyTorch user would run it there.

The same subcommands and arguments (train-step, encode, decode, ...), with
  VAVAE_REF_DEVICE=cpu|cuda     where the models and inputs live (cuda: torch.set_default_device,
                                PyTorch >= 2; PyTorch's default TF32 convolutions; each timed step
                                ends with a synchronize)
  VAVAE_REF_PRECISION=fp32|bf16 bf16: the autoencoder's forward passes and both losses under
                                torch.autocast(device, bfloat16), as accelerate's --mixed_precision
                                bf16 does; backward passes and the optimizers outside it.
GroupNorm gets its input in fp32 under bf16: PyTorch 1.13's CPU kernel refuses bf16 input with fp32
weights under autocast ("expected scalar type BFloat16 but found Float"), so without this the step
does not run at all (CUDA's autocast does the same cast itself). vavae does the same (its GroupNorm
normalises in the weights' dtype).

Usage: VAVAE_TORCH_REF=path/to/torch_ref.py VAVAE_REF_PRECISION=bf16 bench/torch_ref_on.py SUBCOMMAND [ARGS]
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

device = os.environ.get("VAVAE_REF_DEVICE", "cpu")
precision = os.environ.get("VAVAE_REF_PRECISION", "fp32")
if device not in ("cpu", "cuda") or precision not in ("fp32", "bf16"):
    sys.exit(f"VAVAE_REF_DEVICE={device!r} / VAVAE_REF_PRECISION={precision!r}: expected cpu|cuda and fp32|bf16")
labels = {}

if device == "cuda":
    torch.set_default_device("cuda")
    plain_time_steps = ref.time_steps

    def synchronized(fn):
        def step():
            fn()
            torch.cuda.synchronize()
        return step

    ref.time_steps = lambda fn, warmup, steps: plain_time_steps(synchronized(fn), warmup, steps)
    labels.update(device="cuda", gpu=torch.cuda.get_device_name(), torch=torch.__version__)

if precision == "bf16":
    def autocast(fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with torch.autocast(device, dtype=torch.bfloat16):
                return fn(*args, **kwargs)
        return wrapped

    plain_group_norm = F.group_norm
    F.group_norm = lambda x, groups, weight=None, bias=None, eps=1e-5: plain_group_norm(x.float(), groups, weight, bias, eps)
    ref.AutoencoderKL.encode = autocast(ref.AutoencoderKL.encode)
    ref.AutoencoderKL.decode = autocast(ref.AutoencoderKL.decode)
    ref.generator_loss = autocast(ref.generator_loss)
    ref.discriminator_loss = autocast(ref.discriminator_loss)
    labels.update(precision="bf16 autocast")

plain_emit = ref.emit
ref.emit = lambda d: plain_emit(dict(d, **labels))

if __name__ == "__main__":
    sys.exit(ref.main())
