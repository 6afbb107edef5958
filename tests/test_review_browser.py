"""The review queue in a real Chromium: keys decide, and the next card arrives without a page load."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from curation.models import Review, Sample
from tests.factories import REVIEWER, make_lineage, make_sample, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


@pytest.fixture
def page(live_server, monkeypatch):
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is missing: install Debian's `chromium` package (.ci/run does)")
    # Playwright's sync API runs an event loop in this thread; the ORM calls made
    # by the test itself are still synchronous and safe.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        page.set_default_timeout(15_000)
        yield page
        browser.close()


def log_in(page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", "pw-" + username)
    page.click("button[type=submit]")
    page.wait_for_url("**/review/**")


ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def status_of(sample) -> str:
    sample.refresh_from_db()
    return sample.status


def test_a_reviewer_works_twenty_cards_by_keyboard_alone(page, live_server):
    """Accept, reject with a reason, edit and undo, all by keys; the database checked after each step."""
    make_user("kim", REVIEWER)
    lineage = make_lineage(passages=2)
    samples = [make_sample(lineage, question=f"Question {i}?", answer=f"Answer number {i}.") for i in range(20)]
    by_pk = {s.pk: s for s in samples}

    log_in(page, live_server.url, "kim")
    page.goto(f"{live_server.url}/review/?lineage={lineage.slug}&order=oldest")
    page.wait_for_selector(f"#sample-{samples[0].pk}")
    page.wait_for_selector("#review-card[data-ready='1']")
    page.evaluate("window.__sameDocument = true")
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#review-card").screenshot(path=str(ARTIFACTS / "review-card.png"))

    def current() -> int:
        return int(page.get_attribute("#review-card article", "data-sample"))

    def press(*keys: str) -> None:
        before = page.inner_text("#review-card")
        for key in keys:
            page.keyboard.press(key)
        page.wait_for_function(
            "(before) => { const c = document.querySelector('#review-card');"
            " return c.dataset.ready === '1' && c.innerText !== before; }", arg=before)
        assert page.evaluate("window.__sameDocument === true"), f"the page was reloaded after {keys}"

    expected: dict[int, str] = {}
    for turn in range(17):
        pk = current()
        if turn == 5:  # reject with reason 3 (off-topic)
            press("x", "3")
            expected[pk] = "rejected"
            assert Review.objects.get(sample_id=pk).reason == "off-topic"
        elif turn == 9:  # edit, then accept the edited text
            page.keyboard.press("e")
            editor = page.locator("#edit-panel textarea")
            editor.fill("An answer the reviewer rewrote.")
            press("Control+Enter")
            expected[pk] = "accepted"
            sample = by_pk[pk]
            sample.refresh_from_db()
            assert (sample.answer, sample.original_answer) == ("An answer the reviewer rewrote.",
                                                              f"Answer number {samples.index(sample)}.")
        else:
            press("a")
            expected[pk] = "accepted"
        assert status_of(by_pk[pk]) == expected[pk]

    # Undo the last decision: that card comes back, pending again.
    last = list(expected)[-1]
    press("u")
    assert current() == last and status_of(by_pk[last]) == "pending"
    del expected[last]

    while page.locator("#review-card article").count():
        pk = current()
        press("a")
        expected[pk] = "accepted"
        assert status_of(by_pk[pk]) == "accepted"

    assert len(expected) == 20 and page.locator("#queue-empty").count() == 1
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    decisions = Review.objects.filter(reviewer__username="kim")
    assert decisions.exclude(decision="undo").count() == 21 and decisions.filter(decision="undo").count() == 1
    assert Sample.objects.filter(lineage=lineage, status="rejected").count() == 1
    assert Sample.objects.filter(lineage=lineage, status="accepted").count() == 19


def test_the_buttons_work_like_the_keys(page, live_server):
    make_user("lee", REVIEWER)
    lineage = make_lineage(passages=2)
    only = make_sample(lineage, question="<b>Bold?</b>")

    log_in(page, live_server.url, "lee")
    page.goto(f"{live_server.url}/review/?lineage={lineage.slug}")
    assert page.inner_text(f"#sample-{only.pk} .question") == "<b>Bold?</b>", "generated HTML shows as text"
    page.check("input[name=reason][value=unsafe]")
    page.click("button.reject")
    page.wait_for_selector("#queue-empty")
    only.refresh_from_db()
    assert only.status == Sample.Status.REJECTED
