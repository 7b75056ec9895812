# Caveat in a container: the Discord bot by default, the dashboard on request.
#
#   docker build -t caveat .            # --build-arg BASE=... for a mirror; the default is the official image
#   docker build -t caveat --build-arg TORCH_SPEC=/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl .
#                                       # torch's CPU wheel from ./wheels/ (git-ignored) instead of the CPU index
#   docker run -d --name caveat -e DISCORD_TOKEN -v caveat-data:/data caveat
#   docker run -d -p 8080:8080 -e CAVEAT_DASHBOARD_URL -v caveat-data:/data caveat \
#       --log-json serve --host 0.0.0.0 --allow-remote
#
# Stage `build` installs the serving environment (`pip install '.[postgres]'`: ONNX Runtime, no torch) into
# /opt/venv and, in a throwaway venv, torch's CPU wheel plus the train extra, only to run `caveat export-model` once: the int8
# ONNX model lands in /opt/caveat/cache. The final stage copies the serving venv and that cache, nothing else: no
# torch, no build tools; it runs as uid 10001 under tini. Secrets (DISCORD_TOKEN, CAVEAT_DB with a password) come with
# `docker run -e`, never in the image; the database lives on the /data volume.
ARG BASE=python:3.11-slim
# Where the export venv gets torch: any pip arguments that name a CPU build of torch 2.13.0 (an index, a wheel
# under /wheels, which holds ./wheels/ of the build context when there is one, or a --find-links folder).
ARG TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"

FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    CAVEAT_CACHE_DIR=/opt/caveat/cache
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY classifiers ./classifiers
COPY policies ./policies
# The serving environment: what `pip install '.[postgres]'` installs (the PostgreSQL driver is small and lets one
# image run on CAVEAT_DB=postgresql://...; README "Scaling out").
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install ".[postgres]"
# Optional local wheels: ./wheels/ (if any) lands in /wheels; README.md is named so that the COPY never matches nothing.
COPY README.md wheel[s] /wheels/
# The export environment: torch from TORCH_SPEC first (torch==2.13.0 from PyPI is the multi-GB CUDA build, and
# the build stops if a CUDA build got in), then the train extra. Used once, for the int8 export, and left behind
# with this stage. export-model leaves its folder private (0700): uid 10001 must read it, and only read it.
ARG TORCH_SPEC
RUN python -m venv /opt/train \
 && /opt/train/bin/pip install ${TORCH_SPEC} \
 && /opt/train/bin/python -c "import torch, sys; sys.exit(torch.version.cuda and 'TORCH_SPEC: a CUDA build')" \
 && /opt/train/bin/pip install ".[train]" \
 && /opt/train/bin/caveat export-model \
 && chmod -R a+rX /opt/caveat/cache

FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 caveat \
 && useradd --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin caveat \
 && mkdir -p /data \
 && chown 10001:10001 /data
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/caveat/cache /opt/caveat/cache
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    CAVEAT_DB=/data/caveat.db \
    CAVEAT_CACHE_DIR=/opt/caveat/cache
USER 10001:10001
WORKDIR /data
# Fail the build, not the first start, when the baked int8 model does not load without torch.
RUN caveat health --no-db
VOLUME ["/data"]
EXPOSE 8080
# SIGINT reaches Python as KeyboardInterrupt, so `caveat run` and `caveat serve` close Discord, the dashboard and the
# database before they exit; tini (PID 1) forwards it and reaps child processes.
STOPSIGNAL SIGINT
# Opens the database read-only and loads the model (about a second of CPU), like the serving process does.
HEALTHCHECK --interval=60s --timeout=30s --start-period=60s --retries=3 \
    CMD ["caveat", "health", "--db", "/data/caveat.db"]
ENTRYPOINT ["/usr/bin/tini", "--", "caveat"]
CMD ["--log-json", "run"]
