# SignalDesk in a container: built by users (docker build -t signaldesk .), not tested here.
# The same two commands as the Procfile: `signaldesk migrate` once per release, then the bot.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY bot ./bot
COPY core ./core
COPY migrations ./migrations

# The locked versions (uv export) with the ccxt extra; then SignalDesk itself without deps.
RUN pip install uv==0.9.30 \
    && uv export --frozen --no-dev --extra ccxt --no-emit-project --no-hashes -o /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && pip install --no-deps . \
    && rm /tmp/requirements.txt \
    && useradd --create-home --uid 10001 signaldesk

USER 10001
WORKDIR /home/signaldesk
# /healthz answers on PORT when it is set (webhook ingestion and health).
EXPOSE 8080
CMD ["sh", "-c", "signaldesk migrate && exec python -m bot"]
