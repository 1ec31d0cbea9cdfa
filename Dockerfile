# ia3app web app + local training worker on one NVIDIA GPU.
#   docker build -t ia3app .
#   docker run --gpus all -p 7860:7860 -v ia3app-data:/data ia3app
# The container listens on 0.0.0.0, so signing in is required: create a user first, e.g.
#   docker run --rm -it -v ia3app-data:/data ia3app python3.11 -m storage.users add alice
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    IA3APP_DATA_DIR=/data HF_HOME=/data/hf GRADIO_ANALYTICS_ENABLED=False
RUN apt-get update && apt-get install -y --no-install-recommends software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv curl \
    && python3.11 -m ensurepip --upgrade \
    && apt-get purge -y software-properties-common && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt requirements-bundled.txt ./
# PyPI's Linux torch wheel brings its own CUDA libraries (the base image supplies the driver glue).
RUN python3.11 -m pip install -r requirements.txt && python3.11 -m pip install --no-deps -r requirements-bundled.txt
COPY . .

RUN useradd --create-home --uid 1000 ia3 && mkdir -p /data && chown ia3 /data
USER ia3
VOLUME ["/data"]
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s CMD curl -fsS http://127.0.0.1:7860/ >/dev/null || exit 1
CMD ["python3.11", "app.py", "--host", "0.0.0.0", "--port", "7860", "--data-dir", "/data"]
