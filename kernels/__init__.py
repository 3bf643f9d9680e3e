"""Triton kernels of cod_fast, installed as ``cod_fast.kernels``.

One kernel family per module, each with its plain-torch reference function beside it.
Importing this package never requires Triton; kernel modules import it themselves.
"""
