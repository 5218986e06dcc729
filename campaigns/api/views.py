"""Datasets and campaigns: create, list, read, upload records, change or delete a draft."""
from __future__ import annotations

import shutil

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.api.base import AnyAccept, JsonErrors, campaign_of
from campaigns.api.jobs import JobEnvelopeSerializer, job_accepted
from campaigns.api.pagination import AfterIdPagination
from campaigns.api.parsers import (MOLECULE_PARSERS, YAML_PARSERS, BoundedJSONParser,
                                   BoundedMultiPartParser, UploadMultiPartParser,
                                   definition_text, molecule_upload)
from campaigns.api.serializers import (CampaignSerializer, DatasetCreateSerializer,
                                       DatasetSerializer, DefinitionFileSerializer,
                                       DefinitionSerializer, ErrorSerializer,
                                       MoleculeFileSerializer)
from campaigns.errors import ApplicationError
from campaigns.models import Campaign, Dataset
from campaigns.molecules import reader_for
from campaigns.services.definitions import (CampaignDefinition, campaign_definition_parse,
                                            campaign_export, campaign_import)
from campaigns.services.ownership import (campaign_check_changeable, campaign_check_name_free,
                                          campaign_delete,
                                          campaigns_visible, dataset_check_visible,
                                          dataset_create, datasets_visible)
from campaigns.services.portal_jobs import records_import_queue, upload_directory
from campaigns.services.records import ON_ERROR_CHOICES
ERRORS = {400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer}
NAME = OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH,
                        pattern=r"^[-a-zA-Z0-9_]+$")
DEFINITION_BODY = {
    "application/json": DefinitionSerializer,
    "application/yaml": OpenApiTypes.STR,
    "text/yaml": OpenApiTypes.STR,
    "application/x-yaml": OpenApiTypes.STR,
    "multipart/form-data": DefinitionFileSerializer,
}
DATASET_PARAM = OpenApiParameter(
    "dataset", OpenApiTypes.STR, description="the dataset to run on (overrides the definition's "
    "'dataset:'), as --dataset of import_campaign")


# --- datasets ---------------------------------------------------------------------------------

class DatasetListApi(JsonErrors, generics.ListAPIView):
    serializer_class = DatasetSerializer
    pagination_class = AfterIdPagination

    def get_queryset(self):
        return datasets_visible(user=self.request.user)

    @extend_schema(summary="Your datasets (staff: all), by id", responses={200: DatasetSerializer(many=True), **ERRORS})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(summary="Create a dataset (stored in the portal's database)",
                   request=DatasetCreateSerializer, responses={201: DatasetSerializer, **ERRORS})
    def post(self, request):
        data = DatasetCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        dataset = dataset_create(owner=request.user, **data.validated_data)
        return Response(DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)


@extend_schema(parameters=[NAME])
class DatasetDetailApi(JsonErrors, generics.RetrieveAPIView):
    serializer_class = DatasetSerializer
    lookup_field = "name"

    def get_queryset(self):
        return datasets_visible(user=self.request.user)

    @extend_schema(summary="One dataset", responses={200: DatasetSerializer, **ERRORS})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


@extend_schema(parameters=[NAME])
class DatasetRecordsApi(JsonErrors, APIView):
    parser_classes = [*MOLECULE_PARSERS, UploadMultiPartParser]

    @extend_schema(
        summary="Upload molecules in bulk (JSON Lines, extended XYZ, XYZ, SDF): a background job",
        description=(
            "The body is the molecule file (its Content-Type picks the reader), or a multipart "
            "field 'file' (its name's extension picks it), at most HTPORTAL_MAX_UPLOAD_BYTES "
            "(413 above). It is streamed to a file and imported by a background job: the answer "
            "is 202 {\"job\": {\"id\", \"state\": \"queued\", \"url\"}}; poll the url "
            "(GET /api/jobs/ID/) until done or failed. Ids already in the dataset are left as "
            "they are. on_error=abort (default): the first broken molecule fails the job naming "
            "its line, and nothing is written. on_error=skip: broken molecules are passed over "
            "and the report names the first 100 with their lines."),
        parameters=[OpenApiParameter("on_error", OpenApiTypes.STR, enum=list(ON_ERROR_CHOICES),
                                     default="abort")],
        request={"application/x-ndjson": OpenApiTypes.BINARY,
                 "chemical/x-extxyz": OpenApiTypes.BINARY,
                 "chemical/x-xyz": OpenApiTypes.BINARY,
                 "chemical/x-mdl-sdfile": OpenApiTypes.BINARY,
                 "multipart/form-data": MoleculeFileSerializer},
        responses={202: JobEnvelopeSerializer, 413: ErrorSerializer, **ERRORS},
    )
    def post(self, request, name):
        dataset = generics.get_object_or_404(datasets_visible(user=request.user), name=name)
        on_error = request.query_params.get("on_error", "abort")
        if on_error not in ON_ERROR_CHOICES:
            raise ApplicationError(f"on_error must be one of {', '.join(ON_ERROR_CHOICES)}, "
                                   f"got {on_error!r}")
        if dataset.store != Dataset.Store.SQL:
            raise ApplicationError(f"dataset {dataset.name!r} is stored in MongoDB; uploads "
                                   "write SQL-stored datasets only")
        limit = settings.MAX_UPLOAD_BYTES
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if declared.isdigit() and int(declared) > limit:
            return _too_large(int(declared), limit)
        upload = molecule_upload(request)
        try:
            size = upload.path.stat().st_size
            if size > limit:
                return _too_large(size, limit)
            try:
                reader_for(upload.path)  # an unknown extension is refused now, not by the job
            except ApplicationError as exc:
                raise ApplicationError(upload.relative(str(exc))) from None
            directory = upload_directory()
            path = directory / upload.path.name
            shutil.move(upload.path, path)
            try:
                job = records_import_queue(owner=request.user, dataset=dataset, path=path,
                                           on_error=on_error)
            except BaseException:
                shutil.rmtree(directory, ignore_errors=True)
                raise
        finally:
            upload.cleanup()
        return job_accepted(job)


def _too_large(size: int, limit: int) -> Response:
    return Response({"error": f"the upload is {size:,} bytes; at most {limit:,} are allowed "
                              "(HTPORTAL_MAX_UPLOAD_BYTES): send the file in parts"},
                    status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)


# --- campaigns --------------------------------------------------------------------------------

def _definition(request) -> CampaignDefinition:
    """The checked job definition the request carries; the dataset must be the user's."""
    text, source = definition_text(request)
    definition = campaign_definition_parse(text=text, source=source)
    dataset_check_visible(user=request.user,
                          name=request.query_params.get("dataset") or definition.dataset)
    return definition


class CampaignListApi(JsonErrors, generics.ListAPIView):
    serializer_class = CampaignSerializer
    pagination_class = AfterIdPagination
    parser_classes = [BoundedJSONParser, *YAML_PARSERS, BoundedMultiPartParser]

    def get_queryset(self):
        return campaigns_visible(user=self.request.user).prefetch_related("arg_sets")

    @extend_schema(summary="Your campaigns (staff: all), by id",
                   responses={200: CampaignSerializer(many=True), **ERRORS})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Create a draft campaign from a job definition",
        description=("The job definition file (examples/xtb_gfn2.yaml) as YAML text, as a "
                     "multipart field 'file', or the same document as JSON. It is checked as "
                     "import_campaign checks a file, with the same messages."),
        parameters=[DATASET_PARAM], request=DEFINITION_BODY,
        responses={201: CampaignSerializer, **ERRORS})
    def post(self, request):
        definition = _definition(request)
        campaign_check_name_free(name=definition.name, source=definition.source)
        campaign = campaign_import(definition=definition, owner=request.user,
                                   dataset_name=request.query_params.get("dataset"))
        return Response(CampaignSerializer(campaign).data, status=status.HTTP_201_CREATED)


@extend_schema(parameters=[NAME])
class CampaignDetailApi(JsonErrors, generics.RetrieveAPIView):
    serializer_class = CampaignSerializer
    lookup_field = "name"
    parser_classes = [BoundedJSONParser, *YAML_PARSERS, BoundedMultiPartParser]

    def get_queryset(self):
        return campaigns_visible(user=self.request.user).prefetch_related("arg_sets")

    @extend_schema(summary="One campaign", responses={200: CampaignSerializer, **ERRORS})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Replace a draft campaign's definition",
        description="The whole definition, as for create; its 'campaign' must be this name. "
                    "409 unless the campaign is a draft.",
        parameters=[DATASET_PARAM], request=DEFINITION_BODY,
        responses={200: CampaignSerializer, 409: ErrorSerializer, **ERRORS})
    def put(self, request, name):
        campaign = campaign_of(request, name)
        campaign_check_changeable(campaign=campaign)
        definition = _definition(request)
        if definition.name != campaign.name:
            raise ApplicationError(f"{definition.source}: campaign: the definition names campaign "
                                   f"{definition.name!r}, not {campaign.name!r} (a campaign "
                                   "cannot be renamed)")
        campaign = campaign_import(definition=definition, replace=True,
                                   dataset_name=request.query_params.get("dataset"))
        return Response(CampaignSerializer(campaign).data)

    @extend_schema(summary="Delete a draft campaign",
                   responses={204: None, 409: ErrorSerializer, **ERRORS})
    def delete(self, request, name):
        campaign_delete(campaign=campaign_of(request, name))
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(parameters=[NAME])
class CampaignDefinitionApi(JsonErrors, AnyAccept, APIView):
    @extend_schema(summary="The campaign as a job definition file (YAML)",
                   responses={(200, "application/yaml"): OpenApiResponse(OpenApiTypes.STR),
                              **ERRORS})
    def get(self, request, name):
        campaign: Campaign = campaign_of(request, name)
        return HttpResponse(campaign_export(campaign=campaign),
                            content_type="application/yaml; charset=utf-8")
