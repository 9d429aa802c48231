# The gateway and its bundled plugins, installed from the wheelhouse `make wheels` fills, so the build
# needs no network (`make image` runs both).  Configure it with /etc/gateway/gateway.yaml (mount yours)
# and GATEWAY_* environment variables; GATEWAY_DATABASE_URL points it at PostgreSQL.
FROM python:3.11-slim AS build
COPY dist/wheelhouse /wheelhouse
# Everything in the wheelhouse: the gateway, the bundled plugins and their dependencies, nothing else.
RUN python -m venv /opt/gateway \
 && /opt/gateway/bin/pip install --no-cache-dir --no-index /wheelhouse/*.whl \
 && /opt/gateway/bin/pip check

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/gateway --create-home gateway
COPY --from=build /opt/gateway /opt/gateway
COPY config/gateway.yaml /etc/gateway/gateway.yaml
ENV PATH=/opt/gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GATEWAY_CONFIG=/etc/gateway/gateway.yaml
# Without GATEWAY_DATABASE_URL the data is SQLite in /var/lib/gateway/instance (one container only).
WORKDIR /var/lib/gateway
USER gateway
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]
CMD ["gateway", "serve", "--host", "0.0.0.0", "--port", "8080"]
