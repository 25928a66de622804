"""The official `fal-client` against the simulator, unchanged.

Environment: FAL_KEY (a sim_ key), FAL_QUEUE_RUN_HOST (the simulator's TLS listener,
`127.0.0.1:{port}`: the client speaks only https to its queue host), SSL_CERT_FILE (the
simulator's CA, which httpx trusts through it), SIM_URL (the simulator's plain listener, for
its knobs), PNG_FILE (an image to animate). Exits non-zero (with a traceback) when anything
is not as the real API would answer. Nothing in the client is changed or patched: only its
polling interval argument is shortened so the test is fast.
"""

import asyncio
import os
import sys

# This file is named like the package it runs: import the package, not this file.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != HERE]

import httpx  # noqa: E402
import fal_client  # noqa: E402

SIM = os.environ["SIM_URL"]
LUMA = "fal-ai/luma-dream-machine/ray-2-flash"
KLING = "fal-ai/kling-video/v2.1/master/image-to-video"
FAST = 0.05


def knobs(**changes):
    response = httpx.put(f"{SIM}/_sim/config", json=changes)
    assert response.status_code == 200, response.text


def video_of(result):
    url = result["video"]["url"]
    video = httpx.get(url)
    assert video.status_code == 200 and video.content[4:8] == b"ftyp", video
    return video


def main():
    assert fal_client.client.QUEUE_URL_FORMAT == f"https://{os.environ['FAL_QUEUE_RUN_HOST']}/"

    # submit → status → result, through the request handle (the answer's URLs).
    handle = fal_client.submit(
        LUMA, arguments={"prompt": "a lighthouse at dusk", "duration": "9s", "aspect_ratio": "9:16"}
    )
    assert handle.request_id, handle
    first = handle.status(with_logs=True)
    assert isinstance(first, (fal_client.Queued, fal_client.InProgress, fal_client.Completed)), first
    events = list(handle.iter_events(with_logs=True, interval=FAST))
    assert isinstance(events[-1], fal_client.Completed), events
    assert events[-1].metrics["inference_time"] > 0, events[-1]
    assert events[-1].error is None, events[-1]
    video_of(handle.get(interval=FAST))

    # The module functions rebuild the URLs from the app id (owner/alias only).
    done = fal_client.status(LUMA, handle.request_id, with_logs=False)
    assert isinstance(done, fal_client.Completed), done
    video_of(fal_client.result(LUMA, handle.request_id))

    # subscribe, with an image as a data URI and queue updates.
    with open(os.environ["PNG_FILE"], "rb") as f:
        image = fal_client.encode(f.read(), "image/png")
    updates = []
    result = fal_client.subscribe(
        KLING,
        arguments={"prompt": "slow dolly-in", "image_url": image, "duration": "5"},
        with_logs=True,
        interval=FAST,
        on_queue_update=updates.append,
    )
    assert updates and isinstance(updates[-1], fal_client.Completed), updates
    video_of(result)

    # Cancel while it waits; then it is over with an error, and a second cancel is too late.
    knobs(render_time_ms=60_000)
    waiting = fal_client.submit(LUMA, arguments={"prompt": "patience"})
    assert isinstance(waiting.status(), (fal_client.Queued, fal_client.InProgress))
    waiting.cancel()
    cancelled = waiting.status()
    assert isinstance(cancelled, fal_client.Completed) and cancelled.error, cancelled
    try:
        fal_client.cancel(LUMA, waiting.request_id)
        raise AssertionError("cancelling a completed request must fail")
    except fal_client.FalClientHTTPError as e:
        assert e.status_code == 400, e
    knobs(render_time_ms=150)

    # A request fal gives up on completes with error and error_type.
    knobs(failure_rate=1.0)
    failing = fal_client.submit(LUMA, arguments={"prompt": "unlucky"})
    ended = list(failing.iter_events(interval=FAST))[-1]
    assert ended.error and ended.error_type == "runner_disconnected", ended
    try:
        failing.get(interval=FAST)
        raise AssertionError("the result of a failed request is an error")
    except fal_client.FalClientHTTPError as e:
        assert e.status_code == 503 and e.error_type == "runner_disconnected", e
    knobs(failure_rate=0.0)

    # The content checker's refusal is the result's 422.
    try:
        fal_client.subscribe(LUMA, arguments={"prompt": "sim:moderate this"}, interval=FAST)
        raise AssertionError("a moderated request must fail")
    except fal_client.FalClientHTTPError as e:
        assert e.status_code == 422, e
        assert e.message[0]["type"] == "content_policy_violation", e.message

    # Validation errors: FastAPI's detail list, with the field's location.
    try:
        fal_client.submit(LUMA, arguments={"prompt": "x", "duration": "7s"})
        raise AssertionError("a bad duration must be refused")
    except fal_client.FalClientHTTPError as e:
        assert e.status_code == 422 and e.message[0]["loc"] == ["body", "duration"], e.message

    # A bad key.
    try:
        fal_client.SyncClient(key="not_a_sim_key").submit(LUMA, arguments={"prompt": "x"})
        raise AssertionError("a bad key must be refused")
    except fal_client.FalClientHTTPError as e:
        assert e.status_code == 401, e

    # sim_throttled: the client retries the one 429 by itself.
    throttled = fal_client.SyncClient(key="sim_throttled_python_fal")
    retried = throttled.submit(LUMA, arguments={"prompt": "again"})
    video_of(retried.get(interval=FAST))

    # The async client: the same calls.
    async def run_async():
        client = fal_client.AsyncClient()
        handle = await client.submit(LUMA, arguments={"prompt": "async"})
        status = await client.status(LUMA, handle.request_id, with_logs=True)
        assert isinstance(status, (fal_client.Queued, fal_client.InProgress, fal_client.Completed))
        result = await handle.get(interval=FAST)
        video_of(result)
        again = await client.result(LUMA, handle.request_id)
        assert again == result, (again, result)

    asyncio.run(run_async())

    print("fal-client ok")


main()
