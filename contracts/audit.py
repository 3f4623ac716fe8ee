"""`digitise audit ROOT`: a ledger of every request under a results root (contract v1 and v2), trusting nothing."""
import json
import posixpath
from dataclasses import asdict, dataclass, field

from contracts.errors import ContractError, Corrupt, NotCommitted
from contracts.format import MANIFEST
from contracts.result import REQUEST_ID
from contracts.store import _storage, filesystem, read_objects

COMMITTED, UNCOMMITTED, CORRUPT = "committed", "uncommitted", "corrupt"


@dataclass
class AuditEntry:
    request_id: str
    status: str                                   # committed | uncommitted (leftovers, never trusted) | corrupt
    objects: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)   # data rows per CSV
    reason: str = ""
    contract_version: str = ""                    # of a committed request ("1" or "2")


@dataclass
class AuditReport:
    root: str
    entries: list[AuditEntry]

    @property
    def summary(self) -> dict[str, int]:
        counts = {COMMITTED: 0, UNCOMMITTED: 0, CORRUPT: 0}
        for e in self.entries:
            counts[e.status] += 1
        return counts

    @property
    def ok(self) -> bool:
        """False when anything committed is corrupt. Uncommitted leftovers are harmless: a retry overwrites them."""
        return self.summary[CORRUPT] == 0

    def to_dict(self) -> dict:
        return {"root": self.root, "summary": self.summary, "ok": self.ok, "entries": [asdict(e) for e in self.entries]}

    def format_table(self) -> str:
        lines = [f"{'request_id':32}  {'status':11}  v  objects  rows  reason"]
        for e in self.entries:
            rows = "/".join(str(n) for n in e.rows.values()) or "-"
            lines.append(f"{e.request_id:32}  {e.status:11}  {e.contract_version or '-'}  {len(e.objects):7}  "
                         f"{rows:4}  {e.reason}")
        s = self.summary
        lines.append(f"{len(self.entries)} requests under {self.root}: {s[COMMITTED]} committed, "
                     f"{s[UNCOMMITTED]} uncommitted (leftovers), {s[CORRUPT]} corrupt")
        return "\n".join(lines)


def audit(root: str, *, fs=None) -> AuditReport:
    """Check every request folder under `root` against its manifest and the contract."""
    fs, base = filesystem(root, fs)
    with _storage("list", base):
        folders = sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(base, detail=False)) if fs.exists(base) else []
    entries = [_audit_one(fs, base, name) for name in folders if REQUEST_ID.fullmatch(name)]
    return AuditReport(root, entries)


def _audit_one(fs, base: str, request_id: str) -> AuditEntry:
    prefix = posixpath.join(base, request_id)
    with _storage("list", prefix):
        names = sorted(posixpath.basename(p) for p in fs.ls(prefix, detail=False))
    names = [n for n in names if not n.startswith(".")]  # temp files of an interrupted local write
    entry = AuditEntry(request_id, COMMITTED, names)
    try:
        objects = read_objects(base, request_id, fs=fs)
        entry.rows = {n: objects[n].count(b"\n") - 1 for n in sorted(objects) if n.endswith(".csv")}
        entry.contract_version = json.loads(objects[MANIFEST])["contract_version"]
    except NotCommitted:
        entry.status, entry.reason = UNCOMMITTED, f"no {MANIFEST}: leftovers of an interrupted attempt"
        entry.rows = {n: _count_rows(fs, posixpath.join(prefix, n)) for n in names if n.endswith(".csv")}
    except Corrupt as e:
        entry.status, entry.reason = CORRUPT, f"{e.obj}: {e.reason}"
    except ContractError as e:
        entry.status, entry.reason = CORRUPT, str(e)
    return entry


def _count_rows(fs, path: str) -> int:
    with _storage("read", path):
        return fs.cat_file(path).count(b"\n") - 1
