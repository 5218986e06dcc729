"""API fixtures: users with tokens, clients logged in as them, datasets and campaigns they own."""
from __future__ import annotations

from typing import Callable

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from campaigns.models import Campaign, Dataset
from tests.pipeline.conftest import WATER, make_campaign, make_dataset, portal_redis  # noqa: F401

PASSWORD = "correct horse battery"


@pytest.fixture
def make_user(db) -> Callable[..., User]:
    def make(username: str, *, is_staff: bool = False) -> User:
        return User.objects.create_user(username, password=PASSWORD, is_staff=is_staff)
    return make


@pytest.fixture
def alice(make_user) -> User:
    return make_user("alice")


@pytest.fixture
def bob(make_user) -> User:
    return make_user("bob")


@pytest.fixture
def staff(make_user) -> User:
    return make_user("root", is_staff=True)


@pytest.fixture
def client_for() -> Callable[[User], APIClient]:
    """client_for(user) -> an APIClient sending the user's token."""
    def make(user: User) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
        return client
    return make


@pytest.fixture
def api(client_for, alice) -> APIClient:
    """Alice's client: the user most tests act as."""
    return client_for(alice)


@pytest.fixture
def owned_dataset(make_dataset, alice) -> Callable[..., Dataset]:
    """owned_dataset(name="waters", count=5, owner=alice) -> a dataset of water molecules."""
    def make(name: str = "waters", count: int = 5, owner: User | None = None) -> Dataset:
        dataset = make_dataset(name, count)
        Dataset.objects.filter(pk=dataset.pk).update(owner=owner or alice, record_count=count)
        dataset.refresh_from_db()
        return dataset
    return make


@pytest.fixture
def owned_campaign(make_campaign, alice) -> Callable[..., Campaign]:
    """owned_campaign(name="noop_demo", records=5, owner=alice, **fields) -> a draft noop
    campaign (queue pipe, output key out, arg set a) on a fresh dataset of its owner."""
    def make(name: str = "noop_demo", records: int = 5, owner: User | None = None,
             **fields) -> Campaign:
        campaign = make_campaign(name=name, records=records, **fields)
        campaign.owner = owner or alice
        campaign.save()
        Dataset.objects.filter(pk=campaign.dataset_id).update(owner=campaign.owner)
        return campaign
    return make
