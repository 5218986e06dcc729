"""The pipeline services on a MongoDB record store: submit selects with the native filter,
the feeder sends inputs read from the collection, the collector writes results into the
documents at record[output_key][arg_set]. Runs on mongomock, and on a real MongoDB server too
when HTPORTAL_TEST_MONGODB_URL is set (see docs/stores.md)."""
from __future__ import annotations

import json
import uuid
import zlib

import mongomock
import pytest

from campaigns.models import ArgSet, Campaign, Dataset
from campaigns.services.collecting import results_collect
from campaigns.services.lifecycle import campaign_launch
from campaigns.stores import mongodb, store_for
from tests.campaigns.test_stores import mongomock_add_update_without_sort
from tests.campaigns.test_stores_mongodb_live import LIVE_DATABASE, LIVE_STORE_PARAMS, LIVE_URL
from tests.pipeline.collect_helpers import ok, push, taken_by, values
from tests.pipeline.conftest import WATER

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["mongomock", *LIVE_STORE_PARAMS])
def mongo_dataset(request, monkeypatch):
    if request.param == "mongomock":
        monkeypatch.setattr(mongodb, "client_factory", mongomock.MongoClient)
        mongomock_add_update_without_sort(monkeypatch)
        uri, database = "mongodb://mongomock.invalid:27017/", "htportal_test"
    else:
        uri, database = LIVE_URL, LIVE_DATABASE
    dataset = Dataset.objects.create(
        name="mongo-waters", store=Dataset.Store.MONGODB, mongo_uri=uri, mongo_database=database,
        mongo_collection=f"records_{uuid.uuid4().hex}")
    store = store_for(dataset)
    store.insert(records=[{"id": f"w{i}", "input": {**WATER, "tag": i}} for i in range(4)])
    # w3 has the result already: the campaign's query leaves it out.
    store.collection.update_one({"_id": "w3"}, {"$set": {"out.a": values(-1.0)}})
    yield dataset, store
    store.collection.drop()


def test_a_campaign_on_a_mongodb_dataset_runs_through_submit_feed_and_collect(
        mongo_dataset, redis_conn):
    dataset, store = mongo_dataset
    campaign = Campaign.objects.create(name="mongo-noop", dataset=dataset, function="noop",
                                       output_key="out", queue="pipe", query={"out.a": None},
                                       projection=["tag"])
    ArgSet.objects.create(campaign=campaign, name="a", position=0)

    report = campaign_launch(campaign=campaign, connection=redis_conn)

    assert (report.added, report.queued) == (3, 3)
    tasks = {task.record_id: task for task in campaign.tasks.all()}
    assert sorted(tasks) == ["w0", "w1", "w2"]
    job = redis_conn.hget(f"rq:job:{tasks['w1'].job_id}", "data")
    kwargs = json.loads(zlib.decompress(job))[3]
    assert kwargs["record"] == {"id": "w1", "input": {**WATER, "tag": 1}}

    taken_by(redis_conn, tasks.values())
    push(redis_conn, *(ok(task, arg_sets={"a": {"status": "ok", "values": values(-5.1),
                                                "error": None}}) for task in tasks.values()))
    collected = results_collect(connection=redis_conn)

    assert collected.done == 3
    documents = {d["_id"]: d for d in store.collection.find({})}
    assert documents["w2"]["out"]["a"] == values(-5.1)
    assert documents["w3"]["out"]["a"] == values(-1.0)  # not selected, left alone
    assert documents["w0"]["input"]["tag"] == 0  # the input is untouched
    assert store.count(query={"out.a": None}) == 0
    campaign.refresh_from_db()
    assert campaign.state == "done"
