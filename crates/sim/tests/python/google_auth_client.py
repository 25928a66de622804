"""The official `google-auth` library against the simulator's token endpoint.

Environment: SA_FILE (a service account the simulator trusts), UNTRUSTED_FILE
(one it does not).
"""

import os

import google.auth.exceptions
import google.auth.transport.requests
from google.oauth2 import service_account

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


def main():
    creds = service_account.Credentials.from_service_account_file(
        os.environ["SA_FILE"], scopes=SCOPES
    )
    assert not creds.valid
    creds.refresh(google.auth.transport.requests.Request())
    assert creds.valid, "refreshed credentials are valid"
    assert creds.token.startswith("ya29."), creds.token
    assert creds.expiry is not None

    untrusted = service_account.Credentials.from_service_account_file(
        os.environ["UNTRUSTED_FILE"], scopes=SCOPES
    )
    try:
        untrusted.refresh(google.auth.transport.requests.Request())
        raise AssertionError("an untrusted account must be refused")
    except google.auth.exceptions.RefreshError as e:
        assert "invalid_grant" in str(e), e

    print("google-auth ok")


main()
