# A small non-root image running `conductor serve`. The install steps mirror .ci/run.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    HOST=0.0.0.0 \
    PORT=3000 \
    CONDUCTOR_DATA_DIR=/data

RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir uv \
    && useradd --create-home --uid 10001 conductor \
    && mkdir /data && chown conductor /data

WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY app.yml ./
COPY app ./app
COPY workers ./workers
COPY templates ./templates
RUN uv sync --frozen --no-dev

USER conductor
VOLUME /data
EXPOSE 3000
CMD ["/app/.venv/bin/conductor", "serve"]
