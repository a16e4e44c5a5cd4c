# One image per service (auth, files, training, gateway), from this one Dockerfile:
#
#   docker build -f deploy/docker/service.Dockerfile --build-arg SERVICE=files --build-arg PORT=5002 \
#                -t llm-tuner/files .          (the build context is the repository root)
#
# `python -m deploy.aws.images` builds and pushes all of them (and the trainer image) to ECR.
# The image's default command serves the service's API; ECS runs its worker from the same image with another
# command (deploy/aws/processes.py), so an API and its worker always run the same code.
FROM python:3.11-slim-bookworm

ARG SERVICE
ARG PORT
RUN test -n "$SERVICE" -a -n "$PORT" || (echo "build with --build-arg SERVICE=<name> --build-arg PORT=<port>" && false)

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    SERVICE=${SERVICE} \
    HOST=0.0.0.0 \
    PORT=${PORT} \
    ENVIRONMENT=production

WORKDIR /app
COPY requirements/services.txt requirements/services.txt
RUN pip install -r requirements/services.txt

# The shared library (with the contracts: resource names and event models), the health check, this
# service's code, and for training the trainer package (LAUNCH_MODE=script uploads it as source).
COPY shared shared
COPY deploy/docker/healthcheck.py deploy/docker/healthcheck.py
COPY services/__init__.py services/__init__.py
COPY services/${SERVICE} services/${SERVICE}
COPY trainer_image trainer_image

# Non-root, with a fixed uid the ECS task definition names too; the code is owned by root and read-only to it.
RUN useradd --no-create-home --uid 10001 --shell /usr/sbin/nologin app
USER 10001

EXPOSE ${PORT}
# APIs: GET /healthz on PORT. Workers (same image, another command): their process runs and is not stopped.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/app/deploy/docker/healthcheck.py"]

CMD ["sh", "-c", "exec python -m services.${SERVICE}.app"]
