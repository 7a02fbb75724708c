"""A train.py-style checkpoint ({'model', 'ema', 'opt', 'config'}) with tiny tensors, for the
weight reader's choice of dict. Run with Debian's python3-torch: /usr/bin/python3 make_model_and_ema.py"""
import torch

torch.save({"model": {"w": torch.zeros(3)}, "ema": {"w": torch.ones(3)}, "opt": {"state": {}}, "config": {"lr": 0.0002}},
           "model_and_ema.pt")
