# slideserver: serves the slides mounted at /slides on port 8000, as a non-root user.
#   docker build -t slideserver .
#   docker run -p 8000:8000 -v /path/to/slides:/slides:ro -e SLIDESERVER_AUTH=tokens \
#     -e SLIDESERVER_BEHIND_TLS_PROXY=1 slideserver   # or mount a certificate: SLIDESERVER_SSL_*

FROM node:20-bookworm-slim AS viewer
WORKDIR /src/viewer
COPY viewer/package.json viewer/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY viewer/ ./
RUN mkdir -p /src/slideserver/static && npm run build

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    SLIDESERVER_HOST=0.0.0.0 SLIDESERVER_PORT=8000 \
    SLIDESERVER_DATABASE_URL=sqlite:////var/lib/slideserver/catalog.db
RUN useradd --system --create-home --uid 10001 slideserver \
    && mkdir -p /slides /var/lib/slideserver && chown slideserver /var/lib/slideserver
WORKDIR /app
COPY pyproject.toml README.md ./
COPY slideserver/ slideserver/
COPY --from=viewer /src/slideserver/static/viewer/ slideserver/static/viewer/
RUN pip install ".[postgres]"
USER slideserver
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["slideserver", "serve", "/slides"]
