"""The console in a real browser (Debian's Chromium driven by Playwright) against the whole
platform: the four services in this process, the console served by uvicorn on a real port.

Every page visited is checked with axe-core (0 violations, WCAG 2.2 A/AA) and
screenshotted to tests/artifacts/console/ (gitignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
from pathlib import Path

import httpx
import pytest
import uvicorn

from services.console.app import build as build_console
from shared import devstack
from shared.assets import NODE_MODULES
from shared.auth import issue_token, revoke_token
from tests.integration.conftest import bearer, run_services

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
AXE = NODE_MODULES / "axe-core" / "axe.min.js"
ARTIFACTS = Path(__file__).parents[1] / "artifacts" / "console"
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa", "best-practice"]

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/run installs it)"),
    pytest.mark.skipif(not AXE.exists(), reason="node_modules is not installed: `npm ci` (make test does it)"),
]


@contextlib.asynccontextmanager
async def serve(app) -> str:
    port = devstack.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="module")
async def site(infra):
    """The four services on a database and a broker of their own (their consumer groups
    must not share partitions with the session's platform), and the console."""
    with devstack.Tansu() as broker:
        async with _site(infra.settings(infra.new_database(), kafka_bootstrap=broker.bootstrap)) as site:
            yield site


@contextlib.asynccontextmanager
async def _site(settings):
    async with run_services(settings, ("intake", "routing", "deadlines", "reporting")) as platform:
        transports = {name: httpx.ASGITransport(app) for name, app in platform.apps.items()}
        console = build_console(settings, transports)
        async with serve(console) as url:
            pool = platform.pool
            tokens = {
                "glasgow": await issue_token(pool, "council", local_authority="glasgow-city"),
                "fife": await issue_token(pool, "council", local_authority="fife"),
                "inspectorate": await issue_token(pool, "inspectorate"),
                "sog_glasgow": await issue_token(pool, "sog", region="glasgow"),
                "admin": await issue_token(pool, "admin"),
            }
            yield {"url": url, "tokens": tokens, "platform": platform, "console": console}


@pytest.fixture(scope="module")
async def browser():
    from playwright.async_api import async_playwright

    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"],
        )
        yield chromium
        await chromium.close()


class Person:
    """One person's browser tab, signed in with their own token."""

    shots = 0

    def __init__(self, page, base: str) -> None:
        self.page, self.base = page, base

    async def go(self, path: str):
        response = await self.page.goto(self.base + path)
        return response

    async def check(self, name: str) -> None:
        """axe-core on the page as it is: no violations; and a screenshot."""
        Person.shots += 1
        await self.page.screenshot(path=str(ARTIFACTS / f"{Person.shots:02d}-{name}.png"), full_page=True)
        await self.page.add_script_tag(path=str(AXE))
        result = await self.page.evaluate(
            "async (tags) => (await axe.run(document, {runOnly: {type: 'tag', values: tags}})).violations"
            ".map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))",
            WCAG,
        )
        assert result == [], f"{name} ({self.page.url}): " + json.dumps(result, indent=1)

    async def heading(self) -> str:
        return (await self.page.locator("h1").inner_text()).strip()


async def person(browser, site, token_name: str | None) -> Person:
    context = await browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(15_000)
    # Every request a page makes stays on the console (no CDN), and every asset is there.
    page.on("request", lambda request: site.setdefault("requested", []).append(request.url))
    page.on("response", lambda response: response.status >= 400 and "/assets/" in response.url
            and site.setdefault("missing", []).append(response.url))
    who = Person(page, site["url"])
    if token_name:
        await who.go("/sign-in")
        await page.fill("#token", site["tokens"][token_name])
        await page.click("button:has-text('Sign in')")
        await page.wait_for_load_state()
    return who


async def until_shown(who: Person, path: str, text: str, tries: int = 100) -> None:
    """Reload until the page shows `text`: the casework and deadlines views follow the
    topics, a moment behind intake. Bounded."""
    for _ in range(tries):
        await who.go(path)
        if text in await who.page.content():
            return
        await who.page.wait_for_timeout(100)
    raise AssertionError(f"{path} never showed {text!r}")


async def choose(page, fieldset_id: str, label: str) -> None:
    """Click a radio's or checkbox's label, as a person does (the design system draws the
    control over the native input)."""
    await page.locator(f"#{fieldset_id} label").get_by_text(label, exact=True).click()


async def test_the_whole_lifecycle_through_the_console(site, browser):
    base = site["url"]

    # Signing in: a wrong token is refused beside its field, the right one opens a session.
    council = await person(browser, site, None)
    await council.go("/sign-in")
    await council.check("sign-in")
    # With the keyboard alone: the first Tab reaches the skip link, which moves focus to the
    # page's main content; the next Tab reaches the token field; Enter sends the form.
    keyboard, focused = council.page.keyboard, "() => document.activeElement.id || document.activeElement.textContent.trim()"
    await keyboard.press("Tab")
    assert await council.page.evaluate(focused) == "Skip to main content"
    await keyboard.press("Enter")
    assert await council.page.evaluate(focused) == "main-content"
    await keyboard.press("Tab")
    assert await council.page.evaluate(focused) == "token"
    await keyboard.type("sir_nothing_wrong")
    await keyboard.press("Enter")
    await council.page.wait_for_load_state()
    assert "not valid" in await council.page.locator(".ds_error-summary").inner_text()
    await council.check("sign-in-refused")
    await council.page.fill("#token", site["tokens"]["glasgow"])
    await council.page.click("button:has-text('Sign in')")
    assert council.page.url == base + "/cases"
    assert "Glasgow City" in await council.page.locator(".console-account").inner_text()
    cookie = next(c for c in await council.page.context.cookies() if c["name"] == "sir_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    await council.check("council-cases-empty")

    # Notify, with one mistake first: the refused form comes back filled in, the error beside its field.
    await council.go("/notify")
    assert await council.heading() == "Notify a serious incident"
    assert "five working days" in await council.page.content()
    await council.check("notify-empty")
    page = council.page
    await page.fill("#field-council-reference", "GC-2026-17")
    await page.fill("#field-incident-date", "2026-11-31")  # no such day
    await choose(page, "field-historical", "No")
    await choose(page, "field-criterion", "Charged with an offence resulting in death or serious harm")
    await page.select_option("#field-incident-type", "serious_assault")
    await choose(page, "field-domestic-abuse-aggravated", "No")
    await choose(page, "field-subject-role", "Perpetrator")
    await page.select_option("#field-order-type", "parole_licence")
    await choose(page, "field-mappa-applies", "Yes")
    await choose(page, "field-mappa-category", "Category 1: registered sex offender")
    await choose(page, "field-mappa-level", "Level 2")
    await page.select_option("#field-signed-off-by", "service_manager")
    await page.click("button:has-text('Send notification')")
    summary = page.locator(".ds_error-summary")
    assert "real date" in await summary.inner_text()
    assert await page.locator("#field-incident-date-error").count() == 1
    assert await page.input_value("#field-council-reference") == "GC-2026-17"
    assert await page.locator("#field-mappa-level-2").is_checked()
    assert (await page.title()).startswith("Error:")
    await council.check("notify-refused")
    await summary.get_by_role("link").first.click()  # the summary's link takes the keyboard to the field
    await page.fill("#field-incident-date", "2026-11-24")
    await page.click("button:has-text('Send notification')")
    assert re.search(r"/cases/[0-9a-f-]{36}$", page.url), page.url
    case_url = page.url.removeprefix(base)
    case_id = case_url.rsplit("/", 1)[1]
    assert "Incident notified" in await page.content()
    await council.check("council-case-notified")
    await until_shown(council, "/cases", case_id[:8])
    await council.check("council-cases")

    # The Inspectorate: the notification waits for a criteria decision; assess it.
    inspector = await person(browser, site, "inspectorate")
    await until_shown(inspector, "/queues", case_id[:8])
    await inspector.check("inspectorate-queues")
    await inspector.go(case_url)
    await until_shown(inspector, case_url, "Forwarded to the Scottish Government")
    await inspector.check("inspectorate-case-notified")
    await choose(inspector.page, "field-assess-meets-criteria", "Yes")
    await inspector.page.click("button:has-text('Record the decision')")
    assert "Criteria assessed" in await inspector.page.content()

    # The council submits its review (one answer missing first).
    await council.go(case_url)
    page = council.page
    await choose(page, "field-review-review-type", "Initial analysis review")
    await page.select_option("#field-review-signed-off-by", "head_of_justice_social_work")
    for name, answer in (("reviewer-independent", "Yes"), ("risk-assessment-completed", "Yes"),
                         ("risk-assessment-up-to-date", "No"), ("risk-management-plan-in-place", "Yes"),
                         ("order-reviews-referenced", "Yes"), ("good-practice-identified", "No")):
        await choose(page, f"field-review-{name}", answer)
    await page.locator("#field-review-risk-assessment-tools label").first.click()
    await page.locator("#field-review-findings label").first.click()
    await page.click("button:has-text('Submit review')")
    assert "Say whether the plan was informed by the assessment" in await page.locator(".ds_error-summary").inner_text()
    assert await page.locator("#field-review-reviewer-independent-1").is_checked()  # kept
    await council.check("council-review-refused")
    await choose(page, "field-review-risk-management-plan-informed-by-assessment", "Yes")
    await page.click("button:has-text('Submit review')")
    assert "Review submitted" in await page.content()
    assert "Under review" in await page.content()

    # The Inspectorate asks for more information; the council provides it.
    await until_shown(inspector, "/queues", "Reviews awaiting a response: <strong>1</strong>")
    await inspector.check("inspectorate-queues-review")
    await inspector.go(case_url)
    await inspector.page.fill("#field-request-information-note", "The risk management plan, please")
    await inspector.page.click("button:has-text('Request information')")
    assert "Awaiting information" in await inspector.page.content()
    await inspector.check("inspectorate-case-information-requested")
    await council.go(case_url)
    await council.check("council-case-information-requested")
    await council.page.click("button:has-text('Record that the information was provided')")
    assert "Additional information provided" in await council.page.content()

    # A stale page: the Inspectorate's form is for a review under consideration, but the case
    # moved on meanwhile; the 409 says why and shows the case as it is.
    await inspector.go(case_url)
    await site["platform"].clients["intake"].post(
        f"/v1/cases/{case_id}/events", headers=bearer(site["tokens"]["inspectorate"]),
        json={"event_type": "review.additional_info_requested", "data": {}},
    )
    await choose(inspector.page, "field-respond-outcome", "Concluded")
    await inspector.page.click("button:has-text('Send the response')")
    refusal = await inspector.page.locator(".ds_error-summary").inner_text()
    assert "the case has moved on" in refusal and "the case is awaiting information" in refusal
    assert "Awaiting information" in await inspector.page.content()
    await inspector.check("inspectorate-case-conflict")
    await site["platform"].clients["intake"].post(
        f"/v1/cases/{case_id}/events", headers=bearer(site["tokens"]["glasgow"]),
        json={"event_type": "review.additional_info_provided", "data": {}},
    )

    # The Inspectorate responds and closes.
    await inspector.go(case_url)
    await choose(inspector.page, "field-respond-outcome", "Concluded")
    await choose(inspector.page, "field-respond-high-quality", "Yes")
    await inspector.page.click("button:has-text('Send the response')")
    assert "Inspectorate responded" in await inspector.page.content()
    await choose(inspector.page, "field-close-reason", "Concluded")
    await inspector.page.click("button:has-text('Close the case')")
    content = await inspector.page.content()
    assert "Case closed" in content and "What you can do now" not in content
    await until_shown(inspector, case_url, "Deadline met: Inspectorate response to a review")
    await inspector.check("inspectorate-case-closed")

    # Reports and deliveries.
    await inspector.go("/reports")
    await inspector.check("reports")
    await inspector.page.fill("#field-period-from", "2026-01-01")
    await inspector.page.fill("#field-period-to", "2026-11-30")
    await inspector.page.click("button:has-text('Get the national report')")
    links = inspector.page.get_by_role("link", name=re.compile("National report as"))
    assert await links.count() == 3
    await inspector.check("reports-national")
    for fmt in ("html", "csv", "json"):
        href = await inspector.page.get_by_role("link", name=f"National report as {fmt.upper()}").get_attribute("href")
        answer = await inspector.page.request.get(base + href)
        assert answer.status == 200, (fmt, answer.status)
    await inspector.page.fill("#field-year", "2026")
    await choose(inspector.page, "field-quarter", "Q4 (October to December)")
    await inspector.page.click("button:has-text('Get the quarterly report')")
    href = await inspector.page.get_by_role("link", name="Quarterly report as JSON").get_attribute("href")
    assert (await inspector.page.request.get(base + href)).status == 200
    await inspector.go("/deliveries")
    assert "Scottish Government" in await inspector.page.content()
    await inspector.check("inspectorate-deliveries")
    admin = await person(browser, site, "admin")
    assert admin.page.url == base + "/deliveries"
    await admin.check("admin-deliveries")
    # Retrying a delivery that needs none: routing's 409 comes back as a message on the page.
    [delivery, *_] = (await site["platform"].clients["routing"].get(
        "/v1/deliveries", headers=bearer(site["tokens"]["admin"]))).json()
    csrf = await admin.page.locator("input[name=csrf_token]").first.get_attribute("value")
    answer = await admin.page.request.post(base + f"/deliveries/{delivery['id']}/retry", form={"csrf_token": csrf})
    assert answer.ok and "Not retried" in await answer.text() and "nothing to retry" in await answer.text()
    await inspector.go("/cases?closed=true&local_authority=glasgow-city")
    assert case_id[:8] in await inspector.page.content()
    await inspector.check("inspectorate-cases-filtered")

    # A SOG records its decision on a MAPPA case routed to its region.
    answer = await site["platform"].clients["intake"].post(
        "/v1/notifications", headers=bearer(site["tokens"]["glasgow"]),
        json={"council_reference": "GC-2026-18", "incident_date": "2026-11-25", "criterion": "charged_with_serious_offence",
              "incident_type": "sexual_offence", "order_type": "parole_licence", "subject_role": "perpetrator",
              "mappa": {"applies": True, "category": 1, "level": 1}, "domestic_abuse_aggravated": False,
              "historical": False, "signed_off_by": "service_manager"},
    )
    mappa_case = answer.json()["case_id"]
    sog = await person(browser, site, "sog_glasgow")
    assert "Glasgow" in await sog.page.locator(".console-account").inner_text()
    await until_shown(sog, "/cases", mappa_case[:8])
    await sog.check("sog-cases")
    await sog.go(f"/cases/{mappa_case}")
    await sog.check("sog-case")
    await choose(sog.page, "field-sog-decision-scr-under-mappa", "Yes")
    await sog.page.click("button:has-text('Record the decision')")
    content = await sog.page.content()
    assert "SOG decision recorded" in content and "Superseded by a MAPPA significant case review" in content

    # Cross-authority and wrong-role pages are refused with a page that says why.
    fife = await person(browser, site, "fife")
    response = await fife.go(case_url)
    assert response.status == 403
    assert await fife.heading() == "You cannot see this page"
    await fife.check("fife-refused-glasgow-case")
    response = await council.go("/queues")
    assert response.status == 403 and "Care Inspectorate" in await council.page.content()
    await council.check("council-refused-queues")

    # A form without its CSRF token changes nothing.
    refused = await council.page.request.post(base + f"/cases/{case_id}/review", form={"review_type": "comprehensive"})
    assert refused.status == 403

    # A revoked token ends its sessions at the next page.
    token_id = site["tokens"]["fife"].split("_")[1]
    assert await revoke_token(site["platform"].pool, token_id)
    await fife.go("/cases")
    assert fife.page.url.startswith(base + "/sign-in")
    assert "no longer valid" in await fife.page.content()
    await fife.check("signed-out-revoked")
    assert not [c for c in await fife.page.context.cookies() if c["name"] == "sir_console"]

    assert all(url.startswith(base + "/") or url.startswith("data:") for url in site["requested"]), \
        {url for url in site["requested"] if not url.startswith(base)}
    assert any("/assets/ds/css/design-system.min.css" in url for url in site["requested"])
    assert not site.get("missing"), site["missing"]

    # Sign-out ends the session on the server, not only in this browser.
    cookie = next(c for c in await council.page.context.cookies() if c["name"] == "sir_console")
    await council.go("/cases")
    await council.page.click("button:has-text('Sign out')")
    assert council.page.url.startswith(base + "/sign-in")
    stale = httpx.Cookies()
    stale.set("sir_console", cookie["value"])
    async with httpx.AsyncClient(base_url=base, cookies=stale) as client:
        assert (await client.get("/cases")).headers["location"] == "/sign-in"

