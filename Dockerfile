# Bauxite gateway image: the package installed from its wheel on a slim Python base, run as a non-root user.
#   docker build -t bauxite:0.1.0 .
#   docker run -p 8080:8080 -v $PWD/enterprise.yaml:/etc/bauxite/enterprise.yaml:ro bauxite:0.1.0
# The config's clusters must be reachable from the container; the gateway listens on 0.0.0.0:8080.

FROM python:3.12-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin bauxite
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001:10001
EXPOSE 8080
# Liveness of the process itself (no curl in the slim image: the standard library does the request).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["bauxite"]
# --workers auto: one worker per CPU this container may use (its CPU quota, else its CPU set).
CMD ["serve", "--config", "/etc/bauxite/enterprise.yaml", "--host", "0.0.0.0", "--port", "8080", "--workers", "auto"]
