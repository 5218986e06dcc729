"""A campaign's results as a training set: JSON Lines or extended XYZ, streamed a page at a time."""
from __future__ import annotations

from urllib.parse import quote

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.views import APIView

from campaigns.api.base import AnyAccept, JsonErrors, campaign_of
from campaigns.api.pagination import limit_param, link_header, next_url
from campaigns.api.serializers import ResultsQuerySerializer
from campaigns.api.views import ERRORS, NAME
from campaigns.services.exports import CONTENT_TYPES, UNITS, results_export

DEFAULT_LIMIT = 10_000
MAX_LIMIT = 100_000
HEADERS = """Headers: `X-Records-Without-Result` counts the dataset's records in this page's id
range that lack the result (left out); `X-Arg-Set` and `X-Units` say what was exported; `Link:
<URL>; rel="next"` gives the next page (absent on the last one)."""


def _schema(format: str, body: str):
    return extend_schema(
        summary=f"The campaign's results as {body}",
        description=(
            "Every record of the campaign's dataset holding record[output_key][arg_set], in id "
            "order. Energy and forces (= -gradient) in atomic units (Eh, Eh/bohr; units=au) or "
            "in eV and eV/Å (units=ev: 1 Eh = 27.211386245988 eV, 1 bohr = 0.529177210903 Å); "
            "coordinates in Å. " + HEADERS),
        parameters=[
            NAME,
            OpenApiParameter("arg_set", OpenApiTypes.STR,
                             description="whose values (default: the first arg set)"),
            OpenApiParameter("units", OpenApiTypes.STR, enum=list(UNITS), default="au"),
            OpenApiParameter("after", OpenApiTypes.STR,
                             description="start after this record id (the previous page's last)"),
            OpenApiParameter("limit", OpenApiTypes.INT, default=DEFAULT_LIMIT,
                             description=f"records per page (at most {MAX_LIMIT})"),
        ],
        responses={(200, CONTENT_TYPES[format]): OpenApiResponse(OpenApiTypes.STR), **ERRORS},
    )


class CampaignResultsApi(JsonErrors, AnyAccept, APIView):
    format = "jsonl"  # set by as_view(format=...)

    def get(self, request, name):
        campaign = campaign_of(request, name)
        params = ResultsQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        export = results_export(
            campaign=campaign, format=self.format, units=params.validated_data["units"],
            arg_set=params.validated_data.get("arg_set"),
            after=request.query_params.get("after") or None,
            limit=limit_param(request, default=DEFAULT_LIMIT, maximum=MAX_LIMIT))
        response = StreamingHttpResponse(
            export.chunks(), content_type=f"{CONTENT_TYPES[self.format]}; charset=utf-8")
        response["X-Records-Without-Result"] = str(export.without_result)
        response["X-Arg-Set"] = quote(export.arg_set)
        response["X-Units"] = export.units.name
        for header, value in link_header(next_url(request, export.next_after)).items():
            response[header] = value
        return response


class CampaignResultsJsonlApi(CampaignResultsApi):
    format = "jsonl"

    @_schema("jsonl", "JSON Lines (one record a line)")
    def get(self, request, name):
        return super().get(request, name)


class CampaignResultsExtxyzApi(CampaignResultsApi):
    format = "extxyz"

    @_schema("extxyz", "extended XYZ (energy, forces and units in each comment line)")
    def get(self, request, name):
        return super().get(request, name)
