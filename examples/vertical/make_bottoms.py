#!/usr/bin/python3
"""Writes bottoms.pt, the parties' own bottom models for examples/vertical.

A vertical job's TorchScript module holds one bottom model per party, as a
submodule named after the party. Each party runs its own submodule on its
own columns (after fedsilo's preprocessing: scaled numbers, one-hot
categories) and must return the cut layer, [batch, vertical.cut_width]. The
label owner's top model stays fedsilo's (vertical.top_hidden). Each party
draws its weight matrices afresh from its own randomness, so the weights in
this file are not the ones trained.

In examples/vertical the bank has 5 columns, the telecom 7 (4 numbers and
`plan` one-hot over its 3 values) and the retailer 5; the cut layer is 8.

Run with Debian's PyTorch (apt install python3-torch):
    /usr/bin/python3 examples/vertical/make_bottoms.py
Then train with it in place of the built-in bottom models:
    build/fedsilo run examples/vertical/fraud-vertical.yaml \\
        --set model.torchscript=examples/vertical/bottoms.pt
"""
import argparse
import os

import torch
from torch import nn

CUT = 8  # vertical.cut_width


class Bottoms(nn.Module):
    """The parties' bottom models, each named after its party."""

    def __init__(self):
        super().__init__()
        # The bank: card activity, 5 columns.
        self.bank = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, CUT), nn.ReLU())
        # The telecom: 4 numbers and a one-hot plan (3 values), normalised
        # per customer after the first layer.
        self.telecom = nn.Sequential(nn.Linear(7, 16), nn.LayerNorm(16), nn.ReLU(),
                                     nn.Linear(16, CUT), nn.ReLU())
        # The retailer: purchase history, 5 columns, a single layer.
        self.retailer = nn.Sequential(nn.Linear(5, CUT), nn.Tanh())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "bottoms.pt"))
    args = parser.parse_args()
    torch.manual_seed(0)
    module = torch.jit.script(Bottoms())
    module.save(args.out)
    for name, child in module.named_children():
        params = sum(p.numel() for p in child.parameters())
        print(f"{name}: {params} parameters")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
