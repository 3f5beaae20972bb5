# slideserver, installed from its wheel, serving the slides mounted at /slides on port 8000.
#   docker build -t slideserver .
#   docker run -p 8000:8000 -v /path/to/slides:/slides:ro slideserver
# The image requires API tokens (SLIDESERVER_AUTH=tokens) and expects a TLS proxy in front
# (SLIDESERVER_BEHIND_TLS_PROXY=1: plain HTTP on 0.0.0.0 inside the container, Secure cookies).
# The first token:  docker exec CONTAINER slideserver token create --role admin --name admin
# deploy/docker-compose.yml runs two instances behind nginx with PostgreSQL and Redis.

# --- builder: node and python; `python -m build` runs npm for the viewer (setup.py) ---
FROM node:20-bookworm-slim AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/build && /opt/build/bin/pip install --no-cache-dir "build>=1.2"
WORKDIR /src
COPY . .
RUN rm -rf slideserver/static/viewer viewer/node_modules \
    && /opt/build/bin/python -m build --wheel --outdir /dist .

# --- the image: the wheel, installed; nothing of the source tree ---
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    SLIDESERVER_HOST=0.0.0.0 SLIDESERVER_PORT=8000 \
    SLIDESERVER_AUTH=tokens SLIDESERVER_BEHIND_TLS_PROXY=1 SLIDESERVER_DRAIN_SECONDS=5 \
    SLIDESERVER_DATABASE_URL=sqlite:////var/lib/slideserver/catalog.db
RUN useradd --system --create-home --uid 10001 slideserver \
    && mkdir -p /slides /var/lib/slideserver && chown slideserver /var/lib/slideserver
COPY --from=builder /dist/ /tmp/dist/
RUN set -- /tmp/dist/slideserver-*.whl && pip install "$1[postgres]" && rm -rf /tmp/dist
USER slideserver
VOLUME /var/lib/slideserver
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"
STOPSIGNAL SIGTERM
CMD ["slideserver", "serve", "/slides"]
