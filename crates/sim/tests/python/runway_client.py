"""The official `runwayml` client against the simulator, unchanged.

Environment: SIM_URL (the simulator), PNG_FILE (an image to animate).
Exits non-zero (with a traceback) when anything is not as the real API would
answer. The only change to the SDK is its waiter's sleep (6 s by default),
shortened so the test is fast.
"""

import base64
import os
import time

import httpx
import runwayml
from runwayml.lib import polling

SIM = os.environ["SIM_URL"]
BASE = f"{SIM}/runway"


def wait(client, task_id):
    deadline = time.monotonic() + 30
    while True:
        task = client.tasks.retrieve(task_id)
        if task.status in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return task
        assert time.monotonic() < deadline, f"task {task_id} stuck in {task.status}"
        time.sleep(0.05)


def main():
    client = runwayml.RunwayML(api_key="sim_python_runway", base_url=BASE)

    org = client.organization.retrieve()
    assert org.credit_balance > 0, org

    with open(os.environ["PNG_FILE"], "rb") as f:
        image = "data:image/png;base64," + base64.b64encode(f.read()).decode()
    created = client.image_to_video.create(
        model="gen4_turbo",
        prompt_image=image,
        prompt_text="a slow dolly-in over a calm lake",
        ratio="1280:720",
        duration=5,
        seed=42,
    )
    task = wait(client, created.id)
    assert task.status == "SUCCEEDED", task
    assert task.created_at.tzinfo is not None, task
    video = httpx.get(task.output[0])
    assert video.status_code == 200 and video.content[4:8] == b"ftyp", video

    # The SDK's own waiter.
    polling.POLL_TIME = 0.05
    polling.POLL_JITTER = 0
    done = client.text_to_video.create(
        model="veo3.1", prompt_text="a lighthouse at dusk", ratio="1920:1080", duration=4
    ).wait_for_task_output(timeout=30)
    assert done.status == "SUCCEEDED", done

    # A failing task surfaces as the SDK's TaskFailedError.
    try:
        client.text_to_video.create(
            model="veo3.1_fast", prompt_text="sim:moderate this", ratio="1280:720"
        ).wait_for_task_output(timeout=30)
        raise AssertionError("a moderated task must fail")
    except polling.TaskFailedError as e:
        assert e.task_details.failure_code == "SAFETY.INPUT.TEXT", e.task_details

    # Cancel: 204, then the task is gone.
    pending = client.image_to_video.create(
        model="gen4_turbo", prompt_image=image, ratio="960:960"
    )
    client.tasks.delete(pending.id)
    try:
        client.tasks.retrieve(pending.id)
        raise AssertionError("a deleted task must be gone")
    except runwayml.NotFoundError:
        pass

    # Validation errors are the SDK's BadRequestError.
    try:
        client.image_to_video.create(model="gen4_turbo", prompt_image=image, ratio="1:1")
        raise AssertionError("a bad ratio must be refused")
    except runwayml.BadRequestError as e:
        assert e.body["issues"][0]["path"] == ["ratio"], e.body

    # A bad key is the SDK's AuthenticationError.
    try:
        runwayml.RunwayML(api_key="key_not_a_sim_key", base_url=BASE).organization.retrieve()
        raise AssertionError("a bad key must be refused")
    except runwayml.AuthenticationError:
        pass

    # A sim_throttled key: the SDK retries the one 429 after Retry-After.
    throttled = runwayml.RunwayML(api_key="sim_throttled_python", base_url=BASE)
    started = time.monotonic()
    retried = throttled.text_to_video.create(
        model="veo3.1_fast", prompt_text="patience", ratio="720:1280"
    )
    assert wait(throttled, retried.id).status == "SUCCEEDED"
    assert time.monotonic() - started >= 0.9, "the SDK waited for Retry-After"

    print("runwayml ok")


main()
