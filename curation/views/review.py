"""The review queue: one card at a time, leased to its reviewer, decided by keys or plain forms.

Views are thin: they check the role, call one service or selector, and render
the page or, for htmx requests, the card that replaces the last one.
"""
from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.http import Http404, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from curation import selectors
from curation.models import DEFAULT_REJECT_REASONS, Flag, Lineage, Sample
from curation.services.review import (
    AlreadyDecided,
    LeasedElsewhere,
    CARD_DEFERRED,
    Order,
    QueueFilter,
    ReviewError,
    queue_count_samples,
    queue_samples,
    review_card_next,
    sample_decide,
    sample_release,
    samples_bulk_decide,
)
from curation.services.review import review_undo as review_undo_service
from ouroboros.roles import curator_required, reviewer_required


class QueueFilterForm(forms.Form):
    """The queue's filters, read from the query string (and echoed into every card's forms)."""

    lineage = forms.SlugField(required=False)
    generation = forms.IntegerField(required=False, min_value=0)
    flag = forms.ChoiceField(required=False, choices=[("", "Any flags"), ("none", "No flags"),
                                                      *Flag.Kind.choices])
    min_risk = forms.FloatField(required=False, min_value=0, max_value=1, label="Risk from")
    max_risk = forms.FloatField(required=False, min_value=0, max_value=1, label="to")
    order = forms.ChoiceField(required=False, choices=Order.CHOICES)
    cluster = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def clean(self):
        data = super().clean()
        low, high = data.get("min_risk"), data.get("max_risk")
        if low is not None and high is not None and low > high:
            raise forms.ValidationError("The risk range is empty: 'from' is above 'to'.")
        return data

    def queue_filter(self) -> QueueFilter:
        data = self.cleaned_data if self.is_valid() else {}
        return QueueFilter(
            generation=data.get("generation"),
            flag=data.get("flag") or "",
            min_risk=data.get("min_risk"),
            max_risk=data.get("max_risk"),
            order=data.get("order") or Order.RISK,
            cluster=data.get("cluster"),
        )


def _queue_state(request, data, *, default: Lineage | None = None) -> tuple[Lineage | None, QueueFilterForm, str]:
    """The lineage, the filter form and its query string, from GET or from a card's hidden field.

    Without a lineage in `data`, `default` (a decided sample's own lineage) is
    used, else the first by name. A `default` that is the named lineage is not
    read again.
    """
    form = QueueFilterForm(data)
    valid = form.is_valid()
    slug = form.cleaned_data.get("lineage") if valid else data.get("lineage")
    if default is not None and slug in (None, "", default.slug):
        lineage = default
    else:
        lineages = selectors.lineage_list()
        lineage = get_object_or_404(lineages, slug=slug) if slug else lineages.first()
    if valid and lineage is not None:
        _check_generation(form, lineage)
    params = {k: v for k, v in (form.cleaned_data.items() if form.is_valid() else []) if v not in (None, "")}
    if lineage is not None:
        params["lineage"] = lineage.slug
    return lineage, form, urlencode(params)


def _check_generation(form: QueueFilterForm, lineage: Lineage) -> None:
    """The queue offers the open generation only: decisions on a closed one are
    refused (its training set is frozen), so its samples are read on its page."""
    number = form.cleaned_data.get("generation")
    if number is None:
        return
    open_number = selectors.lineage_open_generation_number(lineage=lineage)
    if number != open_number:
        form.add_error("generation", f"generation {number} of {lineage.name} is not open for review "
                                     f"(the open one is {open_number if open_number is not None else 'none'}); "
                                     "a closed generation's samples are on its page under Dashboard")


def _skipped(request, lineage: Lineage) -> list[int]:
    return request.session.get(f"skipped:{lineage.pk}", [])


def _card_context(request, lineage: Lineage | None, form: QueueFilterForm, query: str, *, sample: Sample | None = None,
                  notice: str = "", notice_level: str = "info") -> dict:
    filters = form.queue_filter()
    stats = cluster = None
    if lineage is not None and sample is None and form.is_valid():
        # One statement leases the card and reads it, its passage, its flags, its cluster and the counts.
        card = review_card_next(reviewer=request.user, lineage=lineage, filters=filters,
                                exclude_ids=tuple(_skipped(request, lineage)))
        sample, stats, cluster = card.sample, card.stats, card.cluster
    elif sample is not None:
        sample = selectors.sample_for_card(pk=sample.pk)
    if lineage is not None and stats is None:
        stats, cluster = selectors.review_card_extras(
            reviewer=request.user, lineage=lineage, samples=queue_count_samples(lineage=lineage, filters=filters),
            sample=sample)
    # A card of a decided sample is a blind second review: the first reviewer's
    # edit, the status and the cluster's view of this sample stay hidden.
    blind = sample is not None and sample.status != Sample.Status.PENDING
    flags = {flag.kind: flag for flag in sample.flags.all()} if sample else {}
    edited = blind and bool(sample.original_answer)
    reasons = list(lineage.reject_reasons or DEFAULT_REJECT_REASONS) if lineage else []
    return {
        "cluster": cluster,
        "lineage": lineage,
        "form": form,
        "query": query,
        "sample": sample,
        "blind": blind,
        # The answer as generated: for a second review of an edited sample, the original.
        "answer": (sample.original_answer if edited else sample.answer) if sample else "",
        "flags": flags,
        # Sentence support was measured on the answer the flags saw; after an edit that may not be the original.
        "answer_sentences": [] if edited else _answer_sentences(flags.get("hallucination")),
        "stats": stats,
        "notice": notice,
        "notice_level": notice_level,
        "reject_reasons": [(i, reason) for i, reason in enumerate(reasons[:9], start=1)],
    }


def _answer_sentences(flag) -> list[dict]:
    """The answer's sentences with their support, for highlighting the unsupported ones."""
    if flag is None:
        return []
    threshold = flag.evidence.get("threshold", 0)
    best = {item["sentence"]: item for item in flag.evidence.get("unsupported", [])}
    return [
        {
            "text": item["sentence"],
            "support": item["support"],
            # Flags of detector 2 say which sentences are unsupported; older ones compared support with the threshold.
            "unsupported": item.get("unsupported", item["support"] < threshold),
            "passage_title": best.get(item["sentence"], {}).get("passage_title", ""),
            "passage_text": best.get(item["sentence"], {}).get("passage_text", ""),
            # detect (issue 15): which signals marked it, with their values.
            "reasons": best.get(item["sentence"], {}).get("reasons", []),
        }
        for item in flag.evidence.get("sentences", [])
    ]


def _respond(request, lineage, form, query, *, sample=None, notice="", level="info"):
    """After an action: the next card as a partial for htmx, or a redirect back to the queue."""
    if request.htmx:
        context = _card_context(request, lineage, form, query, sample=sample, notice=notice, notice_level=level)
        return render(request, "curation/_review_card.html", context)
    if notice:
        messages.add_message(request, messages.SUCCESS if level == "success" else messages.WARNING, notice)
    return redirect(f"{reverse('review')}?{query}")


@reviewer_required
@require_safe
def review(request):
    lineage, form, query = _queue_state(request, request.GET)
    context = _card_context(request, lineage, form, query)
    context["lineages"] = selectors.lineage_list()
    context["generations"] = lineage.generations.filter(status="open") if lineage else []
    context["closed_generations"] = lineage.generations.exclude(status="open").order_by("-number") if lineage else []
    return render(request, "curation/review.html", context)


@reviewer_required
@require_POST
def review_decide(request, pk: int):
    try:
        sample = selectors.sample_for_decision(pk=pk)
    except Sample.DoesNotExist:
        raise Http404(f"no sample {pk}") from None
    # Without the queue's state (a plain form, a lost field), back to the sample's own lineage.
    lineage, form, query = _queue_state(request, QueryDict(request.POST.get("q", "")), default=sample.lineage)
    decision = request.POST.get("decision", "")
    reason = request.POST.get("reason", "")
    if reason == "other" and request.POST.get("reason_text", "").strip():
        reason = f"other: {request.POST['reason_text'].strip()}"
    try:
        sample_decide(sample=sample, reviewer=request.user, decision=decision, reason=reason,
                      edited_answer=request.POST.get("answer", ""), overlap=request.POST.get("overlap") == "1")
    except ReviewError as exc:
        if not isinstance(exc, (AlreadyDecided, LeasedElsewhere)):
            # A fixable mistake (no reason, empty edit): show the same card again with the message.
            return _respond(request, lineage, form, query, sample=sample, notice=_sentence(exc), level="warning")
        return _respond(request, lineage, form, query, notice=_sentence(exc), level="warning")
    verb = {"accept": "accepted", "reject": "rejected", "edit": "edited and accepted"}[decision]
    return _respond(request, lineage, form, query, notice=f"Sample {sample.pk} {verb}.", level="success")


@reviewer_required
@require_POST
def review_skip(request, pk: int):
    sample = get_object_or_404(Sample.objects.select_related("lineage").defer(*CARD_DEFERRED), pk=pk)
    lineage, form, query = _queue_state(request, QueryDict(request.POST.get("q", "")), default=sample.lineage)
    sample_release(sample=sample, reviewer=request.user)
    key = f"skipped:{sample.lineage_id}"
    request.session[key] = (request.session.get(key, []) + [sample.pk])[-500:]
    return _respond(request, lineage, form, query, notice=f"Sample {sample.pk} skipped.")


@reviewer_required
@require_POST
def review_undo(request):
    lineage, form, query = _queue_state(request, QueryDict(request.POST.get("q", "")))
    if lineage is None:
        raise Http404("no lineage")
    undo = review_undo_service(reviewer=request.user, lineage=lineage)
    if undo is None:
        return _respond(request, lineage, form, query, notice="Nothing to undo.", level="warning")
    # The reverted sample is the next card, even if it was skipped earlier.
    key = f"skipped:{lineage.pk}"
    request.session[key] = [pk for pk in request.session.get(key, []) if pk != undo.sample_id]
    notice = f"Undid your {undo.undoes.get_decision_display().lower()} of sample {undo.sample_id}."
    return _respond(request, lineage, form, query, sample=undo.sample, notice=notice, level="success")


class BulkForm(forms.Form):
    decision = forms.ChoiceField(choices=[("accept", "Accept"), ("reject", "Reject")])
    reason = forms.CharField(required=False, max_length=400)
    expected_count = forms.IntegerField(min_value=1)


@curator_required
@require_http_methods(["GET", "HEAD", "POST"])
def review_bulk(request):
    """Accept or reject every sample matching the queue's filters, after confirming the count."""
    data = request.POST if request.method == "POST" else request.GET
    lineage, form, query = _queue_state(request, QueryDict(data.get("q", "")) if request.method == "POST" else data)
    if lineage is None:
        raise Http404("no lineage")
    samples = queue_samples(lineage=lineage, filters=form.queue_filter())
    if request.method == "POST":
        bulk = BulkForm(request.POST)
        if bulk.is_valid():
            try:
                decided = samples_bulk_decide(
                    samples=samples, reviewer=request.user, decision=bulk.cleaned_data["decision"],
                    reason=bulk.cleaned_data["reason"], expected_count=bulk.cleaned_data["expected_count"],
                )
            except ReviewError as exc:
                messages.warning(request, _sentence(exc))
            else:
                messages.success(request, f"{bulk.cleaned_data['decision'].capitalize()}ed {decided} samples.")
                return redirect(f"{reverse('review')}?{query}")
        else:
            messages.warning(request, "Choose accept or reject, and confirm the count.")
        return redirect(f"{reverse('review-bulk')}?{query}")
    reasons = list(lineage.reject_reasons or DEFAULT_REJECT_REASONS)
    return render(request, "curation/review_bulk.html", {
        "lineage": lineage, "form": form, "query": query, "count": samples.count(),
        "preview": samples.order_by("-risk", "id")[:20], "reasons": reasons,
    })


def _sentence(exc: Exception) -> str:
    text = str(exc)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")
