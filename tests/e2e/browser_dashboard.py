"""Drives the operator dashboard in headless Chromium (Playwright for Python, the system
Chromium). Prints one JSON object of what it saw; tests/e2e/browser.rs asserts.

argv: chromium, base url, admin token, read-only token, a path the Rust side watches
      (a file it writes "go" into once a job was enqueued), screenshot dir ("" for none),
      the user's stored key (no page may contain it).

The queue holds two dead items ("broken-1", "broken-2": payloads no worker can read) before
this starts; retrying one sends it to a worker, which kills it again under a new reference.
"""

import json
import sys
import time

from playwright.sync_api import sync_playwright

chromium, base, admin, reader, signal, shots, key = sys.argv[1:8]
seen = {"refused": [], "third_party_requests": [], "secrets_on_pages": []}


def scan(page):
    """Every page seen is searched for the key and the tokens."""
    html = page.content()
    for name, secret in (("key", key), ("admin token", admin), ("read-only token", reader)):
        if secret in html:
            seen["secrets_on_pages"].append(f"{name} on {page.url}")


def dead_reference(page, item):
    row = page.locator(f"table.items tbody tr:has(code:text-is('{item}'))")
    if row.count() == 0:
        return None
    return row.locator("button[name=one]").get_attribute("value")


def shot(page, name):
    if shots:
        page.screenshot(path=f"{shots}/{name}.png", full_page=True)


def watch(page):
    page.on(
        "console",
        lambda m: seen["refused"].append(m.text)
        if m.type == "error" and "Failed to load resource" not in m.text
        else None,
    )
    page.on(
        "request",
        lambda r: seen["third_party_requests"].append(r.url)
        if not (r.url.startswith(base) or r.url.startswith("data:"))
        else None,
    )


def sign_in(page, token):
    page.goto(f"{base}/dashboard")
    page.fill("input[name=token]", token)
    with page.expect_navigation():
        page.click("button[type=submit]")


with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=chromium,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run"],
    )
    admin_page = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
    watch(admin_page)
    admin_page.goto(f"{base}/dashboard")
    seen["signed_out_url"] = admin_page.url
    shot(admin_page, "dashboard-sign-in")
    sign_in(admin_page, admin)
    seen["heading"] = admin_page.inner_text("h1")
    seen["cookie_http_only"] = all(c["httpOnly"] for c in admin_page.context.cookies())
    seen["cookie_same_site"] = [c["sameSite"] for c in admin_page.context.cookies()]
    before = admin_page.inner_text(".legend")
    seen["before"] = before
    # Tell the Rust side to enqueue a job, then wait for the live part to show it ended,
    # without reloading the page.
    with open(signal, "w") as f:
        f.write("go")
    admin_page.wait_for_function(
        "() => /succeeded [1-9]/.test(document.querySelector('.legend').innerText)",
        timeout=30000,
    )
    seen["after"] = admin_page.inner_text(".legend")
    seen["reloaded"] = False
    shot(admin_page, "dashboard-overview")
    seen["admin_retry_buttons"] = admin_page.locator("form[action='/dashboard/queues/retry-dead'] button").count()
    # The job's page: its timeline, the request behind a click, the video.
    admin_page.click("nav >> text=Jobs")
    shot(admin_page, "dashboard-jobs")
    admin_page.click("table a")
    seen["timeline"] = admin_page.locator("section:has(h2:text('Timeline')) tbody tr").count()
    seen["prompt_visible_before"] = admin_page.is_visible("pre.request")
    admin_page.click("summary")
    seen["prompt_visible_after"] = admin_page.is_visible("pre.request")
    seen["video"] = admin_page.locator("video").count()
    shot(admin_page, "dashboard-job")
    scan(admin_page)

    # Queues: the dead items; retry one, which dies again under a new reference.
    admin_page.click("nav >> text=Queues")
    admin_page.click(".tabs >> text=dead")
    seen["dead_rows"] = admin_page.locator("table.items tbody tr").count()
    shot(admin_page, "dashboard-queues")
    scan(admin_page)
    first = dead_reference(admin_page, "broken-1")
    with admin_page.expect_navigation():
        admin_page.click(f"button[name=one][value='{first}']")
    seen["after_retry_url"] = admin_page.url
    again = first
    deadline = time.monotonic() + 20
    while again in (first, None) and time.monotonic() < deadline:
        admin_page.reload()
        again = dead_reference(admin_page, "broken-1")
    seen["retried_item_died_again_as_another_entry"] = again not in (first, None)
    # Purge, first with a wrong confirmation (refused, nothing deleted), then typed right.
    admin_page.fill("input[name=confirm]", "yes")
    with admin_page.expect_navigation():
        admin_page.click("button.danger")
    seen["wrong_confirmation_heading"] = admin_page.inner_text("h1")
    scan(admin_page)
    admin_page.click("text=Back")
    seen["dead_rows_after_refused_purge"] = admin_page.locator("table.items tbody tr").count()
    admin_page.fill("input[name=confirm]", "dead")
    with admin_page.expect_navigation():
        admin_page.click("button.danger")
    seen["dead_rows_after_purge"] = admin_page.locator("table.items tbody tr").count()
    seen["dead_tab_after_purge"] = admin_page.inner_text(".tabs a[aria-current]")

    # Keys: the user's key with its limiter windows, never the key itself.
    admin_page.click("nav >> text=Keys")
    seen["keys_table"] = admin_page.inner_text("table.keys")
    shot(admin_page, "dashboard-keys")
    scan(admin_page)
    # The admin session's own POST without its CSRF token: refused.
    bare = admin_page.request.post(f"{base}/dashboard/queues/retry-dead", form={"confirm": "all"})
    seen["admin_without_csrf_status"] = bare.status
    with admin_page.expect_navigation():
        admin_page.click("text=Sign out")
    seen["after_sign_out_url"] = admin_page.url

    read_page = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
    watch(read_page)
    sign_in(read_page, reader)
    seen["read_only_label"] = read_page.inner_text(".who")
    seen["read_only_retry_buttons"] = read_page.locator("form[action='/dashboard/queues/retry-dead'] button").count()
    scan(read_page)
    read_page.goto(f"{base}/dashboard/queues?state=dead")
    seen["read_only_queue_buttons"] = read_page.locator("main button").count()
    # A forged action from the read-only session, with its own CSRF token: refused.
    csrf = read_page.get_attribute("input[name=csrf]", "value")
    forged = read_page.request.post(f"{base}/dashboard/queues/retry-dead", form={"csrf": csrf})
    seen["read_only_forged_status"] = forged.status
    browser.close()

print(json.dumps(seen))
