"""Plain-PyTorch mirrors of the official models, one sub-package per family.

``cod`` (CoD), ``cod_lite`` (CoD-Lite), ``vae`` (SD-VAE), ... Sub-packages are imported on demand,
so that importing one family never pulls in another.
"""
