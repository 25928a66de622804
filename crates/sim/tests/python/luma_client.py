"""The official `luma-agents` client against the simulator, unchanged.

Environment: LUMA_AGENTS_API_KEY and LUMA_BASE_URL (the client's own settings, pointing it at
the simulator's `/luma/v1`), SIM_URL (the simulator, for its knobs) and PNG_FILE (an image to
start a video from). Exits non-zero (with a traceback) when anything is not as the real API
would answer.
"""

import base64
import os
import time

import httpx
import luma_agents
from luma_agents import Luma

SIM = os.environ["SIM_URL"]
KEY = os.environ["LUMA_AGENTS_API_KEY"]

# The client's settings come from the environment alone.
client = Luma()


def settle(generation):
    """Polls until the generation ends, as Luma's guides do (the client has no waiter)."""
    deadline = time.monotonic() + 30
    while generation.state in ("queued", "processing"):
        assert time.monotonic() < deadline, generation
        time.sleep(0.05)
        generation = client.generations.get(generation.id)
    return generation


def download(generation):
    assert generation.state == "completed", generation
    assert len(generation.output) == 1, generation
    # Presigned: no Authorization header.
    response = httpx.get(generation.output[0].url)
    assert response.status_code == 200, response
    return response


def expect_error(kind, call):
    try:
        call()
    except kind as e:
        return e
    raise AssertionError(f"expected {kind.__name__}")


def main():
    # Text to video, through the raw response to see the status and headers too.
    raw = client.generations.with_raw_response.create(
        model="ray-3.2",
        type="video",
        prompt="A slow dolly shot through a misty greenhouse at sunrise",
        aspect_ratio="16:9",
        video={"resolution": "720p", "duration": "5s"},
        user_id="user-1234",
    )
    assert raw.status_code == 201, raw.status_code
    assert raw.headers["x-api-version"] and raw.headers["x-request-id"], raw.headers
    generation = raw.parse()
    assert generation.state == "queued", generation
    assert (generation.type, generation.model) == ("video", "ray-3.2"), generation
    assert generation.output is None and generation.failure_code is None, generation
    done = settle(generation)
    assert done.id == generation.id and done.created_at == generation.created_at, done
    assert done.output[0].type == "video", done
    video = download(done)
    assert video.headers["content-type"] == "video/mp4", video.headers
    assert video.content[4:8] == b"ftyp", video.content[:16]

    # Image to video, the first frame inline, looping.
    with open(os.environ["PNG_FILE"], "rb") as f:
        frame = base64.b64encode(f.read()).decode()
    looped = client.generations.create(
        model="ray-3.2",
        type="video",
        prompt="The lighthouse beam sweeps the sea",
        aspect_ratio="9:16",
        video={
            "resolution": "540p",
            "duration": "5s",
            "loop": True,
            "start_frame": {"data": frame, "media_type": "image/png"},
            "end_frame": {"url": "https://example.com/closing-frame.jpg"},
        },
    )
    assert download(settle(looped)).content[4:8] == b"ftyp"

    # Extending the first video by its generation id.
    extended = client.generations.create(
        model="ray-3.2",
        type="video",
        prompt="The camera keeps moving",
        video={"start_frame": {"generation_id": generation.id}},
    )
    assert settle(extended).state == "completed"

    # An image, on the default model.
    image = settle(client.generations.create(prompt="a lighthouse at dusk", output_format="jpeg"))
    assert (image.type, image.model) == ("image", "uni-1"), image
    assert download(image).headers["content-type"] == "image/jpeg"

    # A moderated prompt: the generation fails, found when polling.
    moderated = settle(
        client.generations.create(
            model="ray-3.2", type="video", prompt="sim:moderate this", video={"duration": "5s"}
        )
    )
    assert moderated.state == "failed", moderated
    assert moderated.failure_code == "content_moderated", moderated
    assert moderated.failure_reason and moderated.output is None, moderated

    # Refused requests: a value off the schema (400), a combination Luma rejects (422), a
    # generation that does not exist (404). The client checks none of it itself.
    e = expect_error(
        luma_agents.BadRequestError,
        lambda: client.generations.create(
            model="ray-3.2", type="video", prompt="x", video={"resolution": "4k"}
        ),
    )
    assert e.status_code == 400 and "video.resolution" in e.body["detail"], e.body
    e = expect_error(
        luma_agents.UnprocessableEntityError,
        lambda: client.generations.create(
            model="ray-3.2", type="video", prompt="x", video={"duration": "10s", "loop": True}
        ),
    )
    assert "loop" in e.body["detail"], e.body
    e = expect_error(
        luma_agents.NotFoundError,
        lambda: client.generations.get("00000000-0000-4000-8000-000000000000"),
    )
    assert e.body == {"detail": "Generation not found"}, e.body

    # A bad key: 401, not retried.
    bad = Luma(auth_token="luma-not-a-sim-key")
    e = expect_error(
        luma_agents.AuthenticationError,
        lambda: bad.generations.create(model="ray-3.2", type="video", prompt="x"),
    )
    assert e.status_code == 401 and e.body["detail"], e.body

    # A throttled key. Without retries the 429 surfaces with its Retry-After; the next
    # create goes through.
    throttled = Luma(auth_token="sim_throttled_python_luma", max_retries=0)
    e = expect_error(
        luma_agents.RateLimitError,
        lambda: throttled.generations.create(model="ray-3.2", type="video", prompt="patience"),
    )
    assert e.response.headers["retry-after"] == "1", e.response.headers
    assert e.body["detail"], e.body
    again = throttled.generations.create(model="ray-3.2", type="video", prompt="patience")
    assert again.state == "queued", again
    # With its default retries the client waits out the Retry-After and sends it again.
    patient = Luma(auth_token="sim_throttled_python_luma_retry")
    retried = patient.generations.create(model="ray-3.2", type="video", prompt="patience")
    assert retried.state == "queued", retried

    assert KEY.startswith("sim_")
    print("luma-agents ok")


main()
