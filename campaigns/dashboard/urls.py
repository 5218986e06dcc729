from django.urls import path

from campaigns.dashboard import views

app_name = "dashboard"
urlpatterns = [
    path("", views.campaigns, name="campaigns"),
    path("campaigns/rows/", views.campaigns_partial, name="campaigns-partial"),
    path("campaigns/<int:pk>/", views.campaign, name="campaign"),
    path("campaigns/<int:pk>/status/", views.campaign_status_partial, name="campaign-status"),
    path("campaigns/<int:pk>/series/", views.campaign_series_partial, name="campaign-series"),
    path("campaigns/<int:pk>/tasks/<int:task_pk>/", views.task, name="task"),
    path("campaigns/<int:pk>/<slug:action>/", views.campaign_action, name="campaign-action"),
    path("workers/", views.workers, name="workers"),
    path("workers/live/", views.workers_partial, name="workers-partial"),
]
