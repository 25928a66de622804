"""The official `google-genai` SDK in Vertex mode against the simulator.

Environment: SIM_URL, SA_FILE (trusted service account), PROJECT (its
project), PNG_FILE. Only `http_options.base_url` points the SDK at the
simulator; credentials come from the service-account file, whose token_uri
is the simulator's.
"""

import os
import time
import urllib.parse

import google.auth.transport.requests
from google import genai
from google.genai import types
from google.oauth2 import service_account

SIM = os.environ["SIM_URL"]
MODEL = "veo-3.1-generate-001"


def wait(client, operation):
    deadline = time.monotonic() + 30
    while not operation.done:
        assert time.monotonic() < deadline, "operation never finished"
        time.sleep(0.05)
        operation = client.operations.get(operation)
    return operation


def main():
    creds = service_account.Credentials.from_service_account_file(
        os.environ["SA_FILE"], scopes=["https://www.googleapis.com/auth/cloud-platform"]
    )
    client = genai.Client(
        vertexai=True,
        project=os.environ["PROJECT"],
        location="us-central1",
        credentials=creds,
        http_options=types.HttpOptions(base_url=f"{SIM}/vertex"),
    )

    # Text to video, inline bytes.
    operation = client.models.generate_videos(
        model=MODEL,
        prompt="a lighthouse at dusk",
        config=types.GenerateVideosConfig(
            number_of_videos=1,
            duration_seconds=8,
            aspect_ratio="16:9",
            resolution="1080p",
            negative_prompt="blur",
            seed=7,
            generate_audio=True,
        ),
    )
    assert operation.name.startswith(
        f"projects/{os.environ['PROJECT']}/locations/us-central1/publishers/google/models/{MODEL}/operations/"
    ), operation.name
    operation = wait(client, operation)
    assert operation.error is None, operation.error
    video = operation.response.generated_videos[0].video
    assert video.video_bytes[4:8] == b"ftyp", video.video_bytes[:16]
    assert video.mime_type == "video/mp4"

    # Image to video, outputs in Cloud Storage.
    with open(os.environ["PNG_FILE"], "rb") as f:
        image = types.Image(image_bytes=f.read(), mime_type="image/png")
    operation = client.models.generate_videos(
        model=MODEL,
        prompt="animate this",
        image=image,
        config=types.GenerateVideosConfig(
            number_of_videos=2, duration_seconds=4, output_gcs_uri="gs://sim-bucket/genai/"
        ),
    )
    operation = wait(client, operation)
    uris = [v.video.uri for v in operation.response.generated_videos]
    assert len(uris) == 2 and all(u.startswith("gs://sim-bucket/genai/") for u in uris), uris
    bucket, _, name = uris[0][len("gs://"):].partition("/")
    session = google.auth.transport.requests.AuthorizedSession(creds)
    url = f"{SIM}/storage/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}?alt=media"
    download = session.get(url)
    assert download.status_code == 200 and download.content[4:8] == b"ftyp", download

    # RAI filtering.
    operation = wait(
        client, client.models.generate_videos(model=MODEL, prompt="sim:moderate this")
    )
    assert operation.response.rai_media_filtered_count == 1, operation.response
    assert not operation.response.generated_videos

    # Errors are the SDK's typed errors.
    try:
        client.models.generate_videos(model="veo-2.0-generate-001", prompt="retired")
        raise AssertionError("an unknown model must be refused")
    except genai.errors.ClientError as e:
        assert e.code == 404, e
    try:
        client.models.generate_videos(
            model=MODEL, prompt="x", config=types.GenerateVideosConfig(duration_seconds=5)
        )
        raise AssertionError("a bad duration must be refused")
    except genai.errors.ClientError as e:
        assert e.code == 400 and e.status == "INVALID_ARGUMENT", e

    print("google-genai ok")


main()
