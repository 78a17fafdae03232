# The rfm-stream worker image (used by docker-compose.yml as the "worker" service).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /build

# Dependencies first, from pyproject.toml alone, so that a code change reuses this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip install -r requirements.txt

COPY README* setup.py ./
COPY schemas ./schemas
COPY streams ./streams
RUN pip install --no-deps . \
 && cd / && rm -rf /build

RUN useradd --create-home --uid 10001 --user-group rfm \
 && mkdir -p /var/lib/rfm-stream \
 && chown rfm:rfm /var/lib/rfm-stream

USER rfm
WORKDIR /home/rfm
ENV RFM_DATA_DIR=/var/lib/rfm-stream \
    RFM_WEB_HOST=0.0.0.0
VOLUME ["/var/lib/rfm-stream"]
EXPOSE 6066

CMD ["rfm-stream", "worker"]
