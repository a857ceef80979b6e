FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_PROJECT_ENVIRONMENT=/opt/venv PATH="/opt/venv/bin:$PATH"
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir "uv>=0.5"
WORKDIR /app
COPY pyproject.toml uv.lock package.json package-lock.json ./
RUN uv sync --frozen --no-dev --compile-bytecode && npm ci --no-audit --no-fund
COPY . .
RUN mkdir -p static/vendor && cp node_modules/htmx.org/dist/htmx.min.js node_modules/chart.js/dist/chart.umd.js static/vendor/ \
    && DJANGO_SECRET_KEY=build python manage.py collectstatic --noinput -v0 \
    && python -m compileall -q accounts billing expansion offers triggers
EXPOSE 8000
# --preload: the app is imported (and its startup objects frozen, expansion/wsgi.py) once, before
# the workers are forked; they share those pages and each starts ready.
CMD ["gunicorn", "expansion.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--preload"]
