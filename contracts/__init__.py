"""Contract v2 (v1 results stay readable): the one serialiser, validator and committer of digitisation results. Both routes call only this."""
from contracts.audit import AuditEntry, AuditReport, audit
from contracts.calibration import N_DEPTH, Calibration, CurveSpec
from contracts.errors import ConflictError, ContractError, ContractViolation, Corrupt, NotCommitted, StorageError
from contracts.format import object_names, serialise
from contracts.json_input import loads_strict
from contracts.result import (CONTRACT_VERSION, READABLE_VERSIONS, Digitisation, InputInfo, bridged_intervals,
                              depth_grid, request_id, written_depth)
from contracts.store import Receipt, commit, filesystem, is_committed, load, read_objects
from contracts.validate import validate

__all__ = [
    "CONTRACT_VERSION", "READABLE_VERSIONS", "N_DEPTH", "Calibration", "CurveSpec", "Digitisation", "InputInfo",
    "Receipt", "bridged_intervals", "written_depth",
    "AuditEntry", "AuditReport", "request_id", "depth_grid", "object_names", "serialise", "validate",
    "commit", "load", "read_objects", "is_committed", "audit", "filesystem", "loads_strict",
    "ContractError", "ContractViolation", "ConflictError", "NotCommitted", "Corrupt", "StorageError",
]
