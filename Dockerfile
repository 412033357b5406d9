# fleetml API: `docker build -t fleetml .` then
#   docker run -d -p 8000:8000 -v fleetml-data:/data fleetml
#   docker exec <container> fleetml keys create --role admin --name me   # first key
# Build stage: build the wheel and install it with its dependencies into /install.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fleetml ./fleetml
RUN pip install --prefix=/install .

# Runtime stage: the interpreter, the installed packages, a non-root user and the data volume.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FLEETML_HOME=/data \
    MLFLOW_DISABLE_TELEMETRY=true
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin fleetml \
    && mkdir -p /data \
    && chown fleetml:fleetml /data
USER fleetml
WORKDIR /data
# Declared after the chown so a fresh named volume starts owned by the fleetml user.
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["fleetml"]
# One container runs the API and the scheduler (scoring, alerts, decisions, forecasts); with
# several API replicas, run them with `serve --host 0.0.0.0` and one container with `worker`.
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--worker"]
