"""The portal's background jobs through the API: a long request (a molecule upload, a launch)
answers 202 with the job, and the client polls GET /api/jobs/ID/ until it is done or failed.
Only the job's owner (and staff) can see it; anyone else gets 404."""
from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.api.base import JsonErrors
from campaigns.models import PortalJob
from campaigns.services.portal_jobs import portal_job_check, portal_jobs_visible

JOB_ID = OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH)


class JobProgressSerializer(serializers.Serializer):
    done = serializers.IntegerField(help_text="records read (upload), records looked at (launch)")
    total = serializers.IntegerField(allow_null=True, help_text="null while not known")
    fraction = serializers.FloatField(allow_null=True, help_text="share done, 0..1 (upload: of "
                                      "the file's bytes), while running")


class JobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=PortalJob.Kind.values)
    state = serializers.ChoiceField(choices=PortalJob.State.values)
    url = serializers.CharField(help_text="poll this until state is done or failed")
    owner = serializers.CharField()
    progress = JobProgressSerializer()
    message = serializers.CharField(help_text="what it did, or why it failed")
    report = serializers.DictField(help_text="the import report or the submit report")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    heartbeat_at = serializers.DateTimeField(allow_null=True)


class JobEnvelopeSerializer(serializers.Serializer):
    job = JobSerializer()


def job_accepted(job: PortalJob) -> Response:
    """202 {"job": {...}} with the job's URL also in Location."""
    job.refresh_from_db()  # queueing it may have failed it already (Redis down)
    body = {"job": portal_job_check(job=job)}
    return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["job"]["url"]})


@extend_schema(parameters=[JOB_ID])
class JobDetailApi(JsonErrors, APIView):
    @extend_schema(
        summary="A background job: state, progress, and its report once done",
        description=("state queued → running → done | failed. While running, progress moves "
                     "(updated every few seconds); done: report holds what was written; "
                     "failed: message says why and report what was done before. A job whose "
                     "worker stopped answering is failed here after "
                     "HTPORTAL_PORTAL_JOB_HEARTBEAT_S. Yours only (staff: all)."),
        responses={200: JobEnvelopeSerializer})
    def get(self, request, id):
        job = generics.get_object_or_404(portal_jobs_visible(user=request.user), pk=id)
        return Response({"job": portal_job_check(job=job)})
