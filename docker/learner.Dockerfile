# The learner's image (also serves TensorBoard): `learner run` on an NVIDIA GPU box, CUDA torch
# from PyPI (its Linux wheel bundles the CUDA runtime; the host needs only the NVIDIA driver and
# the container toolkit). Debian and PyPI packages only. Built from the repository root.
FROM debian:bookworm-slim

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
# The project's torch range (pyproject.toml); on PyPI's default index that is the CUDA build.
RUN pip install "torch>=2.3,<=2.14.1"

# No hardware extras: the learner never touches the robot.
COPY . /src
RUN pip install /src && rm -rf /src

WORKDIR /work
CMD ["learner", "run", "--config", "franka", "--server", "http://127.0.0.1:8000"]
