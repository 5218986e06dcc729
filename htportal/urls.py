from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(url="/dashboard/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/", include("campaigns.api.urls")),
    path("dashboard/", include("campaigns.dashboard.urls")),
]
