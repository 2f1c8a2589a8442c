#!/usr/bin/python3
"""Writes digits_net.pt, the TorchScript model of examples/torchscript/digits.yaml.

A small network for scikit-learn's digits (8x8 images, 64 features, 10
classes) with a batch-norm layer, to show that fedsilo trains any TorchScript
module: its parameters are trained in each silo and averaged, and its buffers
(batch norm's running statistics) are averaged the same way.

Run with Debian's PyTorch (apt install python3-torch):
    /usr/bin/python3 examples/torchscript/make_model.py
Then train it federated:
    build/fedsilo run examples/torchscript/digits.yaml
and load the result back in Python:
    /usr/bin/python3 examples/torchscript/show_model.py work/runs/<run>/final_model.pt
"""
import argparse
import os

import torch
from torch import nn


class DigitsNet(nn.Module):
    """64 -> 32 (batch norm, ReLU) -> 10 logits."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.bn1 = nn.BatchNorm1d(32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fedsilo passes a batch of examples, [batch, 64] here, and expects
        # one logit per class back: [batch, 10]. Cross-entropy is applied by
        # fedsilo, so no softmax.
        x = x.flatten(1)
        return self.fc2(torch.relu(self.bn1(self.fc1(x))))


class TracedDigitsNet(nn.Module):
    """64 -> 32 (ReLU) -> 10 logits, for --trace.

    torch.jit.trace records the operations that one example batch runs, so a
    layer that acts differently in training and in evaluation (batch norm,
    dropout) keeps the mode it was traced in. This variant has no such layer;
    use torch.jit.script for modules that do.
    """

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "digits_net.pt"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trace", action="store_true",
                        help="write a torch.jit.trace module (without batch norm) instead")
    args = parser.parse_args()
    torch.manual_seed(args.seed)  # the initial weights every silo starts from
    if args.trace:
        module = torch.jit.trace(TracedDigitsNet(), torch.zeros(2, 64))
    else:
        module = torch.jit.script(DigitsNet())
    module.save(args.out)
    params = sum(p.numel() for p in module.parameters())
    print(f"wrote {args.out}: {params} parameters")


if __name__ == "__main__":
    main()
