# One image build, one target per service: `docker build --target catalog .`
# Each target runs the same command `quantized dev` runs for that child.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gen ./gen
COPY quantized_runtime ./quantized_runtime
COPY quantized_cli ./quantized_cli
COPY edge ./edge
COPY catalog_svc ./catalog_svc
COPY billing_svc ./billing_svc
COPY provider_svc ./provider_svc
RUN pip install --no-cache-dir . && useradd --system --uid 10001 quantized
USER quantized

FROM base AS catalog
EXPOSE 50051
CMD ["quantized", "serve", "catalog"]

FROM base AS billing
EXPOSE 50052
CMD ["quantized", "serve", "billing"]

FROM base AS provider
EXPOSE 50053
CMD ["quantized", "serve", "provider"]

FROM base AS edge
EXPOSE 8080 50050
CMD ["quantized", "serve", "edge"]
