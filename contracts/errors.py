"""The contract's exceptions. Every failure the contract reports is one of these."""


class ContractError(Exception):
    """Base class: anything that stops a result from being committed or trusted."""


class ContractViolation(ContractError, ValueError):
    """A result, calibration or object set breaks contract v1. Nothing was written."""


def expect(ok: bool, message: str) -> None:
    """Raise ContractViolation(message) unless ok: the contract's one check."""
    if not ok:
        raise ContractViolation(message)


class ConflictError(ContractError):
    """A different committed result already exists under the same request id (should never happen:
    the id is a hash of everything the result depends on, so this means a non-deterministic writer)."""


class NotCommitted(ContractError, LookupError):
    """No manifest for this request: it was never committed (objects there, if any, are leftovers)."""


class Corrupt(ContractError):
    """A committed request whose objects do not match its manifest, or a manifest that does not parse."""

    def __init__(self, request_id: str, obj: str, reason: str):
        super().__init__(f"request {request_id}: {obj}: {reason}")
        self.request_id, self.obj, self.reason = request_id, obj, reason


class StorageError(ContractError, OSError):
    """The store failed (network, permissions, a write that did not land). Retriable; nothing was acknowledged."""
