"""Writes of the generation app, one module per area:

- `jobs`: create, run in chunks, cancel, resume and recover generation jobs;
- `prompts`: per-lineage backend config and versioned prompt templates;
- `schedules`: per-lineage schedules mirrored into django-celery-beat.
"""
from .jobs import (
    MAX_JOB_SIZE,
    ChunkOutcome,
    job_cancel,
    job_create,
    job_fail,
    job_resume,
    job_run_chunk,
    jobs_requeue_stale,
    passage_pick,
)
from .prompts import lineage_backend_config, lineage_prompts, prompt_template_save
from .schedules import schedule_delete, schedule_pause, schedule_resume, schedule_run, schedule_sync
from generation.errors import JobError

__all__ = [
    "MAX_JOB_SIZE",
    "ChunkOutcome",
    "JobError",
    "job_cancel",
    "job_create",
    "job_fail",
    "job_resume",
    "job_run_chunk",
    "jobs_requeue_stale",
    "lineage_backend_config",
    "lineage_prompts",
    "passage_pick",
    "prompt_template_save",
    "schedule_delete",
    "schedule_pause",
    "schedule_resume",
    "schedule_run",
    "schedule_sync",
]
