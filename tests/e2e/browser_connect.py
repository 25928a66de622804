"""Drives the "connect your key" page in headless Chromium (Playwright for Python, the system
Chromium). Prints one JSON object of what it saw; the Rust test (tests/e2e/browser.rs) asserts.

argv: chromium, link url, return url prefix, a key the provider rejects, a good key,
      screenshot dir ("" for none).
"""

import json
import sys

from playwright.sync_api import sync_playwright

chromium, url, return_prefix, bad_key, good_key, shots = sys.argv[1:7]
seen = {"third_party_requests": [], "refused": []}


def shot(page, name):
    if shots:
        page.screenshot(path=f"{shots}/{name}.png", full_page=True)


with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=chromium,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    )
    page = browser.new_page(viewport={"width": 720, "height": 900})
    origin = url.split("/connect/")[0]
    page.on(
        "request",
        lambda r: seen["third_party_requests"].append(r.url)
        if not (r.url.startswith(origin) or r.url.startswith(return_prefix) or r.url.startswith("data:"))
        else None,
    )
    # What the Content-Security-Policy refused (a page with an inline script or a foreign
    # style would show here). Loads answered 4xx are logged too, and are expected.
    page.on(
        "console",
        lambda m: seen["refused"].append(m.text)
        if m.type == "error" and "Failed to load resource" not in m.text
        else None,
    )

    page.goto(url)
    seen["title"] = page.title()
    seen["fields"] = page.eval_on_selector_all("form input, form textarea", "els => els.map(e => [e.name, e.type])")
    shot(page, "connect-page")

    # A key the provider refuses: the form again with the provider's reason.
    page.fill("input[name=api_key]", bad_key)
    page.click("button[type=submit]")
    page.wait_for_selector(".error")
    seen["rejection"] = page.inner_text(".error")
    seen["rejected_page_has_key"] = bad_key in page.content()
    seen["rejected_field_value"] = page.input_value("input[name=api_key]")
    shot(page, "connect-rejected")

    # The good key: stored, and back to the app.
    page.fill("input[name=api_key]", good_key)
    with page.expect_navigation():
        page.click("button[type=submit]")
    seen["returned_to"] = page.url

    # The same link again: refused.
    page.goto(url)
    seen["reused"] = page.inner_text("h1")
    shot(page, "connect-invalid")
    browser.close()

print(json.dumps(seen))
