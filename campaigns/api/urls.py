"""The REST API (Django REST framework): thin views onto the services and selectors.

Every route needs a login (a token or the session) except /api/token/, which hands out tokens (wrong passwords throttled, campaigns/api/login.py).
See docs/api.md.
"""
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from campaigns.api import jobs, lifecycle, login, results, views

campaign = "campaigns/<slug:name>/"

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("token/", login.LoginApi.as_view(), name="api-token"),
    path("datasets/", views.DatasetListApi.as_view(), name="api-datasets"),
    path("datasets/<slug:name>/", views.DatasetDetailApi.as_view(), name="api-dataset"),
    path("datasets/<slug:name>/records/", views.DatasetRecordsApi.as_view(),
         name="api-dataset-records"),
    path("jobs/<int:id>/", jobs.JobDetailApi.as_view(), name="api-job"),
    path("campaigns/", views.CampaignListApi.as_view(), name="api-campaigns"),
    path(campaign, views.CampaignDetailApi.as_view(), name="api-campaign"),
    path(campaign + "definition/", views.CampaignDefinitionApi.as_view(),
         name="api-campaign-definition"),
    path(campaign + "launch/", lifecycle.CampaignLaunchApi.as_view(), name="api-campaign-launch"),
    path(campaign + "pause/", lifecycle.CampaignPauseApi.as_view(), name="api-campaign-pause"),
    path(campaign + "resume/", lifecycle.CampaignResumeApi.as_view(), name="api-campaign-resume"),
    path(campaign + "cancel/", lifecycle.CampaignCancelApi.as_view(), name="api-campaign-cancel"),
    path(campaign + "resubmit-failed/", lifecycle.CampaignResubmitFailedApi.as_view(),
         name="api-campaign-resubmit-failed"),
    path(campaign + "status/", lifecycle.CampaignStatusApi.as_view(), name="api-campaign-status"),
    path(campaign + "tasks/", lifecycle.CampaignTasksApi.as_view(), name="api-campaign-tasks"),
    path(campaign + "results/jsonl/", results.CampaignResultsJsonlApi.as_view(),
         name="api-campaign-results-jsonl"),
    path(campaign + "results/extxyz/", results.CampaignResultsExtxyzApi.as_view(),
         name="api-campaign-results-extxyz"),
    path(campaign + "results/qcschema/", results.CampaignResultsQcschemaApi.as_view(),
         name="api-campaign-results-qcschema"),
    path(campaign + "results/hdf5/", results.CampaignResultsHdf5Api.as_view(),
         name="api-campaign-results-hdf5"),
]
