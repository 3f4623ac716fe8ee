"""Offline route: convert a scan archive into committed results on Ray Data, resumably and idempotently.

`convert(JobConfig(src, dst, ...)) -> JobSummary` runs a job on the current Ray (`digitise batch` in cli/
connects to Ray, builds the JobConfig from its flags and calls it). Every result goes through `contracts.commit`, keyed by `contracts.request_id`,
so running the same job again only does what is left.
"""
from batch_jobs.config import COMMITTED, FAILED, SKIPPED, Failure, JobAborted, JobConfig, JobError, JobSummary
from batch_jobs.job import convert, count_scans
from batch_jobs.ledger import LEDGER_FOLDER
from batch_jobs.stages import LEDGER_SCHEMA

__all__ = ["JobConfig", "JobSummary", "Failure", "JobError", "JobAborted", "convert", "count_scans",
           "COMMITTED", "SKIPPED", "FAILED", "LEDGER_FOLDER", "LEDGER_SCHEMA"]
