from django.contrib.auth import views as auth_views
from django.urls import path, register_converter

from campaigns.dashboard import results_views, views

register_converter(results_views.RecordIdConverter, "record_id")

app_name = "dashboard"
urlpatterns = [
    path("", views.campaigns, name="campaigns"),
    path("login/", results_views.DashboardLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="dashboard:login"), name="logout"),
    path("accounting/", results_views.accounting_page, name="accounting"),
    path("datasets/", results_views.datasets, name="datasets"),
    path("campaigns/rows/", views.campaigns_partial, name="campaigns-partial"),
    # By name (as the API): before the pk routes, so that a campaign named "12" is not taken
    # for the campaign with id 12's action "results".
    path("campaigns/<slug:name>/results/", results_views.results, name="results"),
    path("campaigns/<slug:name>/accounting/", results_views.campaign_accounting_partial,
         name="campaign-accounting"),
    path("campaigns/<slug:name>/records/<record_id:record_id>/", results_views.record,
         name="record"),
    path("campaigns/<slug:name>/kept/<str:file_name>/<record_id:record_id>",
         results_views.kept_file, name="kept-file"),
    path("campaigns/<int:pk>/", views.campaign, name="campaign"),
    path("campaigns/<int:pk>/status/", views.campaign_status_partial, name="campaign-status"),
    path("campaigns/<int:pk>/series/", views.campaign_series_partial, name="campaign-series"),
    path("campaigns/<int:pk>/tasks/<int:task_pk>/", views.task, name="task"),
    path("campaigns/<int:pk>/<slug:action>/", views.campaign_action, name="campaign-action"),
    path("workers/", views.workers, name="workers"),
    path("workers/live/", views.workers_partial, name="workers-partial"),
]
