#!/usr/bin/python3
"""Loads a TorchScript model that fedsilo trained and prints its weights.

    /usr/bin/python3 examples/torchscript/show_model.py FINAL_MODEL.pt [--json]

With --json, prints {"name": [values...]} for every parameter and buffer, in
the module's order (the test suite compares it with fedsilo's final_model.fsm).
"""
import argparse
import json

import torch


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    module = torch.jit.load(args.model)
    module.eval()
    tensors = dict(module.named_parameters())
    tensors.update(dict(module.named_buffers()))
    if args.json:
        print(json.dumps({k: v.detach().double().flatten().tolist() for k, v in tensors.items()}))
        return
    for name, t in tensors.items():
        print(f"{name:24s} {list(t.shape)}  mean {t.double().mean().item():+.6f}")


if __name__ == "__main__":
    main()
