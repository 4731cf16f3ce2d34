# The ipaas-klaviyo service image: every command of the `ipaas-klaviyo` CLI (run, poll-profiles, topics,
# dlq, errors..., and the development commands simulate/kafka/demo from the `simulators` package).
# docker-compose.yml builds it once and runs it as several services.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# README.md* : pyproject.toml names README.md as the readme; the glob keeps the build working while it is absent.
COPY pyproject.toml README.md* ./
COPY consumer ./consumer
COPY simulators ./simulators
COPY topics ./topics
# the oauth-encryption extra (cryptography): an encrypted token store (oauth.token_key) works in the image too
RUN pip install ".[oauth-encryption]" \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin ipaas \
    && mkdir -p /app/.run \
    && chown ipaas /app/.run

USER ipaas
EXPOSE 9400
ENTRYPOINT ["ipaas-klaviyo"]
CMD ["run"]
