"""The errors the API answers with, named as SageMaker names them (botocore reads `__type`)."""

from __future__ import annotations


class SageMakerError(Exception):
    """An expected failure of a request; the HTTP edge turns it into a 400 with `__type` and `message`."""

    error_type = "ValidationException"
    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(SageMakerError):
    error_type = "ValidationException"


class JobNotFound(ValidationError):
    """SageMaker answers a missing training job with ValidationException, not ResourceNotFound."""

    def __init__(self, name: str) -> None:
        super().__init__("Requested resource not found.")
        self.name = name


class ResourceInUse(SageMakerError):
    error_type = "ResourceInUse"


class UnknownOperation(SageMakerError):
    error_type = "UnknownOperationException"


class SerializationError(SageMakerError):
    error_type = "SerializationException"
