# The training image: CUDA PyTorch base, code in /app, caches and outputs on the RunPod volume.
# torch comes from the base image (CUDA build); everything else is the same pinned
# requirements.txt the tests install.
FROM pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/workspace/hf \
    OUTPUT_DIR=/workspace/outputs

# tini as PID 1 reaps orphaned processes and passes SIGTERM on to the entrypoint, which forwards
# it to every training process.
RUN apt-get update && apt-get install -y --no-install-recommends tini && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY entrypoint.py ./
COPY trainer/ trainer/
COPY predictions/ predictions/
COPY sql/ sql/

# /workspace is the RunPod volume: the Hub cache, downloads, checkpoints and predictions survive
# a pod restart there, which is what resuming needs.
VOLUME ["/workspace"]
ENTRYPOINT ["/usr/bin/tini", "--", "python", "/app/entrypoint.py"]
CMD ["run"]
