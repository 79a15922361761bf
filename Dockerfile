# The training image: a CUDA PyTorch base, code in /app, caches and outputs on the RunPod volume.
#
# BASE_IMAGE: any Debian/Ubuntu image with Python >= 3.11, pip and torch 2.13 on PATH.
# The default, pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime (Ubuntu 22.04, conda Python): its
# tag could not be pulled from here (no registry access), so it was checked against public
# references instead: several independent public Dockerfiles, scripts and docs (Nov 2026) build FROM
# exactly this tag, one of them pinned to its digest
# sha256:6acf597eeb8e376a96580dde4952f37cc017fef732bb40bfc73f28f25e3f64b4, while 2.13.0 appears
# only with cuda12.6, cuda13.0 and cuda13.2 (never cuda12.8, the old default). cuda12.6 runs on
# the widest range of host drivers (>= 525 with CUDA's minor-version compatibility; 13.x needs
# >= 580). Pin the digest yourself once you can pull: BASE_IMAGE=pytorch/pytorch:2.13.0-...@sha256:...
# The tests build with a local stand-in: --build-arg BASE_IMAGE=$(bash scripts/docker-standin-base.sh)
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime
FROM ${BASE_IMAGE}

# IMAGE_OUTPUT_DIR / IMAGE_HF_HOME are the image's defaults for OUTPUT_DIR / HF_HOME: the
# configuration falls back to them when an env file sets those variables empty (`OUTPUT_DIR=`
# in .env.example), so the outputs stay on the /workspace volume either way.
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/workspace/hf \
    OUTPUT_DIR=/workspace/outputs \
    IMAGE_HF_HOME=/workspace/hf \
    IMAGE_OUTPUT_DIR=/workspace/outputs

# tini as PID 1 reaps orphaned processes and passes SIGTERM on to the entrypoint, which forwards
# it to every training process. Pinned to its 0.19 release, the version both Ubuntu 22.04 (the
# default base) and Debian 12 (the tests' stand-in) ship, whatever their rebuild suffix.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini=0.19.* \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
# The base's torch (the CUDA build) is held at its version: a requirement must never replace it
# with a download from the registry.
RUN python -c "import torch; print('torch==' + torch.__version__)" > /tmp/base-torch.txt \
 && pip install --no-cache-dir -r requirements.txt -c /tmp/base-torch.txt \
 && rm /tmp/base-torch.txt
COPY entrypoint.py ./
COPY trainer/ trainer/
COPY predictions/ predictions/
COPY sql/ sql/

# /workspace is the RunPod volume: the Hub cache, downloads, checkpoints and predictions survive
# a pod restart there, which is what resuming needs.
VOLUME ["/workspace"]
ENTRYPOINT ["/usr/bin/tini", "--", "python", "/app/entrypoint.py"]
CMD ["run"]
