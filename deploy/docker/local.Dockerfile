# One image for the local docker-compose cluster: every service, worker and the SageMaker emulator
# (which runs the trainer in a subprocess, so torch is in here too). Production images are per service.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PYTHONPATH=/app
WORKDIR /app
COPY requirements/runtime.txt requirements/services.txt requirements/
COPY trainer_image/requirements.txt trainer_image/requirements.txt
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
 && pip install -r requirements/runtime.txt -r trainer_image/requirements.txt
COPY shared shared
COPY services services
COPY deploy deploy
COPY trainer_image trainer_image
# The compose file's named volumes (auth's signing key, the service token) start as copies of these directories:
# owned by the app user, the token's readable by it only.
RUN useradd --create-home --uid 10001 app && mkdir -p /app/.data/auth /app/.data/secrets \
 && chown -R app /app/.data && chmod 700 /app/.data/secrets
USER app
ENV HOST=0.0.0.0
