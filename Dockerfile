# One image for every component: Ray head/workers (scoring, training), the
# results service and the camera simulator. Built on Ray's CUDA image so KubeRay
# can run it on GPU nodes; the same image runs on CPU nodes.
FROM rayproject/ray:2.60.0-py311-gpu

WORKDIR /opt/hdm-inspect
# CUDA build of torch from PyTorch's index; everything else from PyPI.
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX="https://download.pytorch.org/whl/cu128"
RUN pip install --no-cache-dir "${TORCH_SPEC}" --index-url "${TORCH_INDEX}"

COPY pyproject.toml README.md ./
COPY hdm hdm
COPY protos protos
COPY services services
COPY config config
RUN pip install --no-cache-dir . && hdm --help >/dev/null

# Containers never run as root; Ray's image already has user `ray`.
USER ray
