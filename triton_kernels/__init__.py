"""Triton kernels for LSTM inference, each module a kernel and its launcher:

- ``triton_kernels.lstm_cell.lstm_cell(gx, h, c, w_hh, b_hh)``: one fused step;
- ``triton_kernels.lstm_seq.lstm_sequence(gx, w_hh, b_hh, h0, c0)``: all T steps of a layer in
  one persistent launch; ``lstm_seq.lstm_stack_triton(x, layers, dtype)``: stacked layers.
  Both are also reachable as ``triton_kernels.lstm_sequence`` / ``.lstm_stack_triton``.

Importing this package imports neither triton nor anything that touches a GPU. The kernel
modules are imported on first use and call ``mmengine._ext.require("triton")`` first, which
raises ``OptionalDependencyError`` (with the install command) when triton is missing.

Whether kernels are compiled for the GPU or run by Triton's interpreter is decided by triton
when it is first imported (``TRITON_INTERPRET=1``); under the interpreter they take CPU tensors.
"""
from __future__ import annotations

import importlib

__all__ = ["lstm_cell", "lstm_seq", "lstm_sequence", "lstm_stack_triton"]

_MODULES = ("lstm_cell", "lstm_seq")
_FUNCTIONS = {"lstm_sequence": "lstm_seq", "lstm_stack_triton": "lstm_seq"}


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(f"{__name__}.{_FUNCTIONS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
