# The robot PC's image: the daemon (`robot-server`), the `replay` tools and the hardware drivers
# (franky/libfranka, RealSense, SpaceMouse), plus Mesa EGL so the same image runs the sim arm.
# Debian and PyPI packages only. Built from the repository root (docker-compose.yml does this).
FROM debian:bookworm-slim

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    MUJOCO_GL=egl \
    PYOPENGL_PLATFORM=egl \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# The Debian packages scripts/setup.sh installs (EGL for offscreen MuJoCo, libusb for pyrealsense2,
# hidapi for the SpaceMouse); bookworm's python3 is 3.11, the project's floor.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-venv ca-certificates \
      libegl1 libegl-mesa0 libgl1-mesa-dri libusb-1.0-0 libhidapi-hidraw0 libhidapi-libusb0 \
 && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
# torch first, in its own layer: the largest download, and it changes least. Policies run on the
# CPU here; PyPI's torch wheel for Linux is the CUDA build, which runs on a CPU as well.
RUN pip install "torch>=2.3,<=2.14.1"

COPY . /src
RUN pip install "/src[hw]" && rm -rf /src

# Relative paths in a config (data/, runs/) land here; compose points the store at /data.
WORKDIR /work
CMD ["robot-server", "run", "--config", "franka"]
