"""Attempt ids name one delivery of one job and cannot be made up without the secret key."""
import pytest
from django.test import override_settings

from campaigns.attempts import BadAttempt, attempt_delivery, attempt_id


def test_it_reads_back_the_delivery_it_was_made_for():
    assert attempt_delivery(job_id="c1-v1-abc", attempt=attempt_id(job_id="c1-v1-abc",
                                                                   delivery=7)) == 7


@pytest.mark.parametrize("attempt", [
    None, 7, "", "7", "7-", "x-0123456789abcdef", "7-0123456789abcdef", "7-" + "0" * 40,
])
def test_it_refuses_an_id_it_did_not_make(attempt):
    with pytest.raises(BadAttempt):
        attempt_delivery(job_id="c1-v1-abc", attempt=attempt)


def test_an_id_of_one_job_is_not_an_id_of_another():
    with pytest.raises(BadAttempt, match="not issued for job c1-v1-other"):
        attempt_delivery(job_id="c1-v1-other", attempt=attempt_id(job_id="c1-v1-abc", delivery=1))


def test_another_delivery_number_with_the_same_digest_is_refused():
    digest = attempt_id(job_id="c1-v1-abc", delivery=1).split("-", 1)[1]
    with pytest.raises(BadAttempt):
        attempt_delivery(job_id="c1-v1-abc", attempt=f"2-{digest}")


def test_a_portal_with_another_secret_key_makes_other_ids():
    mine = attempt_id(job_id="c1-v1-abc", delivery=1)
    with override_settings(SECRET_KEY="another portal's key" * 3):
        with pytest.raises(BadAttempt):
            attempt_delivery(job_id="c1-v1-abc", attempt=mine)
