"""Prompts are per-lineage, versioned and recorded on every sample."""
import pytest
from django.core.management import CommandError, call_command

from curation.models import Sample
from generation.errors import JobError
from generation.models import GenerationJob, GeneratorSettings
from generation.services import (
    job_cancel,
    job_create,
    job_resume,
    job_run_chunk,
    lineage_backend_config,
    lineage_prompts,
    prompt_template_save,
)

PROMPTS = {"tutor_system": "Ask {style} about the passage.", "student_system": "Answer briefly."}


def test_saving_prompts_writes_a_new_version_and_keeps_the_old(lineage, curator):
    first = prompt_template_save(lineage=lineage, **PROMPTS, created_by=curator)
    second = prompt_template_save(lineage=lineage, tutor_system="Ask {style}, kindly.", student_system="Answer.",
                                  question_styles=["a why question", " ", "a how question"], note="kinder")
    assert (first.version, second.version) == (1, 2)
    first.refresh_from_db()
    assert first.tutor_system == "Ask {style} about the passage."
    prompts = lineage_prompts(lineage=lineage)
    assert prompts.version == f"{lineage.slug}/v2"
    assert prompts.question_styles == ("a why question", "a how question")


@pytest.mark.parametrize("fields,message", [
    ({"tutor_system": "Ask {topic}.", "student_system": "Answer."}, "tutor_system: unknown placeholder {topic}"),
    ({"tutor_system": "Ask.", "student_system": "Answer {style}."}, "student_system: unknown placeholder {style}"),
    ({"tutor_system": "Ask {style.", "student_system": "Answer."}, "tutor_system: "),
    ({"tutor_system": " ", "student_system": "Answer."}, "cannot be empty"),
])
def test_bad_templates_are_refused_with_the_field_named(lineage, fields, message):
    with pytest.raises(JobError, match=message.replace("{", r"\{").replace("}", r"\}")):
        prompt_template_save(lineage=lineage, **fields)
    assert not lineage.prompt_templates.exists()


def test_samples_record_the_prompt_version_and_their_provenance(lineage):
    prompt_template_save(lineage=lineage, **PROMPTS)
    job = job_create(lineage=lineage, requested=2, seed=4, chunk_size=2)
    job_run_chunk(job_id=job.pk)
    sample = Sample.objects.filter(job=job).first()
    provenance = sample.provenance
    assert provenance["prompt_version"] == f"{lineage.slug}/v1"
    assert provenance["backend"] == "fake" and provenance["model"] == "fake-echo-1"
    assert provenance["job"] == job.pk and provenance["passage"] == sample.passage_id
    assert {"temperature", "seed", "latency_ms", "prompt_tokens", "completion_tokens"} <= provenance.keys()


def test_the_lineage_backend_config_falls_back_to_the_settings(lineage, settings):
    settings.OUROBOROS = {**settings.OUROBOROS, "OPENAI_BASE_URL": "http://vllm:8000/v1", "OPENAI_MODEL": "m1"}
    assert lineage_backend_config(lineage=lineage).base_url == "http://vllm:8000/v1"
    GeneratorSettings.objects.filter(lineage=lineage).update(
        backend_base_url="http://127.0.0.1:11434/v1", backend_model="llama3", backend_api_key_env="OLLAMA_KEY")
    config = lineage_backend_config(lineage=lineage)
    assert (config.base_url, config.model, config.api_key_env) == ("http://127.0.0.1:11434/v1", "llama3",
                                                                    "OLLAMA_KEY")


def test_a_cancelled_job_can_be_resumed_and_finishes(lineage, django_capture_on_commit_callbacks):
    job = job_create(lineage=lineage, requested=3, seed=2, chunk_size=1)
    job_run_chunk(job_id=job.pk)
    job_cancel(job=job)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert job_resume(job=job) is True
    assert len(callbacks) == 1
    for _ in range(3):
        job_run_chunk(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == GenerationJob.Status.DONE and job.done_count == 3
    assert job_resume(job=job) is False, "a finished job has nothing to resume"


def test_progress_reports_rate_and_eta(lineage):
    from datetime import timedelta

    from django.utils import timezone

    job = GenerationJob.objects.create(
        lineage=lineage, generation=lineage.generations.get(number=1), requested=10, done_count=3, failed_count=1,
        status=GenerationJob.Status.RUNNING, started_at=timezone.now() - timedelta(minutes=2),
    )
    assert job.rate_per_minute == pytest.approx(2.0, rel=0.01)
    assert job.eta_seconds == pytest.approx(180, abs=2)


def test_the_start_job_command_queues_a_job_and_names_a_missing_lineage(lineage, capsys,
                                                                        django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        call_command("start_job", lineage.slug, "--count", "3")
    assert GenerationJob.objects.get(lineage=lineage).requested == 3
    assert "queued: 3 samples" in capsys.readouterr().out
    with pytest.raises(CommandError, match="no lineage with slug 'nope'"):
        call_command("start_job", "nope")
