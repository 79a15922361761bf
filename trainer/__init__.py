"""The configuration (config/), the parent process (pod/), and the training process: data, the
demo, model loading, checkpoints, progress callbacks and the per-rank script (train.py)."""

import logging

# bitsandbytes, imported by transformers and peft, warns at import on a CPU with AVX512-BF16 that
# it could not fetch an optional faster 4-bit kernel from the Hub ("Failed to load CPU
# gemm_4bit_forward from kernels-community: No module named 'kernels'"). This image downloads no
# kernels (QLoRA on a CPU works without it, only slower), so that line is not news: its logger is
# raised to ERROR here, the first module of every process of the image (`python -m trainer.train`
# imports this package before its own imports).
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
