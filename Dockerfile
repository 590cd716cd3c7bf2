# meshforge for many machines: one image for the API tier (`meshforge serve --workers 0`) and the GPU
# workers (`meshforge worker --devices cuda:0`); see README, "Run it on many machines", and compose.yaml.
#
# Wheels only: meshforge itself is pure Python (its wheel is built from this tree without compiling
# anything), and every dependency is installed from prebuilt wheels (--only-binary=:all:), no compile step.

FROM python:3.12-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip wheel --no-deps --no-cache-dir --wheel-dir /wheels .

FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_ONLY_BINARY=:all: \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/meshforge \
    PATH=/opt/meshforge/bin:$PATH
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv libgl1 libglib2.0-0 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/meshforge
COPY --from=wheel /wheels /wheels
# PyTorch's CUDA 12.6 wheels, then meshforge with the service, scale-out and TripoSR extras
RUN pip install --only-binary=:all: --index-url https://download.pytorch.org/whl/cu126 torch \
    && pip install --only-binary=:all: "$(ls /wheels/meshforge-*.whl)[serve,scale,triposr]" \
    && rm -rf /wheels
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin meshforge \
    && mkdir -p /var/lib/meshforge && chown meshforge:meshforge /var/lib/meshforge
USER meshforge
WORKDIR /home/meshforge
ENV MESHFORGE_SERVICE_DATA_DIR=/var/lib/meshforge
VOLUME ["/var/lib/meshforge"]
EXPOSE 8000
ENTRYPOINT ["meshforge"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "0"]
