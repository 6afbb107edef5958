"""The review queue in a real Chromium: keys decide, and the next card arrives without a page load."""
from __future__ import annotations

import os
import shutil

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


def test_keys_decide_and_swap_in_the_next_card_without_a_page_load(page, live_server):
    make_user("kim", REVIEWER)
    lineage = make_lineage(passages=2)
    first, second, third = (make_sample(lineage, question=f"Question {i}?") for i in range(3))

    log_in(page, live_server.url, "kim")
    page.goto(f"{live_server.url}/review/?lineage={lineage.slug}")
    page.wait_for_selector(f"#sample-{first.pk}")
    page.evaluate("window.__sameDocument = true")

    page.keyboard.press("a")
    page.wait_for_selector(f"#sample-{second.pk}")
    assert "accepted" in page.inner_text("#review-card .notice")

    page.keyboard.press("x")
    page.wait_for_selector(f"#sample-{third.pk}")

    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (Sample.Status.ACCEPTED, Sample.Status.REJECTED)
    assert Review.objects.filter(reviewer__username="kim").count() == 2


def test_the_buttons_work_like_the_keys(page, live_server):
    make_user("lee", REVIEWER)
    lineage = make_lineage(passages=2)
    only = make_sample(lineage, question="<b>Bold?</b>")

    log_in(page, live_server.url, "lee")
    page.goto(f"{live_server.url}/review/?lineage={lineage.slug}")
    assert page.inner_text(f"#sample-{only.pk} .question") == "<b>Bold?</b>", "generated HTML shows as text"
    page.click("button.reject")
    page.wait_for_selector("#queue-empty")
    only.refresh_from_db()
    assert only.status == Sample.Status.REJECTED
