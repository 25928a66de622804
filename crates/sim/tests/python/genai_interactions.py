"""The official `google-genai` SDK in Vertex mode, Gemini Omni through the Interactions API,
against the simulator.

Environment: SIM_URL, SA_FILE (a trusted service account), PROJECT (its project),
THROTTLED_SA_FILE (an account whose first create is answered 429), PNG_FILE. Only
`http_options.base_url` points the SDK at the simulator; credentials come from the
service-account files, whose token_uri is the simulator's. The simulator's control API
(`/_sim/config`) lengthens the render time before the cancel.
"""

import base64
import json
import os
import time
import urllib.parse
import urllib.request

import google.auth.transport.requests
from google import genai
from google.genai import interactions, types
from google.oauth2 import service_account

SIM = os.environ["SIM_URL"]
PROJECT = os.environ["PROJECT"]
MODEL = "gemini-omni-1.2-flash"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


def client_for(sa_file):
    creds = service_account.Credentials.from_service_account_file(sa_file, scopes=SCOPES)
    client = genai.Client(
        vertexai=True,
        project=PROJECT,
        location="global",
        credentials=creds,
        http_options=types.HttpOptions(base_url=f"{SIM}/vertex"),
    )
    return client, creds


def wait(client, interaction):
    deadline = time.monotonic() + 30
    while interaction.status in ("queued", "in_progress"):
        assert time.monotonic() < deadline, "the interaction never finished"
        time.sleep(0.05)
        interaction = client.interactions.get(id=interaction.id)
    return interaction


def videos(interaction):
    return [
        content
        for step in interaction.steps or []
        if step.type == "model_output"
        for content in step.content or []
        if content.type == "video"
    ]


def set_knobs(patch):
    request = urllib.request.Request(
        f"{SIM}/_sim/config",
        data=json.dumps(patch).encode(),
        headers={"content-type": "application/json"},
        method="PUT",
    )
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 200, answer.status


def status_code(error):
    return getattr(error, "status_code", None)


def main():
    client, creds = client_for(os.environ["SA_FILE"])

    # Text to video in the background, the video inline.
    interaction = client.interactions.create(
        model=MODEL,
        input="a lighthouse at dusk, waves rolling in",
        background=True,
        generation_config=interactions.GenerationConfig(
            video_config=interactions.VideoConfig(task="text_to_video")
        ),
        response_format=interactions.VideoResponseFormat(
            aspect_ratio="16:9", duration="6s", resolution="1080p", delivery="inline"
        ),
    )
    assert interaction.status in ("queued", "in_progress"), interaction.status
    assert interaction.id, interaction
    interaction = wait(client, interaction)
    assert interaction.status == "completed", interaction.status
    [video] = videos(interaction)
    assert video.mime_type == "video/mp4", video.mime_type
    assert base64.b64decode(video.data)[4:8] == b"ftyp"
    assert interaction.usage.total_output_tokens == 6 * 5792, interaction.usage

    # Image to video, the video in Cloud Storage, downloaded with the same account.
    with open(os.environ["PNG_FILE"], "rb") as f:
        png = base64.b64encode(f.read()).decode()
    interaction = wait(
        client,
        client.interactions.create(
            model=MODEL,
            input=[
                {"type": "text", "text": "animate this"},
                {"type": "image", "mime_type": "image/png", "data": png},
            ],
            background=True,
            generation_config=interactions.GenerationConfig(
                video_config=interactions.VideoConfig(task="image_to_video")
            ),
            response_format=[
                interactions.VideoResponseFormat(
                    duration="4s", delivery="uri", gcs_uri="gs://sim-bucket/omni/"
                )
            ],
        ),
    )
    assert interaction.status == "completed", interaction.status
    [video] = videos(interaction)
    assert video.uri.startswith("gs://sim-bucket/omni/"), video.uri
    bucket, _, name = video.uri[len("gs://"):].partition("/")
    session = google.auth.transport.requests.AuthorizedSession(creds)
    url = f"{SIM}/storage/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}?alt=media"
    download = session.get(url)
    assert download.status_code == 200 and download.content[4:8] == b"ftyp", download

    # A moderated prompt ends failed, with its reason.
    interaction = wait(
        client,
        client.interactions.create(
            model=MODEL, input="please sim:moderate this", background=True
        ),
    )
    assert interaction.status == "failed", interaction.status
    assert interaction.errors[0].code == "safety", interaction.errors

    # Cancel a running interaction.
    set_knobs({"render_time_ms": 60_000})
    running = client.interactions.create(model=MODEL, input="a slow pan", background=True)
    cancelled = client.interactions.cancel(id=running.id)
    assert cancelled.status == "cancelled", cancelled.status
    assert client.interactions.get(id=running.id).status == "cancelled"
    try:
        client.interactions.cancel(id=running.id)
        raise AssertionError("a second cancel must be refused")
    except AssertionError:
        raise
    except Exception as e:  # the SDK's typed error
        assert status_code(e) == 400, e
    set_knobs({"render_time_ms": 150})

    # Errors are the SDK's typed errors (it does not retry 400 or 404).
    for model, code in [("gemini-omni-0.9-flash", 404), (MODEL, 400)]:
        try:
            client.interactions.create(
                model=model,
                input="x",
                background=True,
                response_format=interactions.VideoResponseFormat(duration="99s"),
            )
            raise AssertionError(f"{model} must be refused")
        except AssertionError:
            raise
        except Exception as e:
            assert status_code(e) == code, (model, e)

    # The SDK retries a create answered 429 on its own: the simulator sees the create
    # twice (the test counts them). byok's adapter never re-sends a create.
    throttled, _ = client_for(os.environ["THROTTLED_SA_FILE"])
    interaction = throttled.interactions.create(model=MODEL, input="a cat", background=True)
    assert interaction.id

    print("google-genai interactions ok")


main()
