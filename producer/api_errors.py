"""Errors in OpenAI's shape, as vLLM answers them: ``{"error": {"message", "type", "param", "code"}}``
(vLLM's ErrorResponse: ``code`` is the HTTP status). The service's /v1 and scoring routes answer it, and
a batch file's failed lines carry it in ``error``, as ``vllm run-batch`` writes them."""

from __future__ import annotations

from http import HTTPStatus

# The types vLLM gives (its create_error_response), named as the openai SDK names its exceptions.
TYPES = {
    400: "BadRequestError", 401: "AuthenticationError", 403: "PermissionDeniedError", 404: "NotFoundError",
    409: "ConflictError", 413: "RequestTooLargeError", 422: "UnprocessableEntityError", 429: "RateLimitError",
    500: "InternalServerError", 503: "ServiceUnavailableError", 504: "TimeoutError",
}  # fmt: skip


def error_type(status: int) -> str:
    if status in TYPES:
        return TYPES[status]
    try:
        return HTTPStatus(status).phrase.replace(" ", "") + "Error"
    except ValueError:
        return "Error"


def error_body(status: int, message: str, param: str | None = None) -> dict:
    """vLLM's ErrorResponse as JSON."""
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": status}}
