"""The official `replicate` client against the simulator, unchanged.

Environment: REPLICATE_API_TOKEN and REPLICATE_BASE_URL (the client's own settings, pointing
it at the simulator's `/replicate`), REPLICATE_POLL_INTERVAL (the client's waiter interval,
shortened so the test is fast), SIM_URL (the simulator, for its knobs) and PNG_FILE (an image
to animate). Exits non-zero (with a traceback) when anything is not as the real API would
answer.
"""

import os

import httpx
import replicate
from replicate.exceptions import ModelError, ReplicateError

SIM = os.environ["SIM_URL"]
TOKEN = os.environ["REPLICATE_API_TOKEN"]
SVD = "stability-ai/stable-video-diffusion:3f0457e4619daac51203dedb472816fd4af51f3149fa7a9e0b5ffcf1b8172438"
SVD_VERSION = SVD.split(":")[1]


def expect_error(status, call):
    try:
        call()
    except ReplicateError as e:
        assert e.status == status, (status, e)
        return e
    raise AssertionError(f"expected HTTP {status}")


def is_mp4(url):
    video = httpx.get(url)
    return video.status_code == 200 and video.content[4:8] == b"ftyp"


def main():
    # The token check.
    account = replicate.default_client.accounts.current()
    assert account.type == "user" and account.username, account

    # An official model: create, then the client's own waiter.
    prediction = replicate.models.predictions.create(
        model="bytedance/seedance-2.0",
        input={"prompt": "a lighthouse at dusk", "duration": 5, "aspect_ratio": "9:16",
               "resolution": "480p", "seed": 7},
    )
    assert prediction.status == "starting", prediction
    assert prediction.model == "bytedance/seedance-2.0", prediction
    assert prediction.urls["get"].endswith(f"/v1/predictions/{prediction.id}"), prediction
    prediction.wait()
    assert prediction.status == "succeeded", prediction
    assert prediction.metrics["predict_time"] > 0, prediction
    assert is_mp4(prediction.output), prediction

    # A community model by version, its image passed as a file: the client uploads it with
    # the files API and sends the file's URL.
    with open(os.environ["PNG_FILE"], "rb") as image:
        by_version = replicate.predictions.create(
            version=SVD_VERSION,
            input={"input_image": image, "sizing_strategy": "crop_to_16_9"},
        )
    assert by_version.version == SVD_VERSION, by_version
    assert "/v1/files/" in by_version.input["input_image"], by_version.input
    by_version.wait()
    assert by_version.status == "succeeded", by_version
    assert is_mp4(by_version.output)

    # `run` holds the create open (`Prefer: wait`) and returns the output.
    output = replicate.run(
        "bytedance/seedance-2.0-fast", input={"prompt": "waves on a rocky shore"}
    )
    assert is_mp4(str(output)), output

    # A moderated prompt fails the prediction; `run` raises the client's ModelError.
    try:
        replicate.run("bytedance/seedance-2.0", input={"prompt": "sim:moderate this"})
        raise AssertionError("a moderated prediction must fail")
    except ModelError as e:
        assert e.prediction.status == "failed", e.prediction
        assert "flagged as sensitive" in e.prediction.error, e.prediction

    # Cancel: a long render (the simulator's knob, not the client's), then the client cancels.
    httpx.put(f"{SIM}/_sim/config", json={"render_time_ms": 600000}).raise_for_status()
    long = replicate.models.predictions.create(
        model="bytedance/seedance-2.0", input={"prompt": "a slow sunrise"}
    )
    long.cancel()
    assert long.status == "canceled", long
    long.reload()
    assert long.status == "canceled" and long.completed_at, long
    httpx.put(f"{SIM}/_sim/config", json={"render_time_ms": 150}).raise_for_status()

    # Input validation: a 422 naming the field.
    e = expect_error(422, lambda: replicate.models.predictions.create(
        model="bytedance/seedance-2.0", input={"prompt": "x", "duration": 99}))
    assert e.title == "Input validation failed" and "input.duration" in e.detail, e
    expect_error(422, lambda: replicate.predictions.create(version="0" * 64, input={}))
    expect_error(404, lambda: replicate.models.predictions.create(
        model="nobody/no-such-model", input={"prompt": "x"}))

    # A bad token is the API's 401 problem.
    e = expect_error(401, lambda: replicate.Client(api_token="r8_not_a_sim_token").accounts.current())
    assert e.title == "Unauthenticated", e

    # A throttled token: the client does not retry a create (POST), so the 429 surfaces with
    # its reset hint; the next create goes through.
    throttled = replicate.Client(api_token="sim_throttled_python")
    e = expect_error(429, lambda: throttled.models.predictions.create(
        model="bytedance/seedance-2.0", input={"prompt": "patience"}))
    assert "resets in ~" in e.detail, e
    again = throttled.models.predictions.create(
        model="bytedance/seedance-2.0", input={"prompt": "patience"})
    again.wait()
    assert again.status == "succeeded", again

    assert TOKEN.startswith("sim_")
    print("replicate ok")


main()
