"""Data for HDM: image decoding and resizing (images), the MVTec AD folder layout (mvtec),
and generated products with ground-truth defects (synthetic).

Import the submodules directly. This package imports nothing itself so that the stream
ingress can decode frames through `hdm.data.images` without loading torch.
"""
