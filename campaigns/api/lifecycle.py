"""A campaign's life through the API: launch, pause, resume, cancel, resubmit failed tasks;
its status and its tasks. Each action calls the same service as the admin action and the
command."""
from __future__ import annotations

from dataclasses import asdict

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.api.base import JsonErrors, campaign_of
from campaigns.api.jobs import JobEnvelopeSerializer, job_accepted
from campaigns.api.pagination import AfterIdPagination
from campaigns.api.serializers import (LaunchSerializer, StateSerializer, StatusSerializer,
                                       TaskSerializer)
from campaigns.api.views import ERRORS, NAME
from campaigns.errors import ApplicationError
from campaigns.models import Task
from campaigns.redis_connection import redis_connection
from campaigns.services.lifecycle import campaign_cancel, campaign_pause, campaign_resume
from campaigns.services.portal_jobs import campaign_launch_queue
from campaigns.services.resubmit import campaign_resubmit_failed
from campaigns.status import campaign_status


class CampaignActionApi(JsonErrors, APIView):
    """POST runs `act(campaign)`; the response is the campaign's state plus what it returned."""

    def act(self, campaign) -> dict:
        raise NotImplementedError

    def post(self, request, name):
        campaign = campaign_of(request, name)
        done = self.act(campaign)
        return Response({"campaign": campaign.name, "state": campaign.state, **done})


def _action_schema(summary: str, description: str):
    """Class decorator: the action's own `post` (a new function, so that each action's schema
    stays its own) described for the schema."""
    def decorate(cls):
        def post(self, request, name):
            return CampaignActionApi.post(self, request, name)
        cls.post = extend_schema(summary=summary, description=description, request=None,
                                 parameters=[NAME],
                                 responses={200: StateSerializer, **ERRORS})(post)
        return cls
    return decorate


@extend_schema(parameters=[NAME])
class CampaignLaunchApi(JsonErrors, APIView):
    @extend_schema(
        summary="Launch (a background job): add a task per selected record, queue a first window",
        description=("campaign_launch, as the admin's Launch action and `manage.py submit`, run "
                     "by a background job: 202 {\"job\": {\"id\", \"state\": \"queued\", "
                     "\"url\"}}; poll the url until done (its report is the submit report) or "
                     "failed. A campaign that cannot be launched (its state, function, arg sets) "
                     "is refused at once with 400."),
        request=LaunchSerializer, responses={202: JobEnvelopeSerializer, **ERRORS})
    def post(self, request, name):
        campaign = campaign_of(request, name)
        options = LaunchSerializer(data=request.data or {})
        options.is_valid(raise_exception=True)
        return job_accepted(campaign_launch_queue(owner=request.user, campaign=campaign,
                                                  **options.validated_data))


@_action_schema("Pause: stop feeding (jobs already in Redis still run)", "campaign_pause.")
class CampaignPauseApi(CampaignActionApi):
    def act(self, campaign) -> dict:
        campaign_pause(campaign=campaign)
        return {}


@_action_schema("Resume a paused campaign and feed it at once",
                "campaign_resume; `queued`: jobs put in Redis now.")
class CampaignResumeApi(CampaignActionApi):
    def act(self, campaign) -> dict:
        return {"queued": campaign_resume(campaign=campaign)}


@_action_schema("Cancel: take waiting jobs out of Redis, cancel pending and queued tasks",
                "campaign_cancel; started jobs finish and their results are ignored.")
class CampaignCancelApi(CampaignActionApi):
    def act(self, campaign) -> dict:
        return asdict(campaign_cancel(campaign=campaign))


@_action_schema("Resubmit failed tasks: back to pending with attempts reset",
                "campaign_resubmit_failed; a done or failed campaign runs again, a paused "
                "one stays paused.")
class CampaignResubmitFailedApi(CampaignActionApi):
    def act(self, campaign) -> dict:
        return {"resubmitted": campaign_resubmit_failed(campaign=campaign)}


@extend_schema(parameters=[NAME])
class CampaignStatusApi(JsonErrors, APIView):
    @extend_schema(summary="Tasks by state, rates, ETA, workers, failures, Redis memory",
                   description="campaigns.status.campaign_status: the numbers the "
                               "campaign_status command prints.",
                   responses={200: StatusSerializer, **ERRORS})
    def get(self, request, name):
        campaign = campaign_of(request, name)
        return Response(campaign_status(campaign=campaign, connection=redis_connection()).as_dict())


@extend_schema(parameters=[NAME])
class CampaignTasksApi(JsonErrors, generics.ListAPIView):
    serializer_class = TaskSerializer
    pagination_class = AfterIdPagination

    def get_queryset(self):
        campaign = campaign_of(self.request, self.kwargs["name"])
        tasks = Task.objects.filter(campaign=campaign)
        state = self.request.query_params.get("state")
        if state:
            if state not in Task.State.values:
                raise ApplicationError(f"unknown task state {state!r} "
                                       f"(known: {', '.join(Task.State.values)})")
            tasks = tasks.filter(state=state)
        error_class = self.request.query_params.get("error_class")
        if error_class:
            tasks = tasks.filter(error_class=error_class)
        return tasks

    @extend_schema(
        summary="The campaign's tasks, with attempts and errors, by id",
        parameters=[OpenApiParameter("state", OpenApiTypes.STR, enum=Task.State.values),
                    OpenApiParameter("error_class", OpenApiTypes.STR,
                                     description="e.g. ProgramFailed, ProgramTimeout, BadResult")],
        responses={200: TaskSerializer(many=True), **ERRORS})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)
