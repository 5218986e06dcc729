"""A campaign's results as a training set, a page at a time: JSON Lines, extended XYZ or QCSchema
JSON Lines streamed, or an HDF5 file (AIMNet2/TorchANI layout)."""
from __future__ import annotations

import os
import tempfile
from urllib.parse import quote

from django.http import FileResponse, StreamingHttpResponse
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
            "order. Energy and forces (= -gradient) in eV and eV/Å (units=ev, the default: "
            "1 Eh = 27.211386245988 eV, 1 bohr = 0.529177210903 Å) or in atomic units (Eh, "
            "Eh/bohr; units=au); coordinates in Å; QCSchema in its own atomic units. Charge, "
            "multiplicity and geometry are those the worker computed with. " + HEADERS),
        parameters=[
            NAME,
            OpenApiParameter("arg_set", OpenApiTypes.STR,
                             description="whose values (default: the first arg set)"),
            OpenApiParameter("units", OpenApiTypes.STR, enum=list(UNITS), default="ev"),
            OpenApiParameter("key_prefix", OpenApiTypes.STR, enum=["", "REF_"], default="",
                             description="extxyz: REF_ writes REF_energy, REF_forces"),
            OpenApiParameter("layout", OpenApiTypes.STR, enum=["aimnet2", "torchani"],
                             default="aimnet2", description="hdf5: the group layout"),
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
            key_prefix=params.validated_data.get("key_prefix", ""),
            after=request.query_params.get("after") or None,
            limit=limit_param(request, default=DEFAULT_LIMIT, maximum=MAX_LIMIT))
        if self.format == "hdf5":
            response = _hdf5_response(export, params.validated_data.get("layout", "aimnet2"))
        else:
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


class CampaignResultsQcschemaApi(CampaignResultsApi):
    format = "qcschema"

    @_schema("qcschema", "QCSchema AtomicResult JSON Lines (qcelemental's models; atomic units)")
    def get(self, request, name):
        return super().get(request, name)


class CampaignResultsHdf5Api(CampaignResultsApi):
    format = "hdf5"

    @_schema("hdf5", "an HDF5 file, one group per atom count (AIMNet2 or TorchANI names)")
    def get(self, request, name):
        return super().get(request, name)


def _hdf5_response(export, layout: str) -> FileResponse:
    """The page written to a temporary file (HDF5 is not a stream), sent, then removed: the
    file is unlinked once open, so it goes when the response closes it."""
    handle, path = tempfile.mkstemp(suffix=".h5", prefix="htportal-export-")
    os.close(handle)
    try:
        export.write_hdf5(path=path, layout=layout)
        stream = open(path, "rb")
    finally:
        os.unlink(path)
    return FileResponse(stream, content_type=CONTENT_TYPES["hdf5"], as_attachment=True,
                        filename=f"{export.campaign.name}.{export.arg_set}.h5")
