# umamba-seg on an NVIDIA CUDA runtime image.
#
#   docker build -t umamba-seg .
#   docker run --gpus all --ipc=host -v "$PWD":/workspace umamba-seg demo
#   docker run --gpus all --ipc=host -v /data/umamba:/workspace umamba-seg train -d 703 -c 2d -f all -a umamba_bot
#
# The working folder /workspace holds umamba_workdir/ (raw, preprocessed, results) unless you pass
# --workdir or set nnUNet_raw/nnUNet_preprocessed/nnUNet_results. --ipc=host (or a large --shm-size)
# is needed by nnU-Net's data-augmentation worker processes.
#
# No CUDA build step: the scan kernels are Triton kernels, compiled at first use on the GPU that runs
# them. Torch wheels bring their own CUDA libraries; the host only needs an NVIDIA driver and the
# NVIDIA Container Toolkit.

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

# Wheel index for torch's CUDA build (e.g. .../whl/cu126 for older drivers).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Python in a virtual environment (Ubuntu 24.04's system Python is externally managed).
# gcc and the Python headers: Triton compiles its small kernel-launcher module with the system C
# compiler the first time a kernel runs; without them every GPU scan fails at run time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV"

COPY . /opt/umamba-seg

# The same package spec as the README's first command (`pip install .`): the project with its
# pyproject.toml dependencies and no extras; torch may come from the CUDA wheel index.
RUN pip install --extra-index-url "$TORCH_INDEX_URL" /opt/umamba-seg \
    && umamba-seg --version

WORKDIR /workspace
ENTRYPOINT ["umamba-seg"]
CMD ["--help"]
